// Package plantest builds synthetic clusters for the tests and benchmarks of the cluster plan:
// nodes with the network layouts met in practice, each with the address Calico should pick on
// it, so a test can check a plan against the layouts rather than against expected strings.
package plantest

import (
	"fmt"
	"net/netip"

	"github.com/calico-prep/calico-prep/pkg/host"
	"github.com/calico-prep/calico-prep/pkg/report"
)

// Layout is a kind of node network.
type Layout string

const (
	// Seed is the seed guide's VM: ens33 on 192.168.79.0/24 with libvirt's virbr0 on
	// 192.168.122.1/24 and docker0 on 172.17.0.1/16. Calico's default pool 192.168.0.0/16
	// collides with both of its 192.168 networks.
	Seed Layout = "seed"
	// MultiNIC is a server with the node network on eth0 and a storage network on eth1; on
	// odd racks eth1 was created last, so first-found (highest ifindex) picks the storage address.
	MultiNIC Layout = "multi-nic"
	// SingleNIC is a plain server on 10.0.<rack>.0/24.
	SingleNIC Layout = "single-nic"
	// Bond is a server whose node address is on bond0.100 (a VLAN on a bond) with a docker
	// user network br-<id> on 172.18.0.1/16.
	Bond Layout = "bond"
	// Mgmt is a host on a 172.16.<n>.0/24 management network, which rules out the first
	// /16 of 172.16.0.0/12.
	Mgmt Layout = "mgmt"
)

// Mix is the order in which Cluster deals layouts out.
var Mix = []Layout{Seed, MultiNIC, SingleNIC, Seed, MultiNIC, Bond, SingleNIC, MultiNIC, Mgmt, Seed}

// Host is one synthetic node.
type Host struct {
	Name string
	// InternalIPs are the Node's InternalIPs: IPv4, then IPv6.
	InternalIPs  []netip.Addr
	ControlPlane bool
	Layout       Layout
	// Intended is the interface whose address Calico should take, with that address per family.
	Intended string
	Addr4    netip.Prefix
	Addr6    netip.Prefix
	Snapshot host.Snapshot
}

// Report returns the host's report as the agent would write it.
func (h Host) Report() report.Node {
	return report.Node{V: report.Version, Ready: true, Host: report.HostOf(h.Snapshot)}
}

// Annotation returns the encoded report.
func (h Host) Annotation() string {
	s, err := h.Report().Encode()
	if err != nil {
		panic(err) // plain data always encodes
	}
	return s
}

// Cluster returns n hosts named <prefix>-0000, … with layouts dealt from Mix; the first is a
// control-plane node.
func Cluster(prefix string, n int) []Host {
	hosts := make([]Host, n)
	for i := range hosts {
		hosts[i] = New(fmt.Sprintf("%s-%04d", prefix, i), Mix[i%len(Mix)], i)
	}
	if n > 0 {
		hosts[0].ControlPlane = true
	}
	return hosts
}

