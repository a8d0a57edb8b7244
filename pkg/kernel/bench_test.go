package kernel

import (
	"context"
	"testing"
)

var benchReq = Requirements{Encapsulation: "vxlan", WireGuard: true, IPv6: true}

// BenchmarkChecksPass builds the checks and runs each once on the real root, as a pass that
// starts from an empty cache does: /proc/config.gz is decompressed and parsed once.
func BenchmarkChecksPass(b *testing.B) {
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		for _, c := range Checks(FS{Root: "/"}, benchReq) {
			c.Verify(ctx)
		}
	}
}

// BenchmarkChecksPassReused runs checks built once, as the agent's resync does: the config is
// only stat'ed.
func BenchmarkChecksPassReused(b *testing.B) {
	ctx := context.Background()
	checks := Checks(FS{Root: "/"}, benchReq)
	for _, c := range checks {
		c.Verify(ctx)
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, c := range checks {
			c.Verify(ctx)
		}
	}
}
