package plan

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	"go4.org/netipx"

	"github.com/calico-prep/calico-prep/pkg/cidr"
	"github.com/calico-prep/calico-prep/pkg/host"
)

// Pool is the pod CIDR of one IP family.
type Pool struct {
	Family int `json:"family"`
	// Bits is the prefix length asked for.
	Bits int `json:"bits"`
	// Asked is the operator's preferred CIDR at that size; zero when there is none or it is
	// smaller than the size.
	Asked netip.Prefix `json:"asked,omitzero"`
	// CIDR is Asked when it collides with nothing, else the first free block of the size in
	// Searched; zero when none is free.
	CIDR netip.Prefix `json:"cidr,omitzero"`
	// AskedCollisions explains why Asked cannot be used.
	AskedCollisions *Collisions `json:"askedCollisions,omitempty"`
	// Searched are the ranges looked through, in order of preference.
	Searched []netip.Prefix `json:"searched"`
	Note     string         `json:"note,omitempty"`
}

// Collisions summarises the collisions of one CIDR across the cluster; with hundreds of nodes
// it counts and names examples rather than listing everything.
type Collisions struct {
	// Nodes counts the nodes on which it collides, Total the collisions there.
	Nodes int `json:"nodes"`
	Total int `json:"total"`
	// Cluster are the collisions with the service CIDRs and kubeadm's podSubnet.
	Cluster []string `json:"cluster"`
	// Networks are the colliding host networks, those on the most nodes first.
	Networks []NetworkCount `json:"networks"`
	// First are the first node collisions in node order.
	First []NodeCollision `json:"first"`
}

// NetworkCount is one colliding host network and how many nodes have it.
type NetworkCount struct {
	Network netip.Prefix `json:"network"`
	Nodes   int          `json:"nodes"`
	// Example is one collision with it, e.g. "node-1: pod CIDR … overlaps ens33 address …".
	Example string `json:"example"`
}

// NodeCollision is one collision on one node, as pkg/cidr words it.
type NodeCollision struct {
	Node      string `json:"node"`
	Collision string `json:"collision"`
}

// maxPoolBits is Calico's default block size per family: a pool must hold at least one block.
var maxPoolBits = map[int]int{4: 26, 6: 122}

// fallbackRanges are where a pod CIDR is looked for after the asked one, in order of
// preference. kubeadm's podSubnet, when given, is the only place a pool may be. Otherwise
// private space: 172.16.0.0/12 first because it is the range host networks use least (a lab
// VM with ens33 in 192.168.79.0/24 and libvirt's virbr0 lands on 172.16.0.0/16); docker's bridges, which do live there, show up as host
// addresses and are avoided like any other. 10.0.0.0/8 is where corporate networks and cloud
// VPCs live, and 192.168.0.0/16 where home and lab networks and Calico's own default do.
func fallbackRanges(fam int, kubeadm []netip.Prefix) (ranges []netip.Prefix, fromKubeadm bool) {
	for _, s := range kubeadm {
		if familyOf(s.Addr()) == fam {
			ranges = append(ranges, s.Masked())
		}
	}
	if len(ranges) > 0 {
		return ranges, true
	}
	if fam == 4 {
		return []netip.Prefix{
			netip.MustParsePrefix("172.16.0.0/12"),
			netip.MustParsePrefix("10.0.0.0/8"),
			netip.MustParsePrefix("192.168.0.0/16"),
		}, false
	}
	return []netip.Prefix{netip.MustParsePrefix("fd00::/8")}, false
}

