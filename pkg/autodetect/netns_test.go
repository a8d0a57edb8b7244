package autodetect

import (
	"context"
	"net"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/calico-prep/calico-prep/internal/netnstest"
	"github.com/calico-prep/calico-prep/pkg/host"
	"github.com/calico-prep/calico-prep/pkg/links"
)

// These tests build real links in throwaway namespaces and read them back through pkg/links,
// as the agent does, so the ifindex and address order Detect sees is the kernel's.

// snapshotter reads ns through pkg/links until the test ends.
func snapshotter(t *testing.T, ns *netnstest.NS) func(context.Context) (host.Snapshot, error) {
	t.Helper()
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

func snapshotOf(t *testing.T, ns *netnstest.NS) host.Snapshot {
	t.Helper()
	s, err := snapshotter(t, ns)(context.Background())
	if err != nil {
		t.Fatalf("snapshot of %s: %v", ns.Name, err)
	}
	return s
}

// seedHost builds the guide's host: lo, ens33 192.168.79.128/24, virbr0 (bridge)
// 192.168.122.1/24, virbr0-nic (a TAP in real life, a TUN here), docker0 (bridge) 172.17.0.1/16,
// in that ifindex order. ens33 is a veth whose peer lives in a second namespace.
func seedHost(t *testing.T) *netnstest.NS {
	ns, outside := netnstest.New(t), netnstest.New(t)
	ns.AddVethTo(t, "ens33", outside, "uplink")
	ns.AddAddr(t, "ens33", "192.168.79.128/24")
	ns.AddAddr(t, "ens33", "fd00:79::128/64")
	ns.AddBridge(t, "virbr0")
	ns.AddAddr(t, "virbr0", "192.168.122.1/24")
	ns.AddTun(t, "virbr0-nic")
	ns.SetDown(t, "virbr0-nic")
	ns.AddBridge(t, "docker0")
	ns.AddAddr(t, "docker0", "172.17.0.1/16")
	ns.AddAddr(t, "docker0", "fd00:17::1/64")
	return ns
}

func TestNetnsSeedHost(t *testing.T) {
	ns := seedHost(t)
	snap := snapshotOf(t, ns)
	var names []string
	for _, i := range snap.Interfaces {
		names = append(names, i.Name)
	}
	if got := strings.Join(names, " "); got != "lo ens33 virbr0 virbr0-nic docker0" {
		t.Fatalf("interfaces in snapshot order: %s", got)
	}
	tests := []struct {
		method, want string
		family       int
		warnings     int
	}{
		{"first-found", "ens33 192.168.79.128/24", 4, 0},
		{"first-found", "ens33 fd00:79::128/64", 6, 0},
		{"skip-interface=virbr.*", "ens33 192.168.79.128/24", 4, 1}, // the regex only repeats a default
		{"interface=ens.*", "ens33 192.168.79.128/24", 4, 0},
		{"cidr=192.168.0.0/16", "virbr0 192.168.122.1/24", 4, 2},
		{"cidr=192.168.79.0/24", "ens33 192.168.79.128/24", 4, 0},
	}
	for _, tt := range tests {
		t.Run(tt.method+"/ipv"+string(rune('0'+tt.family)), func(t *testing.T) {
			res, err := Detect(context.Background(), mustMethod(t, tt.method), tt.family, snap.Interfaces, Env{})
			if err != nil {
				t.Fatal(err)
			}
			if got := res.Interface + " " + res.CIDR.String(); got != tt.want || len(res.Warnings) != tt.warnings {
				t.Errorf("got %s with warnings %q, want %s with %d", got, res.Warnings, tt.want, tt.warnings)
			}
		})
	}
	t.Run("check", func(t *testing.T) {
		c := NewCheck(Method{Kind: FirstFound}, 4, snapshotter(t, ns), nil)
		if r := c.Verify(context.Background()); r.Message != "first-found picks ens33 192.168.79.128/24" || r.Facts["interface"] != "ens33" {
			t.Errorf("got %+v", r)
		}
	})
}

// TestNetnsMultiNIC: a node whose management NIC eth0 came first and whose storage NIC eth1
// was added later. first-found takes eth1 by ifindex; interface= and cidr= put it right.
func TestNetnsMultiNIC(t *testing.T) {
	ns, mgmt, storage := netnstest.New(t), netnstest.New(t), netnstest.New(t)
	ns.AddVethTo(t, "eth0", mgmt, "sw0")
	ns.AddAddr(t, "eth0", "192.168.1.10/24")
	ns.AddVethTo(t, "eth1", storage, "sw1")
	ns.AddAddr(t, "eth1", "10.0.0.5/24")
	snap := snapshotOf(t, ns)

	tests := []struct{ method, want, warning string }{
		{"first-found", "eth1 10.0.0.5/24", "first-found sees 2 interfaces with a usable IPv4 address and picks eth1 10.0.0.5/24"},
		{"interface=eth0", "eth0 192.168.1.10/24", ""},
		{"interface=^eth0$", "eth0 192.168.1.10/24", ""},
		{"skip-interface=eth1", "eth0 192.168.1.10/24", ""},
		{"cidr=192.168.1.0/24", "eth0 192.168.1.10/24", ""},
	}
	for _, tt := range tests {
		t.Run(tt.method, func(t *testing.T) {
			res, err := Detect(context.Background(), mustMethod(t, tt.method), 4, snap.Interfaces, Env{})
			if err != nil {
				t.Fatal(err)
			}
			got := res.Interface + " " + res.CIDR.String()
			if got != tt.want {
				t.Errorf("picked %s, want %s", got, tt.want)
			}
			if w := strings.Join(res.Warnings, "|"); tt.warning == "" && w != "" || !strings.Contains(w, tt.warning) {
				t.Errorf("warnings %q, want %q", res.Warnings, tt.warning)
			}
		})
	}
}

// TestNetnsCanReach dials real UDP sockets inside the node's namespace (as calico-node does
// from the host network) toward addresses of the peer namespaces this test made.
func TestNetnsCanReach(t *testing.T) {
	node, mgmt, storage := netnstest.New(t), netnstest.New(t), netnstest.New(t)
	node.AddVethTo(t, "eth0", mgmt, "sw0")
	node.AddAddr(t, "eth0", "192.168.1.10/24")
	node.AddAddr(t, "eth0", "fd00:1::10/64")
	mgmt.AddAddr(t, "sw0", "192.168.1.1/24")
	mgmt.AddAddr(t, "sw0", "fd00:1::1/64")
	node.AddVethTo(t, "eth1", storage, "sw1")
	node.AddAddr(t, "eth1", "10.0.0.5/24")
	node.AddAddr(t, "eth1", "fd00:2::5/64")
	storage.AddAddr(t, "sw1", "10.0.0.1/24")
	storage.AddAddr(t, "sw1", "fd00:2::1/64")
	storage.AddAddr(t, "lo", "198.51.100.1/32")
	storage.AddAddr(t, "lo", "2001:db8:ff::1/128")
	// The default routes point at the storage side, so a destination off both subnets is
	// reached through eth1.
	node.AddRoute(t, "default", "eth1", "10.0.0.1")
	if err := node.Handle.RouteAdd(&netlink.Route{
		Dst: &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}, Gw: net.ParseIP("fd00:2::1"),
		LinkIndex: node.Link(t, "eth1").Attrs().Index,
	}); err != nil {
		t.Fatal(err)
	}
	snap := snapshotOf(t, node)

	tests := []struct {
		dest    string
		family  int
		want    string
		warning string
	}{
		{"192.168.1.1", 4, "eth0 192.168.1.10/24", ""},
		{"10.0.0.1", 4, "eth1 10.0.0.5/24", ""},
		{"198.51.100.1", 4, "eth1 10.0.0.5/24", ""},
		{"192.168.1.10", 4, "eth0 192.168.1.10/24", "can-reach destination 192.168.1.10 is this node's own address on eth0"},
		{"127.0.0.1", 4, "lo 127.0.0.1/8", "can-reach destination 127.0.0.1 is a loopback address"},
		{"fd00:1::1", 6, "eth0 fd00:1::10/64", ""},
		{"fd00:2::1", 6, "eth1 fd00:2::5/64", ""},
		{"2001:db8:ff::1", 6, "eth1 fd00:2::5/64", ""},
		{"::1", 6, "lo ::1/128", "can-reach destination ::1 is a loopback address"},
	}
	for _, tt := range tests {
		t.Run(tt.dest, func(t *testing.T) {
			var res Result
			err := node.Do(func() error {
				var err error
				res, err = Detect(context.Background(), mustMethod(t, "can-reach="+tt.dest), tt.family, snap.Interfaces, Env{})
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if got := res.Interface + " " + res.CIDR.String(); got != tt.want {
				t.Errorf("picked %s, want %s", got, tt.want)
			}
			if w := strings.Join(res.Warnings, "|"); tt.warning == "" && w != "" || !strings.Contains(w, tt.warning) {
				t.Errorf("warnings %q, want %q", res.Warnings, tt.warning)
			}
		})
	}
	t.Run("wrong family", func(t *testing.T) {
		err := node.Do(func() error {
			_, err := Detect(context.Background(), mustMethod(t, "can-reach=192.168.1.1"), 6, snap.Interfaces, Env{})
			return err
		})
		if err == nil || !strings.Contains(err.Error(), `find the source address toward "192.168.1.1"`) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("no route", func(t *testing.T) {
		err := mgmt.Do(func() error {
			_, err := Detect(context.Background(), mustMethod(t, "can-reach=10.0.0.1"), 4, snapshotOf(t, mgmt).Interfaces, Env{})
			return err
		})
		if err == nil || !strings.Contains(err.Error(), "network is unreachable") {
			t.Fatalf("err = %v", err)
		}
	})
}

// TestNetnsOrderMatchesGoNet compares the snapshot with what calico-node reads: Go's
// net.Interfaces and Interface.Addrs inside the namespace. One link gets ifindex 300, above
// the 256 hash buckets older kernels dumped links by, and is made before a lower one.
func TestNetnsOrderMatchesGoNet(t *testing.T) {
	ns, peer := netnstest.New(t), netnstest.New(t)
	peerFd, err := os.Open(peer.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer peerFd.Close()
	if err := ns.Handle.LinkAdd(&netlink.Veth{
		LinkAttrs: netlink.LinkAttrs{Name: "eth300", Index: 300}, PeerName: "p300", PeerNamespace: netlink.NsFd(peerFd.Fd()),
	}); err != nil {
		t.Fatal(err)
	}
	ns.SetUp(t, "eth300")
	ns.AddVethTo(t, "eth1", peer, "p1")
	ns.AddBridge(t, "br0")
	for _, a := range []string{"10.1.0.1/24", "10.1.0.2/24", "10.2.0.1/16", "fd00:1::1/64", "fd00:1::2/64", "2001:db8::1/64"} {
		ns.AddAddr(t, "eth1", a)
	}
	ns.AddAddr(t, "eth300", "10.3.0.1/24")
	ns.AddAddr(t, "br0", "10.4.0.1/24")
	ns.AddAddr(t, "lo", "10.255.0.1/32")
	snap := snapshotOf(t, ns)

	var goNet []host.Interface
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
			h := host.Interface{Index: i.Index, Name: i.Name}
			for _, a := range addrs {
				n := a.(*net.IPNet)
				ip, _ := netip.AddrFromSlice(n.IP)
				ones, _ := n.Mask.Size()
				h.Addrs = append(h.Addrs, netip.PrefixFrom(ip.Unmap(), ones))
			}
			goNet = append(goNet, h)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var fromSnap []host.Interface
	for _, i := range snap.Interfaces {
		fromSnap = append(fromSnap, host.Interface{Index: i.Index, Name: i.Name, Addrs: i.Addrs})
	}
	if !reflect.DeepEqual(fromSnap, goNet) {
		t.Fatalf("snapshot order differs from Go's net package:\nsnapshot %v\nnet      %v", fromSnap, goNet)
	}
	if n := len(goNet); n != 4 || goNet[n-1].Name != "eth300" {
		t.Fatalf("expected eth300 last of 4, got %v", goNet)
	}
	// The highest ifindex wins, although eth300 was created first.
	res, err := Detect(context.Background(), Method{Kind: FirstFound}, 4, snap.Interfaces, Env{})
	if err != nil || res.Interface != "eth300" {
		t.Fatalf("first-found picked %+v, %v; want eth300", res, err)
	}
}
