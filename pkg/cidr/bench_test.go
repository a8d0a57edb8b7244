package cidr

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/calico-prep/calico-prep/pkg/host"
)

// busyNode is a 64-interface node with Calico running: NICs, container bridges, Calico's
// tunnels, kube-ipvs0, workload veths with their /32 routes, block routes, and a few
// foreign routes.
func busyNode() host.Snapshot {
	s := host.Snapshot{Interfaces: []host.Interface{
		nic(1, "lo", "127.0.0.1/8", "::1/128"),
		nic(2, "eno1", "192.168.10.21/24", "fe80::1/64"),
		nic(3, "eno2", "fe80::2/64"),
		nic(4, "bond0", "10.20.0.21/16", "2001:db8:20::21/64", "fe80::3/64"),
		nic(5, "bond0.100", "10.100.0.21/24", "fe80::4/64"),
		nic(6, "docker0", "172.17.0.1/16"),
		nic(7, "br-0f1e2d3c4b5a", "172.18.0.1/16"),
		nic(8, "virbr0", "192.168.122.1/24"),
		nic(9, "tunl0", "10.244.12.0/32"),
		nic(10, "vxlan.calico", "10.244.12.1/32", "fe80::5/64"),
		nic(11, "kube-ipvs0", "10.96.0.1/32", "10.96.0.10/32", "10.96.12.34/32", "10.96.200.1/32"),
		nic(12, "nodelocaldns", "169.254.20.10/32"),
	}}
	s.Routes = []host.Route{
		route("0.0.0.0/0", "eno1", "unicast", "boot"),
		route("10.20.0.0/16", "bond0", "unicast", "kernel"),
		route("10.100.0.0/24", "bond0.100", "unicast", "kernel"),
		route("172.17.0.0/16", "docker0", "unicast", "kernel"),
		route("172.18.0.0/16", "br-0f1e2d3c4b5a", "unicast", "kernel"),
		route("192.168.10.0/24", "eno1", "unicast", "kernel"),
		route("192.168.122.0/24", "virbr0", "unicast", "kernel"),
		route("10.244.12.0/26", "", "blackhole", "bird"),
	}
	for i := len(s.Interfaces) + 1; i <= 64; i++ {
		name := fmt.Sprintf("cali%011x", i)
		s.Interfaces = append(s.Interfaces, nic(i, name, "fe80::ecee:eeff:feee:eeee/64"))
		s.Routes = append(s.Routes, route(fmt.Sprintf("10.244.12.%d/32", i), name, "unicast", "boot"))
	}
	for i := range 50 { // blocks of the other nodes
		s.Routes = append(s.Routes, route(fmt.Sprintf("10.244.%d.%d/26", 13+i/4, 64*(i%4)), "tunl0", "unicast", "bird"))
	}
	return s
}

func BenchmarkCollisions(b *testing.B) {
	snap := busyNode()
	in := Input{
		Pools:          []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:244::/48")},
		ServiceCIDRs:   []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")},
		KubeadmSubnets: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:244::/48")},
	}
	if n := len(snap.Interfaces); n != 64 {
		b.Fatalf("%d interfaces", n)
	}
	if cs := Collisions(in, snap); len(cs) != 0 {
		b.Fatalf("busy node collides: %v", cs)
	}
	b.ReportAllocs()
	for b.Loop() {
		Collisions(in, snap)
	}
}
