// Package calico holds the facts about Calico that calico-prep relies on, each in one place: the
// interfaces Calico creates, the ports and protocols its nodes exchange, the environment variables
// calico-node reads, and its Typha sizing. It imports nothing but the standard library.
package calico

import (
	"slices"
	"strings"
)

// The interfaces calico-node and its CNI plugin create on a node
// (https://docs.tigera.io/calico/latest/operations/troubleshoot/troubleshooting#configure-networkmanager).
const (
	// WorkloadPrefix begins every workload veth's host side: "cali" and 11 hex digits.
	WorkloadPrefix = "cali"
	// WorkloadKind is the workload interface's link type as netlink names it.
	WorkloadKind = "veth"
	// IPIPDevice is the IP-in-IP tunnel.
	IPIPDevice = "tunl0"
	// VXLANDevice and VXLANv6Device are the VXLAN tunnels for IPv4 and IPv6.
	VXLANDevice   = "vxlan.calico"
	VXLANv6Device = "vxlan-v6.calico"
	// WireGuardDevice and WireGuardv6Device are the WireGuard devices for IPv4 and IPv6.
	WireGuardDevice   = "wireguard.cali"
	WireGuardv6Device = "wg-v6.cali"
)

// Tunnel is one tunnel device Calico creates.
type Tunnel struct {
	Device string
	// Kind is the device's link type as netlink names it: ipip, vxlan or wireguard.
	Kind string
	// Overhead is what the encapsulation adds to each packet; the device's MTU must be at most
	// the uplink's minus this. Calico's MTU auto-detection uses the same numbers
	// (https://docs.tigera.io/calico/latest/networking/configuring/mtu).
	Overhead int
	// Encapsulation is the feature that needs the device, for messages, e.g. "IPv6 VXLAN".
	Encapsulation string
	IPv6          bool
}

// Tunnels returns Calico's tunnel devices.
func Tunnels() []Tunnel {
	return []Tunnel{
		{Device: IPIPDevice, Kind: "ipip", Overhead: 20, Encapsulation: "IPIP"},
		{Device: VXLANDevice, Kind: "vxlan", Overhead: 50, Encapsulation: "VXLAN"},
		{Device: VXLANv6Device, Kind: "vxlan", Overhead: 70, Encapsulation: "IPv6 VXLAN", IPv6: true},
		{Device: WireGuardDevice, Kind: "wireguard", Overhead: 60, Encapsulation: "WireGuard"},
		{Device: WireGuardv6Device, Kind: "wireguard", Overhead: 80, Encapsulation: "IPv6 WireGuard", IPv6: true},
	}
}

// TunnelDevices returns the names of Calico's tunnel devices.
func TunnelDevices() []string {
	var out []string
	for _, t := range Tunnels() {
		out = append(out, t.Device)
	}
	return out
}

// IsInterface reports whether name is an interface Calico creates: a workload veth or a tunnel
// device.
func IsInterface(name string) bool {
	return strings.HasPrefix(name, WorkloadPrefix) || slices.Contains(TunnelDevices(), name)
}

// UnmanagedGlobs are the interface-name globs Calico's documentation tells NetworkManager to
// leave alone (tunl* rather than tunl0, as documented).
func UnmanagedGlobs() []string {
	return append([]string{WorkloadPrefix + "*", "tunl*"}, slices.DeleteFunc(TunnelDevices(), func(d string) bool { return d == IPIPDevice })...)
}

// DefaultInterfaceExclusions returns the interface-name regexes that calico-node's first-found
// and skip-interface= never pick from (DEFAULT_INTERFACES_TO_EXCLUDE in calico-node's
// node/pkg/lifecycle/startup/autodetection). Matched unanchored like every calico-node interface
// regex, so "^lo" also excludes lo1 and loop0. Older releases lack ^podman.*, ^br-.* or
// ^nodelocaldns.*; this is the newest list.
func DefaultInterfaceExclusions() []string {
	return []string{
		`^docker.*`, `^cbr.*`, `^dummy.*`, `^podman.*`, `^virbr.*`, `^lxcbr.*`, `^veth.*`, `^lo`,
		`^br-.*`, `^cali.*`, `^tunl.*`, `^flannel.*`, `^kube-ipvs.*`, `^cni.*`, `^vxlan\.calico.*`,
		`^vxlan-v6\.calico.*`, `^wireguard\.cali.*`, `^wg-v6\.cali.*`, `^nodelocaldns.*`,
	}
}
