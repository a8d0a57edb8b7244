package autodetect

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/calico-prep/calico-prep/pkg/host"
)

// busyNode is a 64-interface node as it looks with Calico running: a few NICs, container
// bridges, Calico's tunnels, kube-ipvs0 with service addresses and many workload veths.
func busyNode() []host.Interface {
	ifs := []host.Interface{
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
	}
	for i := len(ifs) + 1; i <= 64; i++ {
		ifs = append(ifs, nic(i, fmt.Sprintf("cali%011x", i), "fe80::ecee:eeff:feee:eeee/64"))
	}
	return ifs
}

func BenchmarkDetect(b *testing.B) {
	ifs := busyNode()
	env := Env{
		CanReach:        func(context.Context, string, int) (netip.Addr, error) { return netip.MustParseAddr("10.20.0.21"), nil },
		NodeInternalIPs: []netip.Addr{netip.MustParseAddr("10.20.0.21")},
	}
	for _, method := range []string{"first-found", "interface=eno.*,bond.*", "skip-interface=bond0.100", "cidr=10.20.0.0/16", "can-reach=10.20.0.1", "kubernetes-internal-ip"} {
		m, err := ParseMethod(method)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(method, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Detect(context.Background(), m, 4, ifs, env); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
