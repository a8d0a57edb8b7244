// Package cidr checks Calico's pod CIDRs against the node: its interface addresses and routes,
// the service CIDRs and kubeadm's podSubnet. calico-node checks this only when it falls back to
// its default pool, and only on the node that creates the pool; every other node is never
// checked, so an overlap shows up later as unreachable pods.
package cidr

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/calico-prep/calico-prep/pkg/calico"

	"github.com/calico-prep/calico-prep/pkg/host"
)

// Input is what the pod CIDRs are checked against besides the node.
type Input struct {
	// Pools are the IPv4 and/or IPv6 pod CIDRs (Calico IP pools).
	Pools        []netip.Prefix
	ServiceCIDRs []netip.Prefix
	// KubeadmSubnets is kubeadm's podSubnet; when given, each pool must lie inside one of
	// its family.
	KubeadmSubnets []netip.Prefix
}

// Kind says what a pool collides with.
type Kind string

const (
	WithAddress Kind = "address" // an interface address whose network overlaps the pool
	WithRoute   Kind = "route"   // a route whose destination overlaps the pool
	WithService Kind = "service" // a service CIDR that overlaps the pool
	// OutsideKubeadm means the pool is not inside kubeadm's podSubnet.
	OutsideKubeadm Kind = "kubeadm"
)

// Collision is one way a pod CIDR conflicts with the node or the cluster.
type Collision struct {
	Pool netip.Prefix `json:"pool"`
	Kind Kind         `json:"kind"`
	// Other is the interface address (with its prefix, unmasked), the route destination or
	// the service CIDR; for OutsideKubeadm the podSubnet networks are in Subnets.
	Other netip.Prefix `json:"other,omitzero"`
	// Interface is the address's interface or the route's outgoing interface.
	Interface string `json:"interface,omitempty"`
	// RouteType is set for routes that are not unicast (blackhole, unreachable, ...).
	RouteType string         `json:"routeType,omitempty"`
	Subnets   []netip.Prefix `json:"subnets,omitempty"`
}

// String returns one sentence, e.g. "pod CIDR 192.168.0.0/16 overlaps ens33 address 192.168.79.128/24".
func (c Collision) String() string {
	pool := "pod CIDR " + c.Pool.String()
	switch c.Kind {
	case WithAddress:
		return fmt.Sprintf("%s overlaps %s address %s", pool, c.Interface, c.Other)
	case WithRoute:
		s := fmt.Sprintf("%s overlaps route %s", pool, c.Other)
		if c.RouteType != "" && c.RouteType != "unicast" {
			s = fmt.Sprintf("%s overlaps %s route %s", pool, c.RouteType, c.Other)
		}
		if c.Interface != "" {
			s += " via " + c.Interface
		}
		return s
	case WithService:
		return fmt.Sprintf("%s overlaps service CIDR %s", pool, c.Other)
	case OutsideKubeadm:
		var same []string
		for _, s := range c.Subnets {
			if s.Addr().Is4() == c.Pool.Addr().Is4() {
				same = append(same, s.String())
			}
		}
		if len(same) == 0 {
			return fmt.Sprintf("%s is not inside kubeadm podSubnet %s, which has no IPv%d network", pool, joinPrefixes(c.Subnets), family(c.Pool))
		}
		return fmt.Sprintf("%s is not inside kubeadm podSubnet %s", pool, strings.Join(same, " or "))
	}
	return fmt.Sprintf("%s collides with %s %s", pool, c.Kind, c.Other)
}

// calicoInterface reports whether an interface is one Calico itself creates. Their addresses
// (tunl0, vxlan.calico and wireguard.cali take one from the pool) and the routes through them
// are Calico's own use of the pool, so a node stays ready once Calico runs.
func calicoInterface(name string) bool { return calico.IsInterface(name) }

// calicoRouteProtocol reports whether a route protocol is one Calico installs its block routes
// with: BIRD (rtproto 12, "bird") in BGP mode, Felix's 80 in VXLAN mode.
func calicoRouteProtocol(p string) bool {
	switch p {
	case "bird", "12", "80":
		return true
	}
	return false
}

// ignoredAddr reports addresses that cannot collide in a way that matters: loopback
// (127.0.0.0/8, ::1 stay on the node) and link-local (never routed; Calico itself uses
// 169.254.1.1 and fe80:: addresses on its veths).
func ignoredAddr(a netip.Addr) bool {
	return a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsMulticast() || a.IsUnspecified()
}

// Collisions returns every conflict of the pools, in this order: interface addresses (in
// the snapshot's interface order), routes, service CIDRs, kubeadm's podSubnet; within each,
// pools in the order given.
func Collisions(in Input, snap host.Snapshot) []Collision {
	var out []Collision
	// reported are the networks of colliding addresses: the kernel adds a route to each
	// address's network, and that route says nothing new.
	reported := map[netip.Prefix]bool{}
	for _, ifc := range snap.Interfaces {
		if calicoInterface(ifc.Name) {
			continue
		}
		for _, a := range ifc.Addrs {
			if ignoredAddr(a.Addr()) {
				continue
			}
			// An address collides through its network: with 10.0.0.5/8 on eth0 the node
			// sends all of 10.0.0.0/8 out of eth0, pods included.
			network := a.Masked()
			for _, pool := range in.Pools {
				if network.Overlaps(pool) {
					out = append(out, Collision{Pool: pool, Kind: WithAddress, Other: a, Interface: ifc.Name})
					reported[network] = true
				}
			}
		}
	}
	for _, r := range snap.Routes {
		// A default route overlaps everything, and pods are reached through more specific
		// routes anyway. 0.0.0.0/1 (a VPN's split default) is not skipped: it does send a
		// pool's traffic elsewhere.
		if !r.Dst.IsValid() || r.Dst.Bits() == 0 || calicoInterface(r.Dev) || reported[r.Dst.Masked()] {
			continue
		}
		if a := r.Dst.Addr(); a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsMulticast() {
			continue
		}
		for _, pool := range in.Pools {
			if !r.Dst.Overlaps(pool) {
				continue
			}
			// Calico's block routes (a blackhole for each local block, a route per remote
			// block through the uplink without encapsulation) lie inside the pool and carry
			// BIRD's or Felix's protocol. A route from them that covers more than the pool
			// is someone else's and still counts.
			if calicoRouteProtocol(r.Protocol) && pool.Bits() <= r.Dst.Bits() {
				continue
			}
			out = append(out, Collision{Pool: pool, Kind: WithRoute, Other: r.Dst, Interface: r.Dev, RouteType: r.Type})
		}
	}
	for _, svc := range in.ServiceCIDRs {
		for _, pool := range in.Pools {
			if svc.Overlaps(pool) {
				out = append(out, Collision{Pool: pool, Kind: WithService, Other: svc})
			}
		}
	}
	if len(in.KubeadmSubnets) > 0 {
		for _, pool := range in.Pools {
			if !insideAny(pool, in.KubeadmSubnets) {
				out = append(out, Collision{Pool: pool, Kind: OutsideKubeadm, Subnets: in.KubeadmSubnets})
			}
		}
	}
	return out
}

func insideAny(p netip.Prefix, nets []netip.Prefix) bool {
	for _, n := range nets {
		if n.Bits() <= p.Bits() && n.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

func family(p netip.Prefix) int {
	if p.Addr().Is4() {
		return 4
	}
	return 6
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}
