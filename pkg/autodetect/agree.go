package autodetect

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/calico-prep/calico-prep/pkg/calico"
	"github.com/calico-prep/calico-prep/pkg/check"
	"github.com/calico-prep/calico-prep/pkg/host"
)

// AgreeCheckName is the check of calico-node's chosen address against the prediction.
const AgreeCheckName = "autodetect/calico-agrees"

// CalicoChoice is what calico-node says it chose on this node, from the annotations it writes
// on the Node (calico.Annotation*); zero values where it wrote none.
type CalicoChoice struct {
	IPv4, IPv6 netip.Prefix
	// Tunnel addresses by device: tunl0, vxlan.calico, vxlan-v6.calico.
	Tunnels map[string]netip.Addr
}

// ChoiceFromAnnotations reads calico-node's annotations; unparsable values count as absent.
func ChoiceFromAnnotations(a map[string]string) CalicoChoice {
	var c CalicoChoice
	c.IPv4, _ = netip.ParsePrefix(a[calico.AnnotationIPv4Address])
	c.IPv6, _ = netip.ParsePrefix(a[calico.AnnotationIPv6Address])
	for dev, key := range map[string]string{
		calico.IPIPDevice:    calico.AnnotationIPIPTunnelAddr,
		calico.VXLANDevice:   calico.AnnotationVXLANTunnelAddr,
		calico.VXLANv6Device: calico.AnnotationVXLANv6TunnelAddr,
	} {
		if addr, err := netip.ParseAddr(a[key]); err == nil {
			if c.Tunnels == nil {
				c.Tunnels = map[string]netip.Addr{}
			}
			c.Tunnels[dev] = addr
		}
	}
	return c
}

// FamilyMethod is an IP family with the autodetection method configured for it.
type FamilyMethod struct {
	Family int
	Method Method
	// From names where the method came from, for messages, e.g. "IP_AUTODETECTION_METHOD".
	From string
}

// NewAgreeCheck returns the read-only check autodetect/calico-agrees: once calico-node has
// annotated the Node, the address it chose for each family must be the one the configured
// method predicts on this host, and a tunnel device that exists must carry the tunnel address
// calico-node annotated. A mismatch is the classic multi-NIC mistake (calico-node took another
// interface than the operator meant), named on the node where it happened with both addresses
// and interfaces. choice returns calico-node's annotations as last seen.
func NewAgreeCheck(methods []FamilyMethod, snapshot func(ctx context.Context) (host.Snapshot, error), env func(ctx context.Context) Env, choice func() CalicoChoice) check.Check {
	return check.Check{
		Name: AgreeCheckName,
		Verify: func(ctx context.Context) check.Result {
			c := choice()
			if !c.IPv4.IsValid() && !c.IPv6.IsValid() {
				return check.Skipped("CalicoNodeNotAnnotated", "calico-node has not annotated the Node with the address it chose")
			}
			snap, err := snapshot(ctx)
			if err != nil {
				return check.Errored(fmt.Errorf("read interfaces: %w", err))
			}
			var e Env
			if env != nil {
				e = env(ctx)
			}
			var agreed, failed []string
			for _, fm := range methods {
				chosen := c.IPv4
				if fm.Family == 6 {
					chosen = c.IPv6
				}
				if !chosen.IsValid() {
					continue
				}
				chosenIface := holder(snap, chosen.Addr())
				res, err := Detect(ctx, fm.Method, fm.Family, snap.Interfaces, e)
				switch {
				case errors.Is(err, ErrNoAddress):
					failed = append(failed, fmt.Sprintf("calico-node chose %s (%s), but %s (%s) predicts no IPv%d address on this node",
						chosen, chosenIface, fm.Method, fm.From, fm.Family))
				case err != nil:
					return check.Errored(err)
				case res.CIDR.Addr() != chosen.Addr():
					failed = append(failed, fmt.Sprintf("calico-node chose %s (%s), but %s (%s) predicts %s (%s): calico-node was configured with another method, or this host's interfaces changed since it started",
						chosen, chosenIface, fm.Method, fm.From, res.CIDR, res.Interface))
				default:
					agreed = append(agreed, fmt.Sprintf("calico-node chose %s on %s, as %s predicts", chosen, chosenIface, fm.Method))
				}
			}
			devs := make([]string, 0, len(c.Tunnels))
			for dev := range c.Tunnels {
				devs = append(devs, dev)
			}
			slices.Sort(devs)
			for _, dev := range devs {
				want := c.Tunnels[dev]
				i, ok := snap.Interface(dev)
				if !ok {
					continue
				}
				if !slices.ContainsFunc(i.Addrs, func(p netip.Prefix) bool { return p.Addr() == want }) {
					failed = append(failed, fmt.Sprintf("calico-node annotated tunnel address %s, but %s has %s", want, dev, addrList(i.Addrs)))
					continue
				}
				agreed = append(agreed, fmt.Sprintf("%s has tunnel address %s", dev, want))
			}
			if len(failed) > 0 {
				return check.Failed("CalicoAddressMismatch", "%s", strings.Join(failed, "; "))
			}
			return check.Passed("%s", strings.Join(agreed, "; "))
		},
	}
}

// holder names the interface holding addr, or says that none does.
func holder(snap host.Snapshot, addr netip.Addr) string {
	for _, i := range snap.Interfaces {
		if slices.ContainsFunc(i.Addrs, func(p netip.Prefix) bool { return p.Addr() == addr }) {
			return i.Name
		}
	}
	return "on no interface of this node"
}

func addrList(ps []netip.Prefix) string {
	if len(ps) == 0 {
		return "no address"
	}
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}
