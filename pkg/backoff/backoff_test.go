package backoff

import (
	"testing"
	"time"
)

func TestBackoffDoublesUpToMaxWithJitterAndResets(t *testing.T) {
	b := Backoff{Min: time.Second, Max: 5 * time.Second}
	base := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}
	for i, want := range base {
		got := b.Next()
		if got < want*3/4 || got > want*5/4 {
			t.Fatalf("delay %d = %v, want %v ±25%%", i, got, want)
		}
	}
	b.Reset()
	if d := b.Next(); d < 750*time.Millisecond || d > 1250*time.Millisecond {
		t.Fatalf("after Reset: %v, want 1s ±25%%", d)
	}
}

func TestBackoffSpreads(t *testing.T) {
	seen := map[time.Duration]bool{}
	for range 20 {
		b := Backoff{Min: time.Second, Max: time.Minute}
		seen[b.Next()] = true
	}
	if len(seen) < 2 {
		t.Fatal("twenty agents would retry at the same instant")
	}
}
