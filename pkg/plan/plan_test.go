package plan

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/calico-prep/calico-prep/test/fixtures"

	"go4.org/netipx"

	"github.com/calico-prep/calico-prep/pkg/calico"

	"github.com/calico-prep/calico-prep/pkg/autodetect"
	"github.com/calico-prep/calico-prep/pkg/cidr"
	"github.com/calico-prep/calico-prep/pkg/host"
	"github.com/calico-prep/calico-prep/pkg/plan/plantest"
	"github.com/calico-prep/calico-prep/pkg/report"
)

func nodesOf(hosts []plantest.Host) []Node {
	out := make([]Node, len(hosts))
	for i, h := range hosts {
		r := h.Report()
		out[i] = Node{Name: h.Name, InternalIPs: h.InternalIPs, ControlPlane: h.ControlPlane, Report: &r}
	}
	return out
}

func defaultOptions() Options {
	return Options{
		PodCIDR:       netip.MustParsePrefix("192.168.0.0/16"),
		ServiceCIDRs:  []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")},
		Encapsulation: calico.EncapIPIP,
		BGP:           true,
	}
}

// The seed guide's decision, made on its one VM: 192.168.0.0/16 collides with ens33 and
// virbr0, 172.16.0.0/16 does not.
func TestMakeSeedGuide(t *testing.T) {
	rep := report.Node{V: report.Version, Ready: true, Host: report.HostOf(fixtures.SeedHost(t))}
	nodes := []Node{{Name: "seed", InternalIPs: []netip.Addr{netip.MustParseAddr("192.168.79.128")}, ControlPlane: true, Report: &rep}}
	p, err := Make(t.Context(), nodes, defaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	pool := p.Pools[0]
	if pool.CIDR != netip.MustParsePrefix("172.16.0.0/16") {
		t.Errorf("pod CIDR = %s, want the seed guide's 172.16.0.0/16", pool.CIDR)
	}
	if pool.AskedCollisions == nil {
		t.Fatal("no collisions explained for the asked 192.168.0.0/16")
	}
	var got []string
	for _, c := range pool.AskedCollisions.First {
		got = append(got, c.Node+": "+c.Collision)
	}
	want := []string{
		"seed: pod CIDR 192.168.0.0/16 overlaps ens33 address 192.168.79.128/24",
		"seed: pod CIDR 192.168.0.0/16 overlaps virbr0 address 192.168.122.1/24",
	}
	if !slices.Equal(got, want) {
		t.Errorf("collisions:\n got %q\nwant %q", got, want)
	}
	if ad := p.Autodetection[0]; ad.Method != "kubernetes-internal-ip" {
		t.Errorf("method = %q, want kubernetes-internal-ip (candidates %+v)", ad.Method, ad.Candidates)
	}
	if p.Partial || len(p.Problems) != 0 {
		t.Errorf("plan partial: %q", p.Problems)
	}
	if p.Typha.Recommended {
		t.Errorf("Typha recommended for one node: %+v", p.Typha)
	}
}

// checkPool verifies a pool against the hosts themselves (their full snapshots, Calico's
// interfaces included) with pkg/cidr, and that no block before it in its range was free.
func checkPool(t *testing.T, hosts []plantest.Host, opts Options, pool Pool) {
	t.Helper()
	in := cidr.Input{Pools: []netip.Prefix{pool.CIDR}, ServiceCIDRs: opts.ServiceCIDRs, KubeadmSubnets: opts.KubeadmSubnets}
	collides := func(p netip.Prefix) string {
		in.Pools = []netip.Prefix{p}
		if cs := cidr.Collisions(in, host.Snapshot{}); len(cs) > 0 {
			return cs[0].String()
		}
		for _, h := range hosts {
			if cs := cidr.Collisions(in, h.Snapshot); len(cs) > 0 {
				return h.Name + ": " + cs[0].String()
			}
		}
		return ""
	}
	if !pool.CIDR.IsValid() {
		t.Fatalf("IPv%d: no CIDR: %s", pool.Family, pool.Note)
	}
	if pool.CIDR.Bits() != pool.Bits {
		t.Errorf("IPv%d: CIDR %s is not a /%d", pool.Family, pool.CIDR, pool.Bits)
	}
	if c := collides(pool.CIDR); c != "" {
		t.Errorf("IPv%d: planned %s collides: %s", pool.Family, pool.CIDR, c)
	}
	if pool.CIDR == pool.Asked {
		return
	}
	// Every earlier block of the range the CIDR came from must collide.
	var r netip.Prefix
	for _, s := range pool.Searched {
		if s.Contains(pool.CIDR.Addr()) {
			r = s
			break
		}
	}
	if !r.IsValid() {
		t.Fatalf("IPv%d: %s is in none of the searched ranges %v", pool.Family, pool.CIDR, pool.Searched)
	}
	for b := netip.PrefixFrom(r.Addr(), pool.Bits); b.Addr().Less(pool.CIDR.Addr()); b = netip.PrefixFrom(netipx.PrefixLastIP(b).Next(), pool.Bits) {
		if collides(b) == "" {
			t.Errorf("IPv%d: %s is free and comes before %s", pool.Family, b, pool.CIDR)
			return
		}
	}
}

func TestMakePoolCollidesWithNothing(t *testing.T) {
	hosts := plantest.Cluster("node", 300)
	tests := []struct {
		name string
		opts func(*Options)
		// asked is what becomes of the asked IPv4 CIDR: "free", "collides" or "none" (it is
		// smaller than the size).
		asked string
	}{
		{name: "default 192.168.0.0/16 collides with seed hosts", opts: func(*Options) {}, asked: "collides"},
		{name: "10.0.0.0/16 collides with servers", opts: func(o *Options) { o.PodCIDR = netip.MustParsePrefix("10.0.0.0/16") }, asked: "collides"},
		{name: "free asked CIDR is kept", opts: func(o *Options) { o.PodCIDR = netip.MustParsePrefix("10.64.0.0/16") }, asked: "free"},
		{name: "asked range searched at a smaller size", opts: func(o *Options) {
			o.PodCIDR = netip.MustParsePrefix("10.0.0.0/8")
			o.PodCIDRBits = 20
		}, asked: "collides"},
		{name: "size larger than asked", opts: func(o *Options) { o.PodCIDRBits = 14 }, asked: "none"},
		{name: "service CIDR in the way", opts: func(o *Options) {
			o.PodCIDR = netip.MustParsePrefix("10.96.0.0/16")
		}, asked: "collides"},
		{name: "inside kubeadm podSubnet", opts: func(o *Options) {
			o.KubeadmSubnets = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00:10::/32")}
		}, asked: "collides"},
		{name: "IPv6 in fd00::/8", opts: func(o *Options) { o.IPv6 = true }, asked: "collides"},
		{name: "IPv6 asked collides", opts: func(o *Options) {
			o.IPv6 = true
			o.PodCIDRv6 = netip.MustParsePrefix("2001:db8::/32")
			o.PodCIDRv6Bits = 56
		}, asked: "collides"},
		{name: "IPv6 inside kubeadm podSubnet", opts: func(o *Options) {
			o.IPv6 = true
			o.KubeadmSubnets = []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("2001:db8::/32")}
			o.PodCIDRv6Bits = 64
		}, asked: "collides"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := defaultOptions()
			tt.opts(&opts)
			p, err := Make(t.Context(), nodesOf(hosts), opts)
			if err != nil {
				t.Fatal(err)
			}
			if want := 1 + btoi(opts.IPv6); len(p.Pools) != want {
				t.Fatalf("%d pools, want %d", len(p.Pools), want)
			}
			for _, pool := range p.Pools {
				checkPool(t, hosts, opts, pool)
			}
			v4 := p.Pools[0]
			got := "none"
			switch {
			case v4.Asked.IsValid() && v4.AskedCollisions == nil:
				got = "free"
			case v4.Asked.IsValid():
				got = "collides"
			}
			if got != tt.asked {
				t.Errorf("asked %s: %s (%+v), want %s", v4.Asked, got, v4.AskedCollisions, tt.asked)
			}
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// With hundreds of colliding nodes the explanation counts and names examples.
func TestAskedCollisionsSummary(t *testing.T) {
	hosts := plantest.Cluster("node", 400)
	p, err := Make(t.Context(), nodesOf(hosts), defaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	s := p.Pools[0].AskedCollisions
	seed, total := 0, 0
	for _, h := range hosts {
		cs := cidr.Collisions(cidr.Input{Pools: []netip.Prefix{netip.MustParsePrefix("192.168.0.0/16")}}, h.Snapshot)
		if len(cs) > 0 {
			seed++
			total += len(cs)
		}
	}
	if s.Nodes != seed || s.Total != total {
		t.Errorf("collides on %d nodes (%d collisions), want %d (%d)", s.Nodes, s.Total, seed, total)
	}
	if len(s.First) != listed {
		t.Errorf("%d examples, want %d", len(s.First), listed)
	}
	// virbr0's 192.168.122.0/24 is on every seed host: it leads the networks.
	if len(s.Networks) == 0 || s.Networks[0].Network != netip.MustParsePrefix("192.168.122.0/24") || s.Networks[0].Nodes != seed {
		t.Errorf("networks = %+v, want 192.168.122.0/24 on %d nodes first", s.Networks, seed)
	}
}

func TestMakeImpossibleSize(t *testing.T) {
	tests := []struct {
		name string
		opts func(*Options)
		want string
	}{
		{"longer than a block", func(o *Options) { o.PodCIDRBits = 27 }, "cannot hold one of Calico's /26 blocks"},
		{"larger than private space", func(o *Options) { o.PodCIDRBits = 7 }, "larger than any private range (the largest is 10.0.0.0/8)"},
		{"larger than kubeadm podSubnet", func(o *Options) {
			o.PodCIDRBits = 12
			o.KubeadmSubnets = []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}
		}, "larger than any kubeadm podSubnet (the largest is 10.244.0.0/16)"},
		{"IPv6 longer than a block", func(o *Options) { o.IPv6, o.PodCIDRv6Bits = true, 123 }, "cannot hold one of Calico's /122 blocks"},
		{"IPv6 larger than fd00::/8", func(o *Options) { o.IPv6, o.PodCIDRv6Bits = true, 7 }, "larger than any unique local range"},
	}
	nodes := nodesOf(plantest.Cluster("node", 3))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := defaultOptions()
			tt.opts(&opts)
			_, err := Make(t.Context(), nodes, opts)
			if !errors.Is(err, ErrImpossibleSize) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want ErrImpossibleSize saying %q", err, tt.want)
			}
		})
	}
}

