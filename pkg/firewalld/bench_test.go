package firewalld_test

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/calico-prep/calico-prep/pkg/check"
	"github.com/calico-prep/calico-prep/pkg/firewalld"
	"github.com/calico-prep/calico-prep/test/testbed"
)

// BenchmarkReloadToVerified measures the time from firewalld's Reloaded signal arriving to a
// reconcile pass that finds (or makes) every rule present again, and the D-Bus calls of that
// pass. Run at least 50 reloads: go test -run '^$' -bench ReloadToVerified -benchtime 60x.
//
//   - verify: a plain reload; the runtime configuration comes back from the permanent one and
//     the pass only verifies.
//   - reapply: before each reload another client removes calico-prep's permanent 179/tcp, so
//     the reload takes it out of the runtime configuration as well and the pass must add it back
//     to both, then verify.
func BenchmarkReloadToVerified(b *testing.B) {
	for _, bc := range []struct {
		name    string
		reapply bool
	}{{"verify", false}, {"reapply", true}} {
		b.Run(bc.name, func(b *testing.B) {
			ctx := testContext(b)
			n := testbed.Up(b, testbed.Options{Name: "bench", Firewalld: true, Calico: true})
			c := dial(b, ctx, n)
			checks := firewalld.Checks(c, options(n, netip.MustParsePrefix("10.65.128.0/24")))
			failIfNotReady(b, run(ctx, check.Reconcile, checks))
			events, err := c.Watch(ctx)
			if err != nil {
				b.Fatal(err)
			}
			operator := dial(b, ctx, n)
			m := n.MonitorCalls(b, c.Conn())
			var took []time.Duration
			var calls []uint64
			for b.Loop() {
				b.StopTimer()
				m.Take(b, ctx) // the calls before this pass
				if bc.reapply {
					pz, err := operator.ConfigZone(ctx, defaultZone)
					if err == nil {
						err = pz.RemovePort(ctx, "179", "tcp")
					}
					if err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				reloaded := make(chan error, 1)
				go func() { reloaded <- operator.Reload(ctx) }()
				var ev firewalld.Event
				for ev.Kind != firewalld.Reloaded {
					select {
					case ev = <-events:
					case <-ctx.Done():
						b.Fatal("no Reloaded signal")
					}
				}
				rep := run(ctx, check.Reconcile, checks)
				took = append(took, time.Since(ev.Received))
				b.StopTimer()
				calls = append(calls, uint64(len(m.Take(b, ctx))))
				b.StartTimer()
				failIfNotReady(b, rep)
				if err := <-reloaded; err != nil {
					b.Fatal(err)
				}
			}
			slices.Sort(took)
			slices.Sort(calls)
			ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
			b.ReportMetric(ms(took[len(took)/2]), "median-ms")
			b.ReportMetric(ms(took[(len(took)*99+99)/100-1]), "p99-ms")
			b.ReportMetric(float64(calls[len(calls)/2]), "calls/pass")
			b.ReportMetric(float64(calls[len(calls)-1]), "max-calls/pass")
		})
	}
}

// BenchmarkRestartToVerified measures the time from a restarted firewalld taking its bus name
// (after a SIGTERM, which removes its rules) to a reconcile pass that finds every rule present,
// re-adding the runtime rules the permanent configuration does not bring back. Run with
// -benchtime 10x; each iteration restarts firewalld.
func BenchmarkRestartToVerified(b *testing.B) {
	ctx := testContext(b)
	n := testbed.Up(b, testbed.Options{Name: "bench-restart", Firewalld: true, Calico: true})
	c := dial(b, ctx, n)
	checks := firewalld.Checks(c, options(n, netip.MustParsePrefix("10.65.128.0/24")))
	failIfNotReady(b, run(ctx, check.Reconcile, checks))
	events, err := c.Watch(ctx)
	if err != nil {
		b.Fatal(err)
	}
	var took []time.Duration
	for b.Loop() {
		b.StopTimer()
		if err := n.StopFirewalld(ctx); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		started := make(chan error, 1)
		go func() { started <- n.StartFirewalld(ctx) }()
		var ev firewalld.Event
		for ev.Kind != firewalld.Started {
			select {
			case ev = <-events:
			case <-ctx.Done():
				b.Fatal("no Started event")
			}
		}
		// firewalld takes its name before it has loaded its configuration: the pass waits for
		// state RUNNING as the agent's does (a pass finding INIT is not verified).
		for {
			rep := run(ctx, check.Reconcile, checks)
			if rep.Ready {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		took = append(took, time.Since(ev.Received))
		if err := <-started; err != nil {
			b.Fatal(err)
		}
	}
	slices.Sort(took)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(took[len(took)/2]), "median-ms")
	b.ReportMetric(ms(took[len(took)-1]), "max-ms")
}
