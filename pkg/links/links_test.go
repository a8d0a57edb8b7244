package links

import (
	"context"
	"net"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strconv"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/calico-prep/calico-prep/internal/netnstest"
	"github.com/calico-prep/calico-prep/pkg/host"
)

func newClient(t testing.TB, ns *netnstest.NS) *Client {
	t.Helper()
	c, err := New(Options{NetNS: ns.Path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	return c
}

// noLinkLocal stops the kernel from adding fe80:: addresses to links made afterwards, so
// that what a test compares does not change under it.
func noLinkLocal(t testing.TB, ns *netnstest.NS) {
	t.Helper()
	if err := ns.Do(func() error {
		return os.WriteFile("/proc/sys/net/ipv6/conf/default/addr_gen_mode", []byte("1"), 0o644)
	}); err != nil {
		t.Fatal(err)
	}
}

func mustPrefixes(s ...string) []netip.Prefix {
	ps := make([]netip.Prefix, len(s))
	for i, p := range s {
		ps[i] = netip.MustParsePrefix(p)
	}
	return ps
}

func TestSnapshot(t *testing.T) {
	ns, pod := netnstest.New(t), netnstest.New(t)
	noLinkLocal(t, ns)
	ns.AddVethTo(t, "eth0", pod, "eth0")
	ns.AddBridge(t, "br0")
	ns.AddVXLAN(t, "vxlan.calico", 4096, 4789, "eth0")
	ns.AddTun(t, "tunl0")
	ns.SetDown(t, "br0")
	ns.SetMTU(t, "eth0", 9000)
	ns.AddAddr(t, "eth0", "192.168.79.128/24")
	ns.AddAddr(t, "eth0", "192.168.79.129/24") // a secondary: kernel order is not insertion order
	ns.AddAddr(t, "eth0", "10.0.0.5/8")
	ns.AddAddr(t, "eth0", "fd00::5/64")
	ns.AddAddr(t, "eth0", "fd00:1::5/64")
	ns.AddAddr(t, "br0", "172.16.0.1/16")
	ns.AddRoute(t, "default", "eth0", "192.168.79.1")
	ns.AddRoute(t, "::/0", "eth0", "fd00::1")
	ns.AddBlackhole(t, "10.244.0.0/26")
	for _, r := range []netlink.Route{
		{Dst: mustNet("10.245.1.0/26"), LinkIndex: ns.Link(t, "eth0").Attrs().Index, Gw: net.ParseIP("192.168.79.2"), Protocol: unix.RTPROT_BIRD},
		{Dst: mustNet("10.246.0.0/24"), Type: unix.RTN_UNREACHABLE, Protocol: unix.RTPROT_STATIC},
		{Dst: mustNet("10.247.0.0/24"), Type: unix.RTN_PROHIBIT, Protocol: 99},
	} {
		if err := ns.Handle.RouteAdd(&r); err != nil {
			t.Fatalf("add route %v: %v", r, err)
		}
	}

	snap, err := newClient(t, ns).Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}

	t.Run("interfaces and addresses as Go's net package lists them", func(t *testing.T) {
		// calico-node enumerates with net.Interfaces and Addrs; the snapshot must agree exactly.
		var want []host.Interface
		if err := ns.Do(func() error {
			ifs, err := net.Interfaces()
			if err != nil {
				return err
			}
			for _, i := range ifs {
				addrs, err := i.Addrs()
				if err != nil {
					return err
				}
				hi := host.Interface{Index: i.Index, Name: i.Name, Up: i.Flags&net.FlagUp != 0, MTU: i.MTU}
				for _, a := range addrs {
					ipn := a.(*net.IPNet)
					p, _ := prefix(ipn)
					hi.Addrs = append(hi.Addrs, p)
				}
				want = append(want, hi)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		got := make([]host.Interface, len(snap.Interfaces))
		for i, hi := range snap.Interfaces {
			hi.Type, hi.VXLAN = "", nil
			got[i] = hi
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("snapshot interfaces\n%+v\nnet.Interfaces\n%+v", got, want)
		}
	})

	t.Run("interface fields", func(t *testing.T) {
		tests := []struct {
			name   string
			typ    string
			up     bool
			mtu    int
			vxlan  *host.VXLAN
			addrs  []netip.Prefix
			inSnap bool
		}{
			{name: "lo", typ: "device", up: true, mtu: 65536, addrs: mustPrefixes("127.0.0.1/8", "::1/128")},
			{name: "eth0", typ: "veth", up: true, mtu: 9000,
				// The kernel lists IPv4 primaries before secondaries and IPv6 newest first.
				addrs: mustPrefixes("192.168.79.128/24", "10.0.0.5/8", "192.168.79.129/24", "fd00:1::5/64", "fd00::5/64")},
			{name: "br0", typ: "bridge", up: false, mtu: 1500, addrs: mustPrefixes("172.16.0.1/16")},
			{name: "vxlan.calico", typ: "vxlan", up: true, mtu: 1450, vxlan: &host.VXLAN{VNI: 4096, Port: 4789}},
			{name: "tunl0", typ: "tun", up: true, mtu: 1500},
		}
		for _, tt := range tests {
			got, ok := snap.Interface(tt.name)
			if !ok {
				t.Errorf("%s missing from snapshot", tt.name)
				continue
			}
			if got.Type != tt.typ || got.Up != tt.up || got.MTU != tt.mtu || !reflect.DeepEqual(got.VXLAN, tt.vxlan) {
				t.Errorf("%s: type %s up %v mtu %d vxlan %+v; want %s %v %d %+v", tt.name, got.Type, got.Up, got.MTU, got.VXLAN, tt.typ, tt.up, tt.mtu, tt.vxlan)
			}
			if !slices.Equal(got.Addrs, tt.addrs) {
				t.Errorf("%s addresses %v, want %v", tt.name, got.Addrs, tt.addrs)
			}
		}
	})

	t.Run("main-table routes of both families", func(t *testing.T) {
		r := func(dst, dev, gw, typ, proto string) host.Route {
			hr := host.Route{Dst: netip.MustParsePrefix(dst), Dev: dev, Type: typ, Protocol: proto}
			if gw != "" {
				hr.Gateway = netip.MustParseAddr(gw)
			}
			return hr
		}
		// br0 is down, so the kernel installs no route for 172.16.0.0/16.
		want := []host.Route{
			r("0.0.0.0/0", "eth0", "192.168.79.1", "unicast", "boot"),
			r("10.0.0.0/8", "eth0", "", "unicast", "kernel"),
			r("10.244.0.0/26", "", "", "blackhole", "boot"),
			r("10.245.1.0/26", "eth0", "192.168.79.2", "unicast", "bird"),
			r("10.246.0.0/24", "", "", "unreachable", "static"),
			r("10.247.0.0/24", "", "", "prohibit", "99"),
			r("192.168.79.0/24", "eth0", "", "unicast", "kernel"),
			r("::/0", "eth0", "fd00::1", "unicast", "boot"),
		}
		got := slices.DeleteFunc(slices.Clone(snap.Routes), func(hr host.Route) bool {
			// The kernel's own IPv6 routes (prefix routes, multicast, lo) are not this test's business.
			return hr.Dst.Addr().Is6() && hr.Protocol == "kernel"
		})
		for _, hr := range snap.Routes {
			if hr.Type == "local" || hr.Type == "broadcast" {
				t.Errorf("route %+v is from the local table", hr)
			}
		}
		byDst := func(a, b host.Route) int { return a.Dst.Addr().Compare(b.Dst.Addr()) }
		slices.SortFunc(got, byDst)
		slices.SortFunc(want, byDst)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("routes\n%+v\nwant\n%+v", got, want)
		}
		if !slices.ContainsFunc(snap.Routes, func(hr host.Route) bool {
			return hr.Dst == netip.MustParsePrefix("fd00::/64") && hr.Dev == "eth0" && hr.Protocol == "kernel"
		}) {
			t.Errorf("IPv6 prefix route fd00::/64 dev eth0 missing: %+v", snap.Routes)
		}
	})
}

func mustNet(s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return n
}

func TestBuildSnapshot(t *testing.T) {
	link := func(idx int, name string) netlink.Link {
		return &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: idx, Name: name, MTU: 1500}}
	}
	addr := func(idx int, cidr string) netlink.Addr {
		a, err := netlink.ParseAddr(cidr)
		if err != nil {
			t.Fatal(err)
		}
		a.LinkIndex = idx
		return *a
	}
	snap := buildSnapshot(
		[]netlink.Link{link(3, "c"), link(1, "a"), link(2, "b")},
		[]netlink.Addr{addr(2, "10.0.0.2/24"), addr(9, "10.0.0.9/24"), addr(2, "10.0.1.2/24")},
		[]netlink.Route{{
			Family: netlink.FAMILY_V4, Dst: mustNet("10.9.0.0/16"), Type: unix.RTN_UNICAST,
			MultiPath: []*netlink.NexthopInfo{{LinkIndex: 3, Gw: net.ParseIP("10.0.0.1")}, {LinkIndex: 2, Gw: net.ParseIP("10.0.1.1")}},
		}, {
			Family: netlink.FAMILY_V4, Dst: mustNet("10.8.0.0/16"), LinkIndex: 9, Type: 42,
		}},
	)
	var names []string
	for _, i := range snap.Interfaces {
		names = append(names, i.Name)
	}
	if !slices.Equal(names, []string{"c", "a", "b"}) {
		t.Errorf("interface order %v, want the dump order c a b", names)
	}
	if b, _ := snap.Interface("b"); !slices.Equal(b.Addrs, mustPrefixes("10.0.0.2/24", "10.0.1.2/24")) {
		t.Errorf("b addresses %v", b.Addrs)
	}
	want := []host.Route{
		{Dst: netip.MustParsePrefix("10.9.0.0/16"), Dev: "c", Gateway: netip.MustParseAddr("10.0.0.1"), Type: "unicast", Protocol: "unspec"},
		{Dst: netip.MustParsePrefix("10.8.0.0/16"), Type: "42", Protocol: "unspec"},
	}
	if !reflect.DeepEqual(snap.Routes, want) {
		t.Errorf("routes %+v, want %+v", snap.Routes, want)
	}
}

func TestClosedClient(t *testing.T) {
	c := newClient(t, netnstest.New(t))
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Snapshot(context.Background()); err == nil {
		t.Fatal("Snapshot on a closed client read some namespace")
	}
	if _, err := c.Subscribe(context.Background()); err == nil {
		t.Fatal("Subscribe on a closed client succeeded")
	}
}

func TestNewBadNamespace(t *testing.T) {
	if _, err := New(Options{NetNS: "/run/netns/does-not-exist"}); err == nil {
		t.Fatal("New with a missing namespace succeeded")
	}
}

func BenchmarkSnapshot(b *testing.B) {
	ns := netnstest.New(b)
	ns.AddBridge(b, "br0")
	ns.AddAddr(b, "br0", "192.168.79.128/24")
	ns.AddRoute(b, "default", "br0", "192.168.79.1")
	// 24 veth pairs plus lo and br0: 50 links, with an address and a route per host end,
	// roughly a node running 24 pods.
	for i := range 24 {
		n := strconv.Itoa(i)
		ns.AddVeth(b, "cali"+n, "pod"+n)
		ns.AddAddr(b, "cali"+n, "10.0."+n+".1/32")
		ns.AddRoute(b, "10.244.0."+n+"/32", "cali"+n, "")
	}
	c := newClient(b, ns)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		snap, err := c.Snapshot(ctx)
		if err != nil || len(snap.Interfaces) != 50 {
			b.Fatalf("%d interfaces, %v", len(snap.Interfaces), err)
		}
	}
}
