package networkmanager

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/calico-prep/calico-prep/pkg/check"
	"github.com/calico-prep/calico-prep/test/testbed"
)

// The benchmarks time what the goal (≤ 200 ms) is about, with real NetworkManager:
// from NetworkManager's bus name reappearing to every Calico device verified unmanaged, and
// from a new cali link to it being verified unmanaged. Each reacts to Watch events the way
// the agent does: run the checks on every event until the report shows what is expected.
// They report mean and worst latency; ns/op is the whole iteration including the restart.
// Events that queue up during a pass are coalesced into the next pass.

// benchNode starts a node with Calico's links and extra cali veths, applies once, and returns
// the client, the checks and the names of every Calico device.
func benchNode(b *testing.B, name string, extraVeths int) (*testbed.Node, *Client, []check.Check, []string) {
	b.Helper()
	ctx := testContext(b)
	n := testbed.Up(b, testbed.Options{Name: name, NetworkManager: true, Calico: true})
	names := append([]string(nil), calicoLinks...)
	for i := range extraVeths {
		veth := fmt.Sprintf("calipod%08d", i)
		if err := n.AddCaliVeth(ctx, veth); err != nil {
			b.Fatal(err)
		}
		names = append(names, veth)
	}
	c := dial(b, ctx, n)
	checks := Checks(c, nodeOptions(n))
	rep := (&check.Runner{Mode: check.Reconcile}).Run(ctx, checks)
	if !rep.Ready {
		b.Fatalf("first pass not ready: %+v", rep)
	}
	return n, c, checks, names
}

// verifiedAfter runs the checks now and on every further event until every named device is
// reported unmanaged, and returns when that was.
func verifiedAfter(ctx context.Context, events <-chan Event, checks []check.Check, names []string) (time.Time, error) {
	runner := &check.Runner{Mode: check.Reconcile}
	timeout := time.After(10 * time.Second)
	for {
		rep := runner.Run(ctx, checks)
		if allUnmanaged(names...)(rep) == "" {
			return time.Now(), nil
		}
		select {
		case _, ok := <-events:
			if !ok {
				return time.Time{}, fmt.Errorf("events closed")
			}
			drain(events)
		case <-timeout:
			return time.Time{}, fmt.Errorf("not verified: %s", allUnmanaged(names...)(rep))
		}
	}
}

// drain drops the events already queued: one pass after a burst covers them all, as the
// agent's loop should do when NetworkManager announces a dozen devices at once.
func drain(events <-chan Event) {
	for {
		select {
		case <-events:
		default:
			return
		}
	}
}

func reportLatency(b *testing.B, unit string, lat []time.Duration) {
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	b.ReportMetric(float64(sum.Microseconds())/float64(len(lat))/1000, "ms-mean/"+unit)
	b.ReportMetric(float64(slices.Max(lat).Microseconds())/1000, "ms-max/"+unit)
}

func BenchmarkRestartToUnmanaged(b *testing.B) {
	ctx := testContext(b)
	n, c, checks, names := benchNode(b, "nm-bench-restart", 10)
	events, err := c.Watch(ctx)
	if err != nil {
		b.Fatal(err)
	}
	var lat []time.Duration
	for b.Loop() {
		if err := n.StopNetworkManager(ctx); err != nil {
			b.Fatal(err)
		}
		started := make(chan error, 1)
		go func() { started <- n.StartNetworkManager(ctx) }()
		var appeared time.Time
		for appeared.IsZero() {
			select {
			case ev := <-events:
				if ev.Kind == EventStarted {
					appeared = time.Now()
				}
			case <-time.After(20 * time.Second):
				b.Fatal("NetworkManager did not come back")
			}
		}
		done, err := verifiedAfter(ctx, events, checks, names)
		if err != nil {
			b.Fatal(err)
		}
		lat = append(lat, done.Sub(appeared))
		if err := <-started; err != nil {
			b.Fatal(err)
		}
	}
	reportLatency(b, "restart", lat)
}

func BenchmarkNewVethToUnmanaged(b *testing.B) {
	ctx := testContext(b)
	n, c, checks, names := benchNode(b, "nm-bench-veth", 0)
	events, err := c.Watch(ctx)
	if err != nil {
		b.Fatal(err)
	}
	var lat []time.Duration
	i := 0
	for b.Loop() {
		veth := fmt.Sprintf("calibench%06d", i)
		peer := fmt.Sprintf("pbench%06d", i)
		i++
		var created time.Time
		err := n.Do(func() error {
			created = time.Now()
			return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: veth, Flags: 1}, PeerName: peer})
		})
		if err != nil {
			b.Fatal(err)
		}
		done, err := verifiedAfter(ctx, events, checks, append(names, veth))
		if err != nil {
			b.Fatal(err)
		}
		lat = append(lat, done.Sub(created))
		if err := n.Do(func() error { return netlink.LinkDel(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: veth}}) }); err != nil {
			b.Fatal(err)
		}
	}
	reportLatency(b, "link", lat)
}

// BenchmarkSettledPass is the cost of one pass over both checks on a settled node with 13
// Calico devices: what every event costs the agent when nothing needs changing.
func BenchmarkSettledPass(b *testing.B) {
	ctx := testContext(b)
	_, _, checks, names := benchNode(b, "nm-bench-pass", 10)
	runner := &check.Runner{Mode: check.Reconcile}
	for b.Loop() {
		if msg := allUnmanaged(names...)(runner.Run(ctx, checks)); msg != "" {
			b.Fatal(msg)
		}
	}
}
