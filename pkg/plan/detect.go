package plan

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"github.com/calico-prep/calico-prep/pkg/autodetect"
	"github.com/calico-prep/calico-prep/pkg/host"
)

// Autodetect is the IP autodetection plan of one family.
type Autodetect struct {
	Family int `json:"family"`
	// Intended says which address every node should get.
	Intended string `json:"intended"`
	// Method is the most robust candidate that picks the intended address on every checked
	// node; empty when none does.
	Method string `json:"method"`
	// Best is Method, or when none agrees everywhere the candidate wrong on the fewest nodes
	// (the more robust on a tie); the env, kustomize and operator outputs use it.
	Best string `json:"best"`
	// Checked counts the nodes with a known intended address; Undetermined are the others.
	Checked      int          `json:"checked"`
	Undetermined []Unreported `json:"undetermined"`
	// Candidates are the methods tried, most robust first.
	Candidates []Candidate `json:"candidates"`
}

// Candidate is one autodetection method evaluated on every checked node with calico-node's
// exact semantics (package autodetect).
type Candidate struct {
	Method string `json:"method"`
	// Basis says where the method's argument comes from.
	Basis string `json:"basis"`
	// Estimate is set for can-reach=: the plan cannot ask each node's kernel for its source
	// address, so it takes the longest-prefix route of the node's report and that route's
	// interface address.
	Estimate bool `json:"estimate,omitempty"`
	Agrees   int  `json:"agrees"`
	Wrong    int  `json:"wrong"`
	// Misses are the first nodes where it picks another address or none.
	Misses []Miss `json:"misses"`
}

// Miss is a node where a candidate goes wrong.
type Miss struct {
	Node     string `json:"node"`
	Intended string `json:"intended"`
	// Picked is what the method picks instead ("eth1 10.200.0.7/24"); Error why it picks nothing.
	Picked string `json:"picked,omitempty"`
	Error  string `json:"error,omitempty"`
}

// target is a node with the address Calico should pick on it.
type target struct {
	node  *Node
	iface string
	addr  netip.Prefix
}

func (t target) String() string { return t.iface + " " + t.addr.String() }

// planAutodetect works out the intended address on every reported node and evaluates the
// candidate methods in order of robustness, most robust first:
//
//  1. kubernetes-internal-ip follows the address Kubernetes itself uses for the node; neither
//     interface names, interface order nor new interfaces change it.
//  2. cidr= depends on addresses only: it survives renamed and added NICs unless a new
//     interface gets an address inside the ranges.
//  3. interface= depends on names, which change with hardware and naming schemes, and every
//     matching interface competes by ifindex.
//  4. can-reach= depends on the routing table at the moment calico-node starts (a VPN or a
//     policy route changes the answer) and on the destination staying put; here it is only
//     an estimate.
//  5. first-found depends on ifindex order, i.e. on the order devices were created: any new
//     bridge or NIC outside calico-node's exclusions takes over.
//
// all are every listed node, for the control-plane destination of can-reach=.
func planAutodetect(ctx context.Context, reported []*Node, all []Node, opts Options, fam int) (Autodetect, error) {
	ad := Autodetect{Family: fam, Undetermined: []Unreported{}, Candidates: []Candidate{}}
	ad.Intended = fmt.Sprintf("the address of the interface holding the Node's first IPv%d InternalIP", fam)
	if opts.IntendedInterface != nil {
		ad.Intended = fmt.Sprintf("the first global IPv%d address of the interface matching %q", fam, opts.IntendedInterface)
	}
	var targets []target
	for _, n := range reported {
		t, reason := intended(n, fam, opts.IntendedInterface)
		if reason != "" {
			ad.Undetermined = append(ad.Undetermined, Unreported{Node: n.Name, Reason: reason})
			continue
		}
		targets = append(targets, t)
	}
	ad.Checked = len(targets)
	if len(targets) == 0 {
		return ad, nil
	}

	type proposal struct{ method, basis string }
	proposals := []proposal{{string(autodetect.KubernetesInternalIP), "the Node's InternalIP"}}
	proposals = append(proposals, proposal{"cidr=" + strings.Join(prefixStrings(aggregate(networksOf(targets))), ","), "the intended addresses' networks, merged"})
	proposals = append(proposals, proposal{"interface=" + interfaceRegex(namesOf(targets)), "the intended interfaces' names"})
	if a, name, ok := controlPlaneAddr(all, fam); ok {
		proposals = append(proposals, proposal{"can-reach=" + a.String(), "the InternalIP of control-plane node " + name})
	}
	if gw, count, ok := commonGateway(targets, fam); ok {
		proposals = append(proposals, proposal{"can-reach=" + gw.String(), fmt.Sprintf("the default gateway of %d of %d nodes", count, len(targets))})
	}
	proposals = append(proposals, proposal{string(autodetect.FirstFound), "calico-node's default"})

	seen := map[string]bool{}
	for _, pr := range proposals {
		if seen[pr.method] {
			continue
		}
		seen[pr.method] = true
		m, err := autodetect.ParseMethod(pr.method)
		if err != nil {
			return Autodetect{}, fmt.Errorf("plan IPv%d autodetection: %w", fam, err)
		}
		c, err := evaluate(ctx, m, fam, targets)
		if err != nil {
			return Autodetect{}, fmt.Errorf("plan IPv%d autodetection: %w", fam, err)
		}
		c.Basis = pr.basis
		if ad.Method == "" && c.Wrong == 0 {
			ad.Method = c.Method
		}
		ad.Candidates = append(ad.Candidates, c)
	}
	best := ad.Candidates[0]
	for _, c := range ad.Candidates[1:] {
		if c.Wrong < best.Wrong {
			best = c
		}
	}
	ad.Best = best.Method
	return ad, nil
}

