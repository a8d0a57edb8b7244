package plan

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/calico-prep/calico-prep/pkg/calico"

	"github.com/calico-prep/calico-prep/pkg/autodetect"
)

func TestTyphaAdvice(t *testing.T) {
	tests := []struct {
		nodes       int
		recommended bool
		replicas    int
	}{
		{0, false, 0}, {1, false, 0}, {50, false, 0}, {51, true, 3}, {200, true, 3}, {600, true, 3},
		{601, true, 4}, {1000, true, 5}, {1001, true, 6}, {4000, true, 20}, {5000, true, 20},
	}
	for _, tt := range tests {
		got := typhaAdvice(tt.nodes)
		if got.Recommended != tt.recommended || got.Replicas != tt.replicas || got.Nodes != tt.nodes {
			t.Errorf("typhaAdvice(%d) = %+v, want recommended %v, %d replicas", tt.nodes, got, tt.recommended, tt.replicas)
		}
	}
}

func TestFirewallFor(t *testing.T) {
	tests := []struct {
		name  string
		opts  Options
		typha bool
		want  []string
	}{
		{"ipip with BGP", Options{Encapsulation: calico.EncapIPIP, BGP: true}, false, []string{"port 179/tcp", "protocol ipencap"}},
		{"vxlan without BGP, Typha", Options{Encapsulation: calico.EncapVXLAN}, true, []string{"port 4789/udp", "port 5473/tcp"}},
		{"BGP only", Options{Encapsulation: calico.EncapNone, BGP: true}, false, []string{"port 179/tcp"}},
		{"WireGuard dual stack", Options{Encapsulation: calico.EncapVXLAN, WireGuard: true, IPv6: true}, false, []string{"port 4789/udp", "port 51820/udp", "port 51821/udp"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, o := range firewallFor(tt.opts, tt.typha) {
				got = append(got, o.String())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func samplePlan(encap calico.Encapsulation, bgp, v6 bool, method4, method6 string) Plan {
	p := Plan{Encapsulation: string(encap), BGP: bgp,
		Pools:         []Pool{{Family: 4, CIDR: netip.MustParsePrefix("172.16.0.0/16")}},
		Autodetection: []Autodetect{{Family: 4, Best: method4}},
	}
	if v6 {
		p.Pools = append(p.Pools, Pool{Family: 6, CIDR: netip.MustParsePrefix("fd00::/48")})
		p.Autodetection = append(p.Autodetection, Autodetect{Family: 6, Best: method6})
	}
	return p
}

func envMap(env []EnvVar) map[string]string {
	m := map[string]string{}
	for _, e := range env {
		m[e.Name] = e.Value
	}
	return m
}

func TestEnv(t *testing.T) {
	tests := []struct {
		name string
		plan Plan
		want map[string]string
	}{
		{"ipip BGP", samplePlan(calico.EncapIPIP, true, false, "cidr=10.0.0.0/16", ""), map[string]string{
			"CALICO_NETWORKING_BACKEND": "bird", "IP": "autodetect", "CALICO_IPV4POOL_CIDR": "172.16.0.0/16",
			"CALICO_IPV4POOL_IPIP": "Always", "CALICO_IPV4POOL_VXLAN": "Never", "IP_AUTODETECTION_METHOD": "cidr=10.0.0.0/16",
		}},
		{"vxlan dual stack", samplePlan(calico.EncapVXLAN, false, true, "kubernetes-internal-ip", "interface=^eth0$"), map[string]string{
			"CALICO_NETWORKING_BACKEND": "vxlan", "IP": "autodetect", "CALICO_IPV4POOL_CIDR": "172.16.0.0/16",
			"CALICO_IPV4POOL_IPIP": "Never", "CALICO_IPV4POOL_VXLAN": "Always", "IP_AUTODETECTION_METHOD": "kubernetes-internal-ip",
			"IP6": "autodetect", "FELIX_IPV6SUPPORT": "true", "CALICO_IPV6POOL_CIDR": "fd00::/48", "CALICO_IPV6POOL_VXLAN": "Always",
			"IP6_AUTODETECTION_METHOD": "interface=^eth0$",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := tt.plan.Env()
			got := envMap(env)
			if len(got) != len(env) {
				t.Errorf("duplicate variables in %v", env)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
			for k := range got {
				if _, ok := tt.want[k]; !ok {
					t.Errorf("unexpected %s=%s", k, got[k])
				}
			}
		})
	}
}

func TestDaemonSetPatchProbes(t *testing.T) {
	withBGP := samplePlan(calico.EncapIPIP, true, false, "first-found", "").DaemonSetPatch()
	c := withBGP.Spec.Template.Spec.Containers[0]
	if c.Name != "calico-node" || c.LivenessProbe != nil || c.ReadinessProbe != nil {
		t.Errorf("with BGP: %+v", c)
	}
	noBGP := samplePlan(calico.EncapVXLAN, false, false, "first-found", "").DaemonSetPatch()
	c = noBGP.Spec.Template.Spec.Containers[0]
	if c.LivenessProbe == nil || slices.Contains(c.LivenessProbe.Exec.Command, "-bird-live") ||
		c.ReadinessProbe == nil || slices.Contains(c.ReadinessProbe.Exec.Command, "-bird-ready") {
		t.Errorf("without BGP the probes must drop BIRD: %+v", c)
	}
}

// operatorToMethod is what the operator does with the Installation's field: it writes the
// method string calico-node reads.
func operatorToMethod(n *NodeAddressAutodetection) string {
	switch {
	case n.FirstFound != nil && *n.FirstFound:
		return "first-found"
	case n.Kubernetes == "NodeInternalIP":
		return "kubernetes-internal-ip"
	case n.Interface != "":
		return "interface=" + n.Interface
	case n.SkipInterface != "":
		return "skip-interface=" + n.SkipInterface
	case n.CanReach != "":
		return "can-reach=" + n.CanReach
	case len(n.CIDRs) > 0:
		return "cidr=" + strings.Join(n.CIDRs, ",")
	}
	return ""
}

func TestOperatorMethod(t *testing.T) {
	// Each translation must select exactly what the method string selects.
	for _, s := range []string{
		"first-found", "kubernetes-internal-ip", "interface=^(bond0\\.100|eth0)$", "interface=^eth0$,^ens",
		"skip-interface=^eth1$", "can-reach=10.0.0.1", "cidr=10.0.0.0/16,10.1.0.0/24",
	} {
		n, err := operatorMethod(s)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		back := operatorToMethod(n)
		want, _ := autodetect.ParseMethod(s)
		got, err := autodetect.ParseMethod(back)
		if err != nil {
			t.Fatalf("%s → %s: %v", s, back, err)
		}
		if got.Kind != want.Kind {
			t.Errorf("%s → %s: kind %s", s, back, got.Kind)
		}
		if back != s && !strings.Contains(s, ",^") {
			t.Errorf("%s → %s", s, back)
		}
	}
}

func TestInstallation(t *testing.T) {
	in, err := samplePlan(calico.EncapIPIP, true, true, "cidr=10.0.0.0/16", "kubernetes-internal-ip").Installation()
	if err != nil {
		t.Fatal(err)
	}
	n := in.Spec.CalicoNetwork
	if n.BGP != "Enabled" || len(n.IPPools) != 2 {
		t.Fatalf("calicoNetwork = %+v", n)
	}
	if p := n.IPPools[0]; p.CIDR != "172.16.0.0/16" || p.Encapsulation != "IPIP" || p.NATOutgoing != "Enabled" {
		t.Errorf("IPv4 pool = %+v", p)
	}
	if p := n.IPPools[1]; p.CIDR != "fd00::/48" || p.Encapsulation != "None" {
		t.Errorf("IPv6 pool = %+v (no IP-in-IP for IPv6)", p)
	}
	if v4 := n.NodeAddressAutodetectionV4; v4 == nil || !slices.Equal(v4.CIDRs, []string{"10.0.0.0/16"}) {
		t.Errorf("V4 = %+v", v4)
	}
	if v6 := n.NodeAddressAutodetectionV6; v6 == nil || v6.Kubernetes != "NodeInternalIP" {
		t.Errorf("V6 = %+v", v6)
	}
}
