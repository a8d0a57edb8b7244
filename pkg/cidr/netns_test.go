package cidr

import (
	"context"
	"net"
	"reflect"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/calico-prep/calico-prep/internal/netnstest"
	"github.com/calico-prep/calico-prep/pkg/check"
	"github.com/calico-prep/calico-prep/pkg/host"
	"github.com/calico-prep/calico-prep/pkg/links"
)

func snapshotFunc(t *testing.T, ns *netnstest.NS) func(context.Context) (host.Snapshot, error) {
	c, err := links.New(links.Options{NetNS: ns.Path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	return c.Snapshot
}

// seedHost builds the guide's host with real links: ens33 (a veth to a second namespace)
// 192.168.79.128/24 with its default gateway, virbr0 (bridge) 192.168.122.1/24, virbr0-nic,
// docker0 (bridge) 172.17.0.1/16. The kernel adds the on-link routes of each address.
func seedHost(t *testing.T) *netnstest.NS {
	ns, outside := netnstest.New(t), netnstest.New(t)
	ns.AddVethTo(t, "ens33", outside, "uplink")
	ns.AddAddr(t, "ens33", "192.168.79.128/24")
	ns.AddAddr(t, "ens33", "fd00:79::128/64")
	ns.AddRoute(t, "default", "ens33", "192.168.79.2")
	ns.AddBridge(t, "virbr0")
	ns.AddAddr(t, "virbr0", "192.168.122.1/24")
	ns.AddTun(t, "virbr0-nic")
	ns.AddBridge(t, "docker0")
	ns.AddAddr(t, "docker0", "172.17.0.1/16")
	return ns
}

func TestNetnsSeedHost(t *testing.T) {
	snapshot := snapshotFunc(t, seedHost(t))
	snap, err := snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := strs(Collisions(Input{Pools: pfx("192.168.0.0/16", "172.16.0.0/16", "fd00:79::/48", "fd00:1234::/48")}, snap))
	want := []string{
		"pod CIDR 192.168.0.0/16 overlaps ens33 address 192.168.79.128/24",
		"pod CIDR fd00:79::/48 overlaps ens33 address fd00:79::128/64",
		"pod CIDR 192.168.0.0/16 overlaps virbr0 address 192.168.122.1/24",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
	checks := Checks(Input{Pools: pfx("192.168.0.0/16", "fd00:1234::/48")}, snapshot)
	v4, v6 := checks[0].Verify(context.Background()), checks[1].Verify(context.Background())
	if v4.Status != check.Fail || v4.Reason != "PodCIDROverlap" || v4.Message != "pod CIDR 192.168.0.0/16 overlaps ens33 address 192.168.79.128/24 (and 1 more)" {
		t.Errorf("ipv4: %+v", v4)
	}
	if v6.Status != check.Pass {
		t.Errorf("ipv6: %+v", v6)
	}
	if r := Checks(Input{Pools: pfx("172.16.0.0/16")}, snapshot)[0].Verify(context.Background()); r.Status != check.Pass {
		t.Errorf("172.16.0.0/16: %+v", r)
	}
}

// TestNetnsAfterCalico gives the seed host what Calico adds once it runs with pool
// 10.244.0.0/16 — tunl0 (a TUN stands in for the ipip device), vxlan.calico, a workload veth,
// BIRD's and Felix's block routes — and expects the check to stay green, while a foreign
// route into the pool still fails it.
func TestNetnsAfterCalico(t *testing.T) {
	ns := seedHost(t)
	pool := Input{Pools: pfx("10.244.0.0/16")}
	ens33 := ns.Link(t, "ens33").Attrs().Index

	ns.AddTun(t, "tunl0")
	ns.AddAddr(t, "tunl0", "10.244.12.0/32")
	ns.AddVXLAN(t, "vxlan.calico", 4096, 4789, "ens33")
	ns.AddAddr(t, "vxlan.calico", "10.244.12.1/32")
	pod := netnstest.New(t)
	ns.AddVethTo(t, "cali1a2b3c4d5e6", pod, "eth0")
	ns.AddRoute(t, "10.244.12.5/32", "cali1a2b3c4d5e6", "")
	add := func(r netlink.Route) {
		t.Helper()
		if err := ns.Handle.RouteAdd(&r); err != nil {
			t.Fatalf("add route %+v: %v", r, err)
		}
	}
	cidr := func(s string) *net.IPNet { _, n, _ := net.ParseCIDR(s); return n }
	const bird, felix = netlink.RouteProtocol(12), netlink.RouteProtocol(80)
	add(netlink.Route{Dst: cidr("10.244.12.0/26"), Type: unix.RTN_BLACKHOLE, Protocol: bird})
	add(netlink.Route{Dst: cidr("10.244.13.0/26"), Type: unix.RTN_BLACKHOLE, Protocol: felix})
	add(netlink.Route{Dst: cidr("10.244.7.0/26"), Gw: net.ParseIP("192.168.79.129"), LinkIndex: ens33, Protocol: bird})
	add(netlink.Route{Dst: cidr("10.244.8.0/26"), Gw: net.ParseIP("192.168.79.130"), LinkIndex: ens33, Protocol: felix})
	add(netlink.Route{Dst: cidr("10.244.9.0/26"), Gw: net.ParseIP("192.168.79.131"), LinkIndex: ns.Link(t, "tunl0").Attrs().Index, Protocol: bird, Flags: int(netlink.FLAG_ONLINK)})
	add(netlink.Route{Dst: cidr("10.244.10.0/26"), Gw: net.ParseIP("10.244.10.0"), LinkIndex: ns.Link(t, "vxlan.calico").Attrs().Index, Protocol: felix, Flags: int(netlink.FLAG_ONLINK)})

	snapshot := snapshotFunc(t, ns)
	c := Checks(pool, snapshot)[0]
	if r := c.Verify(context.Background()); r.Status != check.Pass {
		s, _ := snapshot(context.Background())
		t.Fatalf("with Calico's own links and routes: %+v\nroutes: %+v", r, s.Routes)
	}

	ns.AddRoute(t, "10.244.100.0/24", "ens33", "192.168.79.1")
	add(netlink.Route{Dst: cidr("10.240.0.0/12"), Gw: net.ParseIP("192.168.79.1"), LinkIndex: ens33, Protocol: bird})
	r := c.Verify(context.Background())
	if r.Status != check.Fail || r.Message != "pod CIDR 10.244.0.0/16 overlaps route 10.240.0.0/12 via ens33 (and 1 more)" {
		t.Fatalf("with foreign routes: %+v", r)
	}
	snap, _ := snapshot(context.Background())
	got := strs(Collisions(pool, snap))
	want := []string{
		"pod CIDR 10.244.0.0/16 overlaps route 10.240.0.0/12 via ens33",
		"pod CIDR 10.244.0.0/16 overlaps route 10.244.100.0/24 via ens33",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
}
