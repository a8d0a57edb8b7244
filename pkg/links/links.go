// Package links reads a node's links, addresses and routes over netlink into host.Snapshot,
// streams their changes, and checks the links Calico creates (tunl0, vxlan.calico,
// wireguard.cali, cali* veths).
package links

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/calico-prep/calico-prep/pkg/host"
)

// Options selects the network namespace a Client reads.
type Options struct {
	// NetNS is the path of a network namespace file, e.g. /run/netns/x or /proc/1/ns/net;
	// empty means the namespace the agent runs in (the host's, with hostNetwork).
	NetNS string
}

// Client reads one network namespace. Its netlink sockets are opened inside that namespace
// once, so no thread has to switch namespaces afterwards.
type Client struct {
	h  *netlink.Handle
	ns *netns.NsHandle // nil for the current namespace
}

var errClosed = errors.New("links client is closed")

// New opens netlink in the namespace opts names.
func New(opts Options) (*Client, error) {
	if opts.NetNS == "" {
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return nil, fmt.Errorf("open netlink: %w", err)
		}
		return &Client{h: h}, nil
	}
	ns, err := netns.GetFromPath(opts.NetNS)
	if err != nil {
		return nil, fmt.Errorf("open network namespace %q: %w", opts.NetNS, err)
	}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("open netlink in network namespace %q: %w", opts.NetNS, err), ns.Close())
	}
	return &Client{h: h, ns: &ns}, nil
}

// Close releases the sockets. Subscriptions already made run on until their context ends.
func (c *Client) Close() error {
	if c.h == nil {
		return nil
	}
	// A closed netlink.Handle silently falls back to the calling thread's namespace, so
	// forget it rather than let a late call read the wrong namespace.
	c.h.Close()
	c.h = nil
	if c.ns != nil {
		return c.ns.Close()
	}
	return nil
}

// Snapshot reads all interfaces with their addresses, and the main-table routes, of both families.
func (c *Client) Snapshot(ctx context.Context) (host.Snapshot, error) {
	if c.h == nil {
		return host.Snapshot{}, errClosed
	}
	links, err := linkList(ctx, c.h)
	if err != nil {
		return host.Snapshot{}, err
	}
	addrs, err := addrList(ctx, c.h)
	if err != nil {
		return host.Snapshot{}, err
	}
	routes, err := routeList(ctx, c.h)
	if err != nil {
		return host.Snapshot{}, err
	}
	return buildSnapshot(links, addrs, routes), nil
}

// buildSnapshot turns three separate dumps into one snapshot. An address or route of a link
// that appeared between the dumps is dropped or left without a device name; the change event
// that follows triggers a fresh snapshot.
func buildSnapshot(links []netlink.Link, addrs []netlink.Addr, routes []netlink.Route) host.Snapshot {
	ifaces := make([]host.Interface, len(links))
	for i, l := range links {
		a := l.Attrs()
		ifaces[i] = host.Interface{Index: a.Index, Name: a.Name, Type: linkType(l), Up: a.Flags&net.FlagUp != 0, MTU: a.MTU}
		if v, ok := l.(*netlink.Vxlan); ok {
			ifaces[i].VXLAN = &host.VXLAN{VNI: v.VxlanId, Port: v.Port}
		}
	}
	// Keep the kernel's dump order: it is what Go's net.Interfaces returns and so what
	// calico-node walks (ascending ifindex on current kernels, hash-bucket order on old ones).
	pos := make(map[int]int, len(ifaces))
	for i, iface := range ifaces {
		pos[iface.Index] = i
	}
	byIndex := func(idx int) *host.Interface {
		i, ok := pos[idx]
		if !ok {
			return nil
		}
		return &ifaces[i]
	}

	for _, a := range addrs {
		iface := byIndex(a.LinkIndex)
		p, ok := prefix(a.IPNet)
		if iface == nil || !ok {
			continue
		}
		iface.Addrs = append(iface.Addrs, p)
	}

	snap := host.Snapshot{Interfaces: ifaces, Routes: make([]host.Route, 0, len(routes))}
	for _, r := range routes {
		if r.Family != netlink.FAMILY_V4 && r.Family != netlink.FAMILY_V6 {
			continue
		}
		dst, ok := prefix(r.Dst)
		if !ok {
			continue
		}
		idx, gw := r.LinkIndex, r.Gw
		// Of a multipath route only the first hop is kept: host.Route has room for one.
		if len(r.MultiPath) > 0 {
			idx, gw = r.MultiPath[0].LinkIndex, r.MultiPath[0].Gw
		}
		hr := host.Route{Dst: dst, Type: routeType(r.Type), Protocol: r.Protocol.String()}
		if iface := byIndex(idx); iface != nil && idx != 0 {
			hr.Dev = iface.Name
		}
		if a, ok := netip.AddrFromSlice(gw); ok {
			hr.Gateway = a.Unmap()
		}
		snap.Routes = append(snap.Routes, hr)
	}
	return snap
}

// prefix converts without masking: 192.168.79.128/24 stays as it is.
func prefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	p := netip.PrefixFrom(a.Unmap(), ones)
	return p, p.IsValid()
}

// linkType is netlink's kind, except that TUN and TAP devices, one kind to netlink, are told apart.
func linkType(l netlink.Link) string {
	if t, ok := l.(*netlink.Tuntap); ok {
		switch t.Mode {
		case netlink.TUNTAP_MODE_TUN:
			return "tun"
		case netlink.TUNTAP_MODE_TAP:
			return "tap"
		}
	}
	return l.Type()
}

// routeType names a route type as iproute2 does.
func routeType(t int) string {
	switch t {
	case unix.RTN_UNICAST:
		return "unicast"
	case unix.RTN_LOCAL:
		return "local"
	case unix.RTN_BROADCAST:
		return "broadcast"
	case unix.RTN_ANYCAST:
		return "anycast"
	case unix.RTN_MULTICAST:
		return "multicast"
	case unix.RTN_BLACKHOLE:
		return "blackhole"
	case unix.RTN_UNREACHABLE:
		return "unreachable"
	case unix.RTN_PROHIBIT:
		return "prohibit"
	case unix.RTN_THROW:
		return "throw"
	case unix.RTN_NAT:
		return "nat"
	case unix.RTN_XRESOLVE:
		return "xresolve"
	}
	return strconv.Itoa(t)
}