func TestMakeNoFreeCIDR(t *testing.T) {
	hosts := plantest.Cluster("node", 20)
	opts := defaultOptions()
	// The servers' 10.0.0.0/24 fills the only /24 of the podSubnet.
	opts.KubeadmSubnets = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}
	opts.PodCIDRBits = 24
	p, err := Make(t.Context(), nodesOf(hosts), opts)
	if err != nil {
		t.Fatal(err)
	}
	if p.Pools[0].CIDR.IsValid() || !p.Partial {
		t.Errorf("pool %s, partial %v: want none and a partial plan", p.Pools[0].CIDR, p.Partial)
	}
	if !slices.ContainsFunc(p.Problems, func(s string) bool { return strings.Contains(s, "no free IPv4 pod CIDR of size /24") }) {
		t.Errorf("problems = %q", p.Problems)
	}
	if env := p.Env(); slices.ContainsFunc(env, func(e EnvVar) bool { return e.Name == "CALICO_IPV4POOL_CIDR" }) {
		t.Errorf("env sets a pool although none is free: %v", env)
	}
}

func TestMakeUnreported(t *testing.T) {
	nodes := nodesOf(plantest.Cluster("node", 5))
	nodes[1].Report = nil
	nodes[3].Report, nodes[3].ReportError = nil, "decode report: unsupported version 9"
	p, err := Make(t.Context(), nodes, defaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	want := []Unreported{
		{Node: "node-0001", Reason: "no calico-prep.io/report annotation: the agent has not reported yet"},
		{Node: "node-0003", Reason: "decode report: unsupported version 9"},
	}
	if !slices.Equal(p.Unreported, want) {
		t.Errorf("unreported = %+v, want %+v", p.Unreported, want)
	}
	if p.Nodes != 5 || p.Reported != 3 || !p.Partial {
		t.Errorf("nodes %d, reported %d, partial %v", p.Nodes, p.Reported, p.Partial)
	}
	if p.Autodetection[0].Checked != 3 {
		t.Errorf("autodetection checked %d nodes, want 3", p.Autodetection[0].Checked)
	}
}

// detectOn runs calico-node's detection on the host's full snapshot, as calico-node on that
// node would.
func detectOn(t *testing.T, h plantest.Host, method string, fam int) (autodetect.Result, error) {
	t.Helper()
	m, err := autodetect.ParseMethod(method)
	if err != nil {
		t.Fatalf("method %q: %v", method, err)
	}
	return autodetect.Detect(t.Context(), m, fam, h.Snapshot.Interfaces, autodetect.Env{
		NodeInternalIPs: h.InternalIPs,
		CanReach: func(_ context.Context, dest string, family int) (netip.Addr, error) {
			return routeSource(h.Snapshot, dest, family)
		},
	})
}

func TestMakeAutodetectPicksIntended(t *testing.T) {
	hosts := plantest.Cluster("node", 300)
	for _, fam := range []int{4, 6} {
		opts := defaultOptions()
		opts.IPv6 = fam == 6
		p, err := Make(t.Context(), nodesOf(hosts), opts)
		if err != nil {
			t.Fatal(err)
		}
		ad := p.Autodetection[len(p.Autodetection)-1]
		if ad.Family != fam || ad.Method == "" || ad.Checked != len(hosts) {
			t.Fatalf("IPv%d plan: %+v", fam, ad)
		}
		for _, c := range ad.Candidates {
			// Each candidate's count must be what calico-node does on the hosts.
			wrong := 0
			for _, h := range hosts {
				res, err := detectOn(t, h, c.Method, fam)
				want := h.Addr4
				if fam == 6 {
					want = h.Addr6
				}
				if err != nil || res.CIDR != want {
					wrong++
				}
			}
			if c.Wrong != wrong || c.Agrees != len(hosts)-wrong {
				t.Errorf("IPv%d %s: agrees %d, wrong %d; on the hosts it is wrong on %d", fam, c.Method, c.Agrees, c.Wrong, wrong)
			}
			if c.Method == ad.Method && wrong != 0 {
				t.Errorf("IPv%d chosen %s is wrong on %d hosts", fam, c.Method, wrong)
			}
		}
		ff := ad.Candidates[len(ad.Candidates)-1]
		if ff.Method != "first-found" || ff.Wrong == 0 {
			t.Errorf("IPv%d first-found should be wrong on the multi-NIC hosts: %+v", fam, ff)
		}
	}
}

// When the kubelet registered the wrong address on some nodes, kubernetes-internal-ip loses to
// the next method that picks the operator's interface everywhere.
func TestMakeAutodetectIntendedInterface(t *testing.T) {
	var hosts []plantest.Host
	for i := range 60 {
		h := plantest.New(fmt.Sprintf("node-%02d", i), plantest.MultiNIC, i)
		if i%7 == 3 {
			// The kubelet picked the storage address.
			eth1, _ := h.Snapshot.Interface("eth1")
			h.InternalIPs = []netip.Addr{eth1.Addrs[0].Addr()}
		}
		hosts = append(hosts, h)
	}
	opts := defaultOptions()
	opts.IntendedInterface = regexp.MustCompile(`^eth0$`)
	p, err := Make(t.Context(), nodesOf(hosts), opts)
	if err != nil {
		t.Fatal(err)
	}
	ad := p.Autodetection[0]
	if ad.Candidates[0].Method != "kubernetes-internal-ip" || ad.Candidates[0].Wrong == 0 {
		t.Fatalf("kubernetes-internal-ip should be wrong where the InternalIP is the storage address: %+v", ad.Candidates[0])
	}
	if !strings.HasPrefix(ad.Method, "cidr=") {
		t.Errorf("method = %q, want the cidr= candidate", ad.Method)
	}
	for _, h := range hosts {
		if res, err := detectOn(t, h, ad.Method, 4); err != nil || res.Interface != "eth0" {
			t.Errorf("%s: %s picks %+v, %v; want eth0", h.Name, ad.Method, res, err)
		}
	}
}

func TestIntended(t *testing.T) {
	seed := report.Node{Host: report.HostOf(fixtures.SeedHost(t))}
	ip := func(s string) []netip.Addr { return []netip.Addr{netip.MustParseAddr(s)} }
	tests := []struct {
		name   string
		ips    []netip.Addr
		re     string
		want   string
		reason string
	}{
		{name: "InternalIP", ips: ip("192.168.79.128"), want: "ens33 192.168.79.128/24"},
		{name: "no InternalIP", reason: "the Node has no IPv4 InternalIP"},
		{name: "InternalIP elsewhere", ips: ip("10.1.1.1"), reason: "the Node's InternalIP 10.1.1.1 is on no interface in the report"},
		{name: "regex", re: "^virbr", want: "virbr0 192.168.122.1/24"},
		{name: "regex matches several", re: "r", reason: `2 interfaces matching "r" have a global IPv4 address: virbr0 192.168.122.1/24, docker0 172.17.0.1/16`},
		{name: "regex without address", re: "^lo$", reason: `no interface matching "^lo$" (lo) has a global IPv4 address`},
		{name: "regex matches nothing", re: "^eth", reason: `no interface matches "^eth"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var re *regexp.Regexp
			if tt.re != "" {
				re = regexp.MustCompile(tt.re)
			}
			got, reason := intended(&Node{Name: "seed", InternalIPs: tt.ips, Report: &seed}, 4, re)
			if reason != tt.reason {
				t.Errorf("reason = %q, want %q", reason, tt.reason)
			}
			if tt.reason == "" && got.String() != tt.want {
				t.Errorf("intended = %q, want %q", got, tt.want)
			}
		})
	}
}