// intended returns the address Calico should pick on n, or why there is none. With re nil it
// is the Node's first InternalIP of the family, as kubernetes-internal-ip takes it, on the
// interface holding it; with re it is the first global unicast address of the family on the
// one interface whose name re matches, as interface= would take it.
//
// The report's snapshot leaves out Calico's own interfaces and interfaces without addresses.
// Neither changes what a method picks except can-reach=, whose route through a Calico device
// the estimate cannot see; Calico's devices only route pod CIDRs, which no destination here is in.
func intended(n *Node, fam int, re *regexp.Regexp) (target, string) {
	ifaces := n.Report.Host.Interfaces
	if re == nil {
		var ip netip.Addr
		for _, a := range n.InternalIPs {
			if familyOf(a) == fam {
				ip = a
				break
			}
		}
		if !ip.IsValid() {
			return target{}, fmt.Sprintf("the Node has no IPv%d InternalIP", fam)
		}
		for i := len(ifaces) - 1; i >= 0; i-- {
			for _, p := range ifaces[i].Addrs {
				if p.Addr().Unmap() == ip.Unmap() {
					return target{node: n, iface: ifaces[i].Name, addr: p}, ""
				}
			}
		}
		return target{}, fmt.Sprintf("the Node's InternalIP %s is on no interface in the report", ip)
	}
	var matches []target
	var names []string
	for _, ifc := range ifaces {
		if !re.MatchString(ifc.Name) {
			continue
		}
		names = append(names, ifc.Name)
		for _, p := range ifc.Addrs {
			if familyOf(p.Addr()) == fam && p.Addr().IsGlobalUnicast() {
				matches = append(matches, target{node: n, iface: ifc.Name, addr: p})
				break
			}
		}
	}
	switch {
	case len(matches) == 1:
		return matches[0], ""
	case len(matches) > 1:
		s := make([]string, len(matches))
		for i, m := range matches {
			s[i] = m.String()
		}
		return target{}, fmt.Sprintf("%d interfaces matching %q have a global IPv%d address: %s", len(matches), re, fam, strings.Join(s, ", "))
	case len(names) > 0:
		return target{}, fmt.Sprintf("no interface matching %q (%s) has a global IPv%d address", re, strings.Join(names, ", "), fam)
	}
	return target{}, fmt.Sprintf("no interface matches %q", re)
}

// evaluate runs calico-node's detection for m on every target. can-reach= gets the route
// estimate instead of a socket, so the plan never touches the network.
func evaluate(ctx context.Context, m autodetect.Method, fam int, targets []target) (Candidate, error) {
	c := Candidate{Method: m.String(), Estimate: m.Kind == autodetect.CanReach, Misses: []Miss{}}
	for _, t := range targets {
		if err := ctx.Err(); err != nil {
			return Candidate{}, err
		}
		snap := t.node.Report.Host
		env := autodetect.Env{
			NodeInternalIPs: t.node.InternalIPs,
			CanReach: func(_ context.Context, dest string, family int) (netip.Addr, error) {
				return routeSource(snap, dest, family)
			},
		}
		res, err := autodetect.Detect(ctx, m, fam, snap.Interfaces, env)
		miss := Miss{Node: t.node.Name, Intended: t.String()}
		switch {
		case err == nil && res.CIDR.Addr() == t.addr.Addr():
			c.Agrees++
			continue
		case err == nil:
			miss.Picked = res.Interface + " " + res.CIDR.String()
		case errors.Is(err, autodetect.ErrNoAddress):
			miss.Error = err.Error()
		default:
			return Candidate{}, err
		}
		c.Wrong++
		if len(c.Misses) < listed {
			c.Misses = append(c.Misses, miss)
		}
	}
	return c, nil
}

