package links

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/calico-prep/calico-prep/internal/netnstest"
)

// waitLimit bounds how long a test waits for the kernel; it guards against hangs, not speed.
const waitLimit = 10 * time.Second

// next returns the next event; ok is false once the channel is closed.
func next(t *testing.T, events <-chan Event) (ev Event, ok bool) {
	t.Helper()
	select {
	case ev, ok = <-events:
		return ev, ok
	case <-time.After(waitLimit):
		t.Fatalf("no event and no close within %s", waitLimit)
		return Event{}, false
	}
}

func TestSubscribe(t *testing.T) {
	ns := netnstest.New(t)
	// Exists before subscribing: no event may name it. Down, so that the kernel does not give it
	// an IPv6 link-local address later, which would be a real change after subscribing.
	ns.AddBridge(t, "before0")
	ns.SetDown(t, "before0")
	c := newClient(t, ns)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, err := c.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}

	ns.AddBridge(t, "br1")
	ns.AddAddr(t, "br1", "10.1.0.1/24")
	ns.AddAddr(t, "br1", "fd01::1/64")
	ns.AddRoute(t, "10.2.0.0/16", "br1", "")
	ns.AddBlackhole(t, "10.244.0.0/26")

	want := map[Event]bool{
		{Kind: EventLink, Name: "br1"}:  false,
		{Kind: EventAddr, Name: "br1"}:  false,
		{Kind: EventRoute, Name: "br1"}: false,
		{Kind: EventRoute, Name: ""}:    false, // the blackhole route has no device
	}
	for missing := len(want); missing > 0; {
		ev, ok := next(t, events)
		if !ok || ev.Err != nil {
			t.Fatalf("subscription ended early: %v", ev.Err)
		}
		if ev.Name == "before0" {
			t.Fatalf("event %+v for a link that existed before subscribing", ev)
		}
		if seen, expected := want[ev]; expected && !seen {
			want[ev] = true
			missing--
		}
	}

	cancel()
	for {
		ev, ok := next(t, events)
		if !ok {
			break
		}
		if ev.Err != nil {
			t.Fatalf("cancelling reported an error: %v", ev.Err)
		}
	}
}

func TestSubscribeOverflowEndsWithError(t *testing.T) {
	ns := netnstest.New(t)
	c := newClient(t, ns)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, err := c.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Nobody reads while thousands of changes happen, as when the agent is stalled during a
	// burst: the socket overflows, events are lost, and the subscriber must be told.
	lo := ns.Link(t, "lo")
	for i := range 8000 {
		a := &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 9, byte(i>>8), byte(i)), Mask: net.CIDRMask(32, 32)}}
		if err := ns.Handle.AddrAdd(lo, a); err != nil {
			t.Fatal(err)
		}
	}
	var gotErr error
	for {
		ev, ok := next(t, events)
		if !ok {
			break
		}
		if gotErr != nil {
			t.Fatalf("event %+v after the error %v", ev, gotErr)
		}
		gotErr = ev.Err
	}
	if gotErr == nil {
		t.Fatal("the subscription closed without reporting the overflow")
	}
	t.Logf("reported: %v", gotErr)
}
