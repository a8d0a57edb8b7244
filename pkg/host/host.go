// Package host holds plain data describing a node's network the way Calico sees it: interfaces
// in the kernel's order with their addresses in kernel order, and routes. pkg/links fills it from
// netlink; autodetection, the pod CIDR check, the node report and the cluster plan read it, so
// none of them needs netlink.
package host

import "net/netip"

// Interface is one network interface.
type Interface struct {
	Index int    `json:"index"`
	Name  string `json:"name"`
	// Type is the netlink link kind: "device", "veth", "bridge", "vxlan", "ipip", "wireguard", "tun", ...
	Type string `json:"type,omitempty"`
	// Up is the administrative state (IFF_UP).
	Up  bool `json:"up,omitempty"`
	MTU int  `json:"mtu,omitempty"`
	// Addrs are the interface's addresses with their prefix length, unmasked
	// (192.168.79.128/24), in the order the kernel lists them.
	Addrs []netip.Prefix `json:"addrs,omitempty"`
	// VXLAN is set for VXLAN devices.
	VXLAN *VXLAN `json:"vxlan,omitempty"`
}

// VXLAN holds what Calico's vxlan.calico and vxlan-v6.calico must match on every node.
type VXLAN struct {
	VNI  int `json:"vni"`
	Port int `json:"port"` // UDP destination port
}

// Route is one route of the main routing table.
type Route struct {
	Dst netip.Prefix `json:"dst"`
	// Dev is the outgoing interface name; empty for blackhole and unreachable routes.
	Dev     string     `json:"dev,omitempty"`
	Gateway netip.Addr `json:"gw,omitzero"`
	// Type is "unicast", "blackhole", "unreachable", "prohibit", "local", ...
	Type string `json:"type,omitempty"`
	// Protocol is the routing protocol that installed it: "kernel", "boot", "static", "bird", a number, ...
	Protocol string `json:"proto,omitempty"`
}

// Snapshot is the network state of a node at one moment.
type Snapshot struct {
	// Interfaces in the kernel's dump order, as Go's net.Interfaces returns them (ascending
	// ifindex on current kernels).
	Interfaces []Interface `json:"interfaces"`
	Routes     []Route     `json:"routes,omitempty"`
}

// Interface returns the interface with the given name.
func (s Snapshot) Interface(name string) (Interface, bool) {
	for _, i := range s.Interfaces {
		if i.Name == name {
			return i, true
		}
	}
	return Interface{}, false
}