// routeSource estimates the source address the node's kernel would choose toward dest: the
// destination itself when it is a local address, else an address of the family on the
// interface of the longest-prefix route, preferring one whose network holds the gateway or the
// destination (the kernel's preferred source, which the report does not carry, usually is that
// one). Policy routing and route metrics are not in the report.
func routeSource(snap host.Snapshot, dest string, family int) (netip.Addr, error) {
	d, err := netip.ParseAddr(dest)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("the plan cannot resolve %q", dest)
	}
	for _, ifc := range snap.Interfaces {
		for _, p := range ifc.Addrs {
			if p.Addr() == d {
				return d, nil
			}
		}
	}
	var best *host.Route
	for i := range snap.Routes {
		r := &snap.Routes[i]
		if !r.Dst.IsValid() || familyOf(r.Dst.Addr()) != family || !r.Dst.Contains(d) {
			continue
		}
		if best == nil || r.Dst.Bits() > best.Dst.Bits() {
			best = r
		}
	}
	switch {
	case best == nil:
		return netip.Addr{}, fmt.Errorf("no route to %s in the report", d)
	case best.Type != "" && best.Type != "unicast":
		return netip.Addr{}, fmt.Errorf("the route to %s is %s %s", d, best.Type, best.Dst)
	}
	ifc, ok := snap.Interface(best.Dev)
	if !ok {
		return netip.Addr{}, fmt.Errorf("the route to %s leaves through %q, which the report does not list", d, best.Dev)
	}
	next := d
	if best.Gateway.IsValid() {
		next = best.Gateway
	}
	var first netip.Addr
	for _, p := range ifc.Addrs {
		if familyOf(p.Addr()) != family || !p.Addr().IsGlobalUnicast() {
			continue
		}
		if p.Masked().Contains(next) {
			return p.Addr(), nil
		}
		if !first.IsValid() {
			first = p.Addr()
		}
	}
	if !first.IsValid() {
		return netip.Addr{}, fmt.Errorf("%s, the interface of the route to %s, has no global IPv%d address", ifc.Name, d, family)
	}
	return first, nil
}

func networksOf(targets []target) []netip.Prefix {
	out := make([]netip.Prefix, len(targets))
	for i, t := range targets {
		out[i] = t.addr.Masked()
	}
	return out
}

// aggregate returns the fewest prefixes that cover exactly the union of ps: duplicates and
// networks inside others dropped, sibling halves merged into their parent. Only a lossless
// merge: a wider range would let more interfaces compete, and the narrowest ranges that hold
// every intended address are the ones most likely to pick it everywhere.
func aggregate(ps []netip.Prefix) []netip.Prefix {
	out := slices.Clone(ps)
	for {
		slices.SortFunc(out, comparePrefix)
		out = slices.Compact(out)
		kept := out[:0]
		for _, p := range out {
			if n := len(kept); n > 0 && kept[n-1].Bits() <= p.Bits() && kept[n-1].Contains(p.Addr()) {
				continue
			}
			kept = append(kept, p)
		}
		out = kept
		merged := false
		for i := 0; i+1 < len(out); i++ {
			a, b := out[i], out[i+1]
			if a.Bits() == b.Bits() && a.Bits() > 0 {
				parent := netip.PrefixFrom(a.Addr(), a.Bits()-1).Masked()
				if parent == netip.PrefixFrom(b.Addr(), b.Bits()-1).Masked() {
					out[i], out[i+1] = parent, parent
					merged = true
					i++
				}
			}
		}
		if !merged {
			return out
		}
	}
}

func namesOf(targets []target) []string {
	var names []string
	for _, t := range targets {
		names = append(names, t.iface)
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// interfaceRegex is the narrowest anchored regex matching exactly the names. A comma is
// written \x2c because calico-node splits the method's argument on commas, and # as \x23
// because env files (kubectl set env -e, --env-file) cut lines at it.
var regexEscapes = strings.NewReplacer(",", `\x2c`, "#", `\x23`)

func interfaceRegex(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = regexEscapes.Replace(regexp.QuoteMeta(n))
	}
	if len(q) == 1 {
		return "^" + q[0] + "$"
	}
	return "^(" + strings.Join(q, "|") + ")$"
}

// controlPlaneAddr returns the first InternalIP of the family of the first control-plane node
// by name: an address every node must reach anyway, and stable.
func controlPlaneAddr(nodes []Node, fam int) (netip.Addr, string, bool) {
	var best *Node
	var addr netip.Addr
	for i := range nodes {
		n := &nodes[i]
		if !n.ControlPlane || (best != nil && n.Name >= best.Name) {
			continue
		}
		for _, a := range n.InternalIPs {
			if familyOf(a) == fam {
				best, addr = n, a
				break
			}
		}
	}
	if best == nil {
		return netip.Addr{}, "", false
	}
	return addr, best.Name, true
}

// commonGateway returns the default gateway of the family that most target nodes use.
func commonGateway(targets []target, fam int) (netip.Addr, int, bool) {
	counts := map[netip.Addr]int{}
	for _, t := range targets {
		for _, r := range t.node.Report.Host.Routes {
			if r.Dst.IsValid() && r.Dst.Bits() == 0 && familyOf(r.Dst.Addr()) == fam && r.Gateway.IsValid() {
				counts[r.Gateway]++
				break
			}
		}
	}
	var best netip.Addr
	for gw, n := range counts {
		if !best.IsValid() || n > counts[best] || n == counts[best] && gw.Less(best) {
			best = gw
		}
	}
	return best, counts[best], best.IsValid()
}

func prefixStrings(ps []netip.Prefix) []string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return s
}
