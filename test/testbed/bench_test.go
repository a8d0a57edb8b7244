package testbed

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkUp measures Start and Down of a node. first-up-ms is the first Start of the
// sub-benchmark; run one sub-benchmark alone in a fresh process for a cold figure, e.g.
// go test -run '^$' -bench 'Up/both' -benchtime 5x. Per-phase means, the daemons' RSS after
// start and Down's duration are reported too.
func BenchmarkUp(b *testing.B) {
	for _, bc := range []struct {
		name string
		opts Options
	}{
		{"bare", Options{Name: "bench", Calico: true}},
		{"firewalld", Options{Name: "bench", Calico: true, Firewalld: true}},
		{"networkmanager", Options{Name: "bench", Calico: true, NetworkManager: true}},
		{"both", Options{Name: "bench", Calico: true, Firewalld: true, NetworkManager: true}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ctx := context.Background()
			var first, up, down time.Duration
			phases := map[string]time.Duration{}
			rss := map[string]float64{}
			runs := 0
			for b.Loop() {
				began := time.Now()
				n, err := Start(ctx, bc.opts)
				if err != nil {
					b.Fatal(err)
				}
				took := time.Since(began)
				if runs == 0 {
					first = took
				}
				up += took
				for _, p := range n.phases {
					phases[p.name] += p.took
				}
				for _, d := range []string{"dbus", "firewalld", "NetworkManager"} {
					if pid := n.PID(d); pid != 0 {
						rss[d] += rssMiB(b, pid)
					}
				}
				began = time.Now()
				if err := n.Down(ctx); err != nil {
					b.Fatal(err)
				}
				down += time.Since(began)
				runs++
			}
			ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(runs) }
			b.ReportMetric(float64(first.Microseconds())/1000, "first-up-ms")
			b.ReportMetric(ms(up), "up-ms")
			b.ReportMetric(ms(down), "down-ms")
			for name, d := range phases {
				b.ReportMetric(ms(d), name+"-ms")
			}
			for name, v := range rss {
				b.ReportMetric(v/float64(runs), "rss-"+name+"-MiB")
			}
		})
	}
}

func rssMiB(b *testing.B, pid int) float64 {
	b.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(status), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "VmRSS:" {
			kb, err := strconv.Atoi(f[1])
			if err != nil {
				b.Fatal(err)
			}
			return float64(kb) / 1024
		}
	}
	b.Fatalf("no VmRSS for pid %d", pid)
	return 0
}