// New returns host number i of a layout; i picks its rack and its address in the rack.
func New(name string, l Layout, i int) Host {
	rack, slot := i/200%250, 10+i%200
	h := Host{Name: name, Layout: l}
	b := builder{}
	b.iface("lo", "device", "127.0.0.1/8", "::1/128")
	switch l {
	case Seed:
		h.Intended = "ens33"
		// Past 240 hosts the lab grows into the next /24s.
		net := 79 + i/240%100
		h.Addr4 = pfx("192.168.%d.%d/24", net, 10+i%240)
		h.Addr6 = pfx("2001:db8:%x::%x/64", net, i+1)
		b.iface("ens33", "device", h.Addr4.String(), h.Addr6.String(), "fe80::20c:29ff:fe3a:1b2c/64")
		b.iface("virbr0", "bridge", "192.168.122.1/24")
		b.iface("virbr0-nic", "tun")
		b.iface("docker0", "bridge", "172.17.0.1/16")
		b.route("0.0.0.0/0", "ens33", fmt.Sprintf("192.168.%d.2", net), "dhcp")
		b.route("::/0", "ens33", fmt.Sprintf("2001:db8:%x::1", net), "ra")
	case MultiNIC, SingleNIC:
		h.Intended = "eth0"
		h.Addr4 = pfx("10.0.%d.%d/24", rack, slot)
		h.Addr6 = pfx("2001:db8:0:%x::%x/64", rack, slot)
		storage4, storage6 := pfx("10.200.%d.%d/24", rack, slot), pfx("2001:db8:200:%x::%x/64", rack, slot)
		if l == MultiNIC && rack%2 == 0 && i%2 == 0 {
			// eth1 came up before eth0 here: first-found happens to be right.
			b.iface("eth1", "device", storage4.String(), storage6.String())
			b.iface("eth0", "device", h.Addr4.String(), h.Addr6.String())
		} else {
			b.iface("eth0", "device", h.Addr4.String(), h.Addr6.String())
			if l == MultiNIC {
				b.iface("eth1", "device", storage4.String(), storage6.String())
			}
		}
		b.route("0.0.0.0/0", "eth0", fmt.Sprintf("10.0.%d.1", rack), "static")
		b.route("::/0", "eth0", fmt.Sprintf("2001:db8:0:%x::1", rack), "static")
	case Bond:
		h.Intended = "bond0.100"
		h.Addr4 = pfx("10.1.%d.%d/24", rack, slot)
		h.Addr6 = pfx("2001:db8:1:%x::%x/64", rack, slot)
		b.iface("ens3f0", "device")
		b.iface("ens3f1", "device")
		b.iface("bond0", "bond")
		b.iface("bond0.100", "vlan", h.Addr4.String(), h.Addr6.String())
		b.iface("br-3f2a9c1d07be", "bridge", "172.18.0.1/16")
		b.route("0.0.0.0/0", "bond0.100", fmt.Sprintf("10.1.%d.1", rack), "static")
		b.route("::/0", "bond0.100", fmt.Sprintf("2001:db8:1:%x::1", rack), "static")
	case Mgmt:
		h.Intended = "eno1"
		h.Addr4 = pfx("172.16.%d.%d/24", rack, slot)
		h.Addr6 = pfx("2001:db8:16:%x::%x/64", rack, slot)
		b.iface("eno1", "device", h.Addr4.String(), h.Addr6.String())
		b.route("0.0.0.0/0", "eno1", fmt.Sprintf("172.16.%d.1", rack), "static")
		b.route("::/0", "eno1", fmt.Sprintf("2001:db8:16:%x::1", rack), "static")
	default:
		panic(fmt.Sprintf("unknown layout %q", l))
	}
	h.InternalIPs = []netip.Addr{h.Addr4.Addr(), h.Addr6.Addr()}
	h.Snapshot = b.snap
	return h
}

type builder struct{ snap host.Snapshot }

// iface adds an interface with the next ifindex and a kernel route to each address's network.
func (b *builder) iface(name, typ string, addrs ...string) {
	ifc := host.Interface{Index: len(b.snap.Interfaces) + 1, Name: name, Type: typ, Up: true, MTU: 1500}
	for _, a := range addrs {
		p := netip.MustParsePrefix(a)
		ifc.Addrs = append(ifc.Addrs, p)
		if !p.Addr().IsLoopback() && !p.Addr().IsLinkLocalUnicast() {
			b.snap.Routes = append(b.snap.Routes, host.Route{Dst: p.Masked(), Dev: name, Type: "unicast", Protocol: "kernel"})
		}
	}
	b.snap.Interfaces = append(b.snap.Interfaces, ifc)
}

func (b *builder) route(dst, dev, gw, proto string) {
	b.snap.Routes = append(b.snap.Routes, host.Route{Dst: netip.MustParsePrefix(dst), Dev: dev, Gateway: netip.MustParseAddr(gw), Type: "unicast", Protocol: proto})
}

func pfx(format string, args ...any) netip.Prefix {
	return netip.MustParsePrefix(fmt.Sprintf(format, args...))
}
