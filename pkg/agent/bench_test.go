package agent

import (
	"flag"
	"io"
	"log/slog"
	"testing"

	"github.com/calico-prep/calico-prep/pkg/check"
	"github.com/calico-prep/calico-prep/pkg/config"
)

// BenchmarkCheckPass is the cost of one full read-only pass over this host (agent check):
// kernel, autodetection, pod CIDR, links, and NetworkManager/firewalld as found on the bus.
func BenchmarkCheckPass(b *testing.B) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	load := config.Flags(fs)
	if err := fs.Parse([]string{"--node-name=bench"}); err != nil {
		b.Fatal(err)
	}
	cfg, err := load(func(string) string { return "" })
	if err != nil {
		b.Fatal(err)
	}
	h, err := Open(b.Context(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	runner := check.Runner{Mode: check.VerifyOnly}
	b.ReportAllocs()
	for b.Loop() {
		h.Pass(b.Context(), runner)
	}
}