// planPool finds the pod CIDR of one family: the asked one when it collides with no host
// address or route on any reported node, no service CIDR and lies inside kubeadm's podSubnet;
// else the first block of the asked size in the fallback ranges that does the same.
func planPool(nodes []*Node, opts Options, fam int) (Pool, error) {
	if err := opts.CheckSize(fam); err != nil {
		return Pool{}, err
	}
	asked, bits := opts.poolSize(fam)
	fallbacks, _ := fallbackRanges(fam, opts.KubeadmSubnets)
	pool := Pool{Family: fam, Bits: bits, Searched: []netip.Prefix{}}
	famIn := cidr.Input{ServiceCIDRs: opts.ServiceCIDRs, KubeadmSubnets: opts.KubeadmSubnets}
	var ranges []netip.Prefix
	switch {
	case !asked.IsValid():
	case bits < asked.Bits():
		pool.Note = fmt.Sprintf("the asked %s is smaller than /%d", asked, bits)
	default:
		pool.Asked = netip.PrefixFrom(asked.Addr(), bits).Masked()
		in := famIn
		in.Pools = []netip.Prefix{pool.Asked}
		pool.AskedCollisions = summarise(nodes, in)
		if pool.AskedCollisions == nil {
			pool.CIDR = pool.Asked
			return pool, nil
		}
		// The rest of the asked range is the next best thing, unless it is outside kubeadm's
		// podSubnet as a whole.
		if len(pool.AskedCollisions.Cluster) == 0 || !outsideKubeadm(asked, opts.KubeadmSubnets) {
			ranges = append(ranges, asked)
		}
	}
	for _, r := range fallbacks {
		if !slices.Contains(ranges, r) {
			ranges = append(ranges, r)
		}
	}

	obstacles := newObstacles(nodes, fam, opts.ServiceCIDRs)
	for _, r := range ranges {
		if bits < r.Bits() {
			continue
		}
		pool.Searched = append(pool.Searched, r)
		if c, ok := obstacles.search(r, bits, nodes, famIn); ok {
			pool.CIDR = c
			return pool, nil
		}
	}
	pool.Note = joinNote(pool.Note, fmt.Sprintf("every /%d in %s overlaps a host network, route or service CIDR", bits, joinPrefixes(pool.Searched)))
	return pool, nil
}

// poolSize returns the asked pool of the family (zero when none) and the prefix length wanted.
func (o Options) poolSize(fam int) (netip.Prefix, int) {
	asked, bits := o.PodCIDR, o.PodCIDRBits
	if fam == 6 {
		asked, bits = o.PodCIDRv6, o.PodCIDRv6Bits
	}
	if bits == 0 {
		bits = asked.Bits()
		if !asked.IsValid() {
			bits = DefaultIPv6Bits
		}
	}
	return asked, bits
}

// CheckSize returns an error wrapping ErrImpossibleSize when no pool of the family can have the
// size asked for, so that a command can reject it before it reads the cluster.
func (o Options) CheckSize(fam int) error {
	asked, bits := o.poolSize(fam)
	ranges, fromKubeadm := fallbackRanges(fam, o.KubeadmSubnets)
	return checkBits(fam, bits, asked, ranges, fromKubeadm)
}

// checkBits rejects sizes no pool can have: longer than Calico's block, or larger than every
// range a pool may come from.
func checkBits(fam, bits int, asked netip.Prefix, ranges []netip.Prefix, fromKubeadm bool) error {
	if bits < 1 || bits > maxPoolBits[fam] {
		return fmt.Errorf("%w: an IPv%d pool of /%d cannot hold one of Calico's /%d blocks; want /1 to /%d", ErrImpossibleSize, fam, bits, maxPoolBits[fam], maxPoolBits[fam])
	}
	if asked.IsValid() && bits >= asked.Bits() {
		return nil
	}
	for _, r := range ranges {
		if bits >= r.Bits() {
			return nil
		}
	}
	largest := slices.MinFunc(ranges, func(a, b netip.Prefix) int { return cmp.Compare(a.Bits(), b.Bits()) })
	what := "private range"
	if fam == 6 {
		what = "unique local range"
	}
	if fromKubeadm {
		what = "kubeadm podSubnet"
	}
	return fmt.Errorf("%w: an IPv%d pool of /%d is larger than any %s (the largest is %s)", ErrImpossibleSize, fam, bits, what, largest)
}

func outsideKubeadm(p netip.Prefix, kubeadm []netip.Prefix) bool {
	for _, c := range cidr.Collisions(cidr.Input{Pools: []netip.Prefix{p}, KubeadmSubnets: kubeadm}, host.Snapshot{}) {
		if c.Kind == cidr.OutsideKubeadm {
			return true
		}
	}
	return false
}

