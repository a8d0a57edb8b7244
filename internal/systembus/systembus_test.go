package systembus

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"
)

func TestDialWithoutBus(t *testing.T) {
	_, err := Dial(t.Context(), "unix:path="+filepath.Join(t.TempDir(), "no_socket"))
	if !errors.Is(err, ErrNoBus) {
		t.Fatalf("error %v, want ErrNoBus", err)
	}
}

// A listener that never answers the handshake must not hang Dial past its context.
func TestDialHonoursContext(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "silent")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if _, err := Dial(ctx, "unix:path="+sock); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v, want the context's deadline", err)
	}
}
