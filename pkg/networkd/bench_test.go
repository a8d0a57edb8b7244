package networkd

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/calico-prep/calico-prep/pkg/check"
	"github.com/calico-prep/calico-prep/test/testbed"
)

func reportMs(b *testing.B, took []time.Duration) {
	slices.Sort(took)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(took[len(took)/2]), "median-ms")
	b.ReportMetric(ms(took[len(took)-1]), "max-ms")
}

// BenchmarkReloadToUnmanaged: networkd manages Calico's links (Flatcar's catch-all, calico-prep's
// file removed and networkd reloaded); the time is one reconcile pass that writes the file,
// reloads networkd and returns when every Calico link reads unmanaged.
func BenchmarkReloadToUnmanaged(b *testing.B) {
	ctx := testContext(b)
	n := testbed.Up(b, testbed.Options{Name: "nd-bench-reload", Calico: true})
	write(b, filepath.Join(n.NetworkdConfDir, "zz-default.network"), flatcarDefault)
	if err := n.StartNetworkd(ctx); err != nil {
		b.Fatal(err)
	}
	c := dial(b, ctx, n)
	opts := nodeOptions(n)
	opts.KeepForeignRoutes = false
	checks := Checks(c, opts)
	var took []time.Duration
	for b.Loop() {
		b.StopTimer()
		if err := os.Remove(filepath.Join(n.NetworkdConfDir, OwnNetwork)); err != nil && !os.IsNotExist(err) {
			b.Fatal(err)
		}
		if err := c.Reload(ctx); err != nil {
			b.Fatal(err)
		}
		waitStates(b, ctx, n, "configuring", "tunl0")
		b.StartTimer()
		start := time.Now()
		if rep := run(ctx, check.Reconcile, checks); !rep.Ready {
			b.Fatalf("not ready: %+v", rep.Entries)
		}
		took = append(took, time.Since(start))
	}
	reportMs(b, took)
}

// BenchmarkRestartToVerified: the time from a restarted networkd taking its bus name to a pass
// that finds every Calico link unmanaged (networkd re-reads calico-prep's file when it starts).
func BenchmarkRestartToVerified(b *testing.B) {
	ctx := testContext(b)
	n := testbed.Up(b, testbed.Options{Name: "nd-bench-restart", Calico: true})
	write(b, filepath.Join(n.NetworkdConfDir, "zz-default.network"), flatcarDefault)
	if err := n.StartNetworkd(ctx); err != nil {
		b.Fatal(err)
	}
	c := dial(b, ctx, n)
	opts := nodeOptions(n)
	opts.KeepForeignRoutes = false
	checks := Checks(c, opts)
	if rep := run(ctx, check.Reconcile, checks); !rep.Ready {
		b.Fatalf("not ready: %+v", rep.Entries)
	}
	events, err := c.Watch(ctx)
	if err != nil {
		b.Fatal(err)
	}
	var took []time.Duration
	for b.Loop() {
		b.StopTimer()
		if err := n.StopNetworkd(ctx); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		started := make(chan error, 1)
		go func() { started <- n.StartNetworkd(ctx) }()
		var at time.Time
		for at.IsZero() {
			select {
			case ev := <-events:
				if ev.Kind == EventStarted {
					at = time.Now()
				}
			case <-ctx.Done():
				b.Fatal("networkd did not come back")
			}
		}
		for !run(ctx, check.Reconcile, checks).Ready {
			time.Sleep(10 * time.Millisecond)
		}
		took = append(took, time.Since(at))
		if err := <-started; err != nil {
			b.Fatal(err)
		}
	}
	reportMs(b, took)
}
