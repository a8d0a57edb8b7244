// Package plan computes, from the reports the agent leaves on every Node, the cluster-wide Calico
// install settings an operator otherwise decides by hand on one node: a pod CIDR free on every
// node, an IP autodetection method right on every node, Typha advice and firewalld openings.
package plan

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"

	"github.com/calico-prep/calico-prep/pkg/calico"

	"github.com/calico-prep/calico-prep/pkg/report"
)

// ErrImpossibleSize is wrapped by Make when no pod CIDR of the requested prefix length can
// exist: longer than Calico's block, or larger than every range it may come from.
var ErrImpossibleSize = errors.New("impossible pod CIDR size")

// listed is how many examples a summary names before it only counts.
const listed = 10

// Node is what the plan knows of one Node.
type Node struct {
	Name string
	// InternalIPs are the Node's InternalIP addresses in the order the Node lists them.
	InternalIPs []netip.Addr
	// ControlPlane is set for nodes labelled node-role.kubernetes.io/control-plane: their
	// addresses are a destination every node must reach, which makes them can-reach= candidates.
	ControlPlane bool
	// Report is the node's decoded report; nil when the node has none (agent not running yet)
	// or it could not be read (ReportError says why).
	Report      *report.Node
	ReportError string
}

// Options are the operator's wishes.
type Options struct {
	// PodCIDR is the preferred IPv4 pool; PodCIDRBits the prefix length wanted (its own when 0).
	PodCIDR     netip.Prefix
	PodCIDRBits int
	// IPv6 plans an IPv6 pool too. PodCIDRv6 is the preferred one (none when zero) and
	// PodCIDRv6Bits the prefix length wanted (PodCIDRv6's own, else DefaultIPv6Bits, when 0).
	IPv6          bool
	PodCIDRv6     netip.Prefix
	PodCIDRv6Bits int

	ServiceCIDRs   []netip.Prefix
	KubeadmSubnets []netip.Prefix

	Encapsulation calico.Encapsulation
	BGP           bool
	WireGuard     bool

	// IntendedInterface names, on every node, the interface Calico should take the node
	// address from. Nil means the interface holding the Node's InternalIP.
	IntendedInterface *regexp.Regexp
}

// DefaultIPv6Bits is the IPv6 pool size when the operator names none: calico-node's own default
// IPv6 pool is a /48 from fd00::/8.
const DefaultIPv6Bits = 48

// Plan is the result. Its JSON form is the contract of `agent plan -o json`.
type Plan struct {
	// Nodes counts every listed Node, Reported those with a readable report.
	Nodes    int `json:"nodes"`
	Reported int `json:"reported"`
	// NotReady counts reported nodes whose own checks fail.
	NotReady int `json:"notReady"`
	// Unreported are the Nodes without a (readable) report; the plan does not cover them.
	Unreported []Unreported `json:"unreported"`
	// Partial is set when part of the cluster or part of the plan is missing: unreported
	// nodes, nodes whose intended address is unknown, no agreeing autodetection method or no
	// free pod CIDR. Problems says which, one sentence each.
	Partial  bool     `json:"partial"`
	Problems []string `json:"problems"`

	Pools         []Pool       `json:"pools"`
	Autodetection []Autodetect `json:"autodetection"`
	Typha         Typha        `json:"typha"`
	Encapsulation string       `json:"encapsulation"`
	BGP           bool         `json:"bgp"`
	WireGuard     bool         `json:"wireguard"`
	// Firewall is what firewalld must let in on every node.
	Firewall []Opening `json:"firewall"`
}

// Unreported is a Node the plan could not look at.
type Unreported struct {
	Node   string `json:"node"`
	Reason string `json:"reason"`
}

// Make computes the plan for nodes. It fails only on impossible options (ErrImpossibleSize) or
// when ctx ends; a plan that cannot be completed is returned with Partial set.
func Make(ctx context.Context, nodes []Node, opts Options) (Plan, error) {
	p := Plan{
		Nodes:         len(nodes),
		Unreported:    []Unreported{},
		Problems:      []string{},
		Encapsulation: string(opts.Encapsulation),
		BGP:           opts.BGP,
		WireGuard:     opts.WireGuard,
	}
	var reported []*Node
	for i := range nodes {
		n := &nodes[i]
		if n.Report == nil {
			reason := n.ReportError
			if reason == "" {
				reason = "no calico-prep.io/report annotation: the agent has not reported yet"
			}
			p.Unreported = append(p.Unreported, Unreported{Node: n.Name, Reason: reason})
			continue
		}
		reported = append(reported, n)
		if !n.Report.Ready {
			p.NotReady++
		}
	}
	p.Reported = len(reported)
	if len(p.Unreported) > 0 {
		p.problemf("%d of %d nodes have no report and are not covered (first: %s)", len(p.Unreported), p.Nodes, p.Unreported[0].Node)
	}

	families := []int{4}
	if opts.IPv6 {
		families = append(families, 6)
	}
	for _, fam := range families {
		pool, err := planPool(reported, opts, fam)
		if err != nil {
			return Plan{}, err
		}
		if !pool.CIDR.IsValid() {
			p.problemf("no free IPv%d pod CIDR of size /%d: %s", fam, pool.Bits, pool.Note)
		}
		p.Pools = append(p.Pools, pool)
	}
	for _, fam := range families {
		ad, err := planAutodetect(ctx, reported, nodes, opts, fam)
		if err != nil {
			return Plan{}, err
		}
		if len(ad.Undetermined) > 0 {
			p.problemf("%d nodes have no intended IPv%d address to check against (first: %s: %s)", len(ad.Undetermined), fam, ad.Undetermined[0].Node, ad.Undetermined[0].Reason)
		}
		if ad.Method == "" {
			p.problemf("no IPv%d autodetection method picks the intended address on every node", fam)
		}
		p.Autodetection = append(p.Autodetection, ad)
	}
	p.Typha = typhaAdvice(p.Nodes)
	p.Firewall = firewallFor(opts, p.Typha.Recommended)
	p.Partial = len(p.Problems) > 0
	return p, nil
}

func (p *Plan) problemf(format string, args ...any) {
	p.Problems = append(p.Problems, fmt.Sprintf(format, args...))
}