// summarise returns the collisions of in.Pools on every node and in the cluster, nil when
// there are none.
func summarise(nodes []*Node, in cidr.Input) *Collisions {
	s := &Collisions{Cluster: []string{}, Networks: []NetworkCount{}, First: []NodeCollision{}}
	for _, c := range cidr.Collisions(in, host.Snapshot{}) {
		s.Cluster = append(s.Cluster, c.String())
	}
	nodeIn := cidr.Input{Pools: in.Pools}
	byNet := map[netip.Prefix]*NetworkCount{}
	for _, n := range nodes {
		cs := cidr.Collisions(nodeIn, n.Report.Host)
		if len(cs) == 0 {
			continue
		}
		s.Nodes++
		s.Total += len(cs)
		seen := map[netip.Prefix]bool{}
		for _, c := range cs {
			text := c.String()
			if len(s.First) < listed {
				s.First = append(s.First, NodeCollision{Node: n.Name, Collision: text})
			}
			network := c.Other.Masked()
			if seen[network] {
				continue
			}
			seen[network] = true
			if nc := byNet[network]; nc != nil {
				nc.Nodes++
			} else {
				byNet[network] = &NetworkCount{Network: network, Nodes: 1, Example: n.Name + ": " + text}
			}
		}
	}
	if s.Nodes == 0 && len(s.Cluster) == 0 {
		return nil
	}
	for _, nc := range byNet {
		s.Networks = append(s.Networks, *nc)
	}
	slices.SortFunc(s.Networks, func(a, b NetworkCount) int {
		if c := cmp.Compare(b.Nodes, a.Nodes); c != 0 {
			return c
		}
		return comparePrefix(a.Network, b.Network)
	})
	s.Networks = s.Networks[:min(len(s.Networks), listed)]
	return s
}

// obstacles are the networks of one family that a pool must not overlap. As an address set,
// the first free block of a range is found without walking its blocks one by one, however large
// the range (a /64 in fd00::/8 has 2^56 candidates).
type obstacles struct{ b netipx.IPSetBuilder }

// newObstacles collects what pkg/cidr would report against a pool spanning the whole family:
// every host address network and route of every node, and the service CIDRs.
func newObstacles(nodes []*Node, fam int, services []netip.Prefix) *obstacles {
	everything := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	if fam == 6 {
		everything = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
	}
	in := cidr.Input{Pools: []netip.Prefix{everything}}
	o := &obstacles{}
	for _, n := range nodes {
		for _, c := range cidr.Collisions(in, n.Report.Host) {
			o.b.AddPrefix(c.Other.Masked())
		}
	}
	for _, s := range services {
		if familyOf(s.Addr()) == fam {
			o.b.AddPrefix(s.Masked())
		}
	}
	return o
}

// search returns the first block of the size in r that overlaps no obstacle and that pkg/cidr
// confirms collides with nothing on any node or in the cluster. A block pkg/cidr still finds a
// collision for (a route the whole-family pass did not count, such as a BGP route wider than
// the block) becomes an obstacle itself and the search goes on.
func (o *obstacles) search(r netip.Prefix, bits int, nodes []*Node, in cidr.Input) (netip.Prefix, bool) {
	for {
		block, ok := o.firstFree(r, bits)
		if !ok {
			return netip.Prefix{}, false
		}
		in.Pools = []netip.Prefix{block}
		s := summarise(nodes, in)
		if s == nil {
			return block, true
		}
		for _, nc := range s.Networks {
			o.b.AddPrefix(nc.Network.Masked())
		}
		o.b.AddPrefix(block)
	}
}

// firstFree returns the lowest aligned block of the size in r that overlaps no obstacle: free
// space splits into aligned prefixes in address order, and the first one at least as large as
// the block starts it.
func (o *obstacles) firstFree(r netip.Prefix, bits int) (netip.Prefix, bool) {
	taken, _ := o.b.IPSet()
	var free netipx.IPSetBuilder
	free.AddPrefix(r.Masked())
	free.RemoveSet(taken)
	set, _ := free.IPSet()
	for _, rg := range set.Ranges() {
		for _, p := range rg.Prefixes() {
			if p.Bits() <= bits {
				return netip.PrefixFrom(p.Addr(), bits), true
			}
		}
	}
	return netip.Prefix{}, false
}

func familyOf(a netip.Addr) int {
	if a.Is4() || a.Is4In6() {
		return 4
	}
	return 6
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}

func joinPrefixes(ps []netip.Prefix) string {
	s := ""
	for i, p := range ps {
		if i > 0 {
			s += ", "
		}
		s += p.String()
	}
	return s
}

func joinNote(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}
