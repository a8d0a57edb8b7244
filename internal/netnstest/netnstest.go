// Package netnstest gives tests throwaway named network namespaces with real links in them, so
// netlink and D-Bus code is tested against the kernel rather than fakes, without ever moving the
// test's own threads out of the host namespace.
package netnstest

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"golang.org/x/sys/unix"

	"github.com/calico-prep/calico-prep/test/testkit"
)

// runDir is where iproute2 looks for named namespaces, so "ip netns exec NAME" works on ours.
const runDir = "/run/netns"

// NS is a named network namespace that lives until the end of the test that made it.
type NS struct {
	Name string // e.g. cpt-k3x9q2
	Path string // e.g. /run/netns/cpt-k3x9q2
	// Handle talks netlink inside the namespace from any thread.
	Handle *netlink.Handle
	fd     netns.NsHandle
}

// New creates a namespace with lo up and deletes it when t ends. Without root the test is
// skipped (testkit.NeedsRoot); as root it fails when the namespace cannot be made.
func New(t testing.TB) *NS {
	t.Helper()
	testkit.NeedsRoot(t, "creates a network namespace")
	n, err := create()
	if err != nil {
		t.Fatalf("create network namespace: %v", err)
	}
	t.Cleanup(func() {
		if err := n.delete(); err != nil {
			t.Errorf("delete network namespace %s: %v", n.Name, err)
		}
	})
	n.SetUp(t, "lo")
	return n
}

func create() (*NS, error) {
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		return nil, err
	}
	var n NS
	for {
		// Random names let parallel test binaries share /run/netns.
		n.Name = "cpt-" + strings.ToLower(rand.Text()[:6])
		n.Path = filepath.Join(runDir, n.Name)
		f, err := os.OpenFile(n.Path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if err := f.Close(); err != nil {
			return nil, errors.Join(err, os.Remove(n.Path))
		}
		break
	}
	if err := onFreshThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare: %w", err)
		}
		// The bind mount keeps the namespace alive after this thread leaves it.
		return unix.Mount("/proc/thread-self/ns/net", n.Path, "", unix.MS_BIND, "")
	}); err != nil {
		return nil, errors.Join(err, os.Remove(n.Path))
	}
	var err error
	if n.fd, err = netns.GetFromPath(n.Path); err != nil {
		return nil, errors.Join(err, n.unmount())
	}
	if n.Handle, err = netlink.NewHandleAt(n.fd, unix.NETLINK_ROUTE); err != nil {
		return nil, errors.Join(err, n.fd.Close(), n.unmount())
	}
	return &n, nil
}

func (n *NS) unmount() error {
	return errors.Join(unix.Unmount(n.Path, unix.MNT_DETACH), os.Remove(n.Path))
}

// delete drops every reference this package holds; the kernel destroys the namespace, and the
// veths with an end in it, once nothing else (a process, a socket) still holds it.
func (n *NS) delete() error {
	n.Handle.Close()
	return errors.Join(n.fd.Close(), n.unmount())
}

// Do runs fn on a locked OS thread switched into the namespace. The caller's thread never
// changes namespace; goroutines that fn starts do not run in the namespace.
func (n *NS) Do(fn func() error) error {
	return onFreshThread(func() error {
		if err := netns.Set(n.fd); err != nil {
			return fmt.Errorf("enter network namespace %s: %w", n.Name, err)
		}
		return fn()
	})
}

// onFreshThread runs fn on a locked thread of its own goroutine and puts the thread back into
// the original network namespace. If that fails the thread stays locked, and the runtime
// discards it when the goroutine ends instead of reusing it in the wrong namespace.
func onFreshThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open current network namespace: %w", err)
			return
		}
		fnErr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(fnErr, fmt.Errorf("return to original network namespace: %w", err), orig.Close())
			return
		}
		runtime.UnlockOSThread()
		errc <- errors.Join(fnErr, orig.Close())
	}()
	return <-errc
}

// Link returns the named link in the namespace.
func (n *NS) Link(t testing.TB, name string) netlink.Link {
	t.Helper()
	l, err := n.Handle.LinkByName(name)
	if err != nil {
		t.Fatalf("%s: find link %q: %v", n.Name, name, err)
	}
	return l
}

// AddVeth adds a veth pair with both ends in this namespace, both up.
func (n *NS) AddVeth(t testing.TB, name, peer string) {
	t.Helper()
	n.addLink(t, &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: peer})
	n.SetUp(t, peer)
}

// AddVethTo adds a veth pair with name here and peer in peerNS, both up.
func (n *NS) AddVethTo(t testing.TB, name string, peerNS *NS, peer string) {
	t.Helper()
	n.addLink(t, &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: peer, PeerNamespace: netlink.NsFd(peerNS.fd)})
	peerNS.SetUp(t, peer)
}

// AddBridge adds a bridge, up.
func (n *NS) AddBridge(t testing.TB, name string) {
	t.Helper()
	n.addLink(t, &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}})
}

// AddVXLAN adds a VXLAN device, up; parent, when not empty, is the link it sends through.
func (n *NS) AddVXLAN(t testing.TB, name string, vni, port int, parent string) {
	t.Helper()
	v := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: name}, VxlanId: vni, Port: port}
	if parent != "" {
		v.VtepDevIndex = n.Link(t, parent).Attrs().Index
	}
	n.addLink(t, v)
}

// AddTun adds a persistent TUN device, up. It stands in for tunl0 and wireguard.cali, whose
// drivers this test kernel lacks.
func (n *NS) AddTun(t testing.TB, name string) {
	t.Helper()
	// TUN devices are made by opening /dev/net/tun, which creates them in the namespace of the
	// calling thread, not the handle's; so this runs inside the namespace. Queues 0 makes
	// netlink close its fds after marking the device persistent.
	err := n.Do(func() error {
		return netlink.LinkAdd(&netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: name}, Mode: netlink.TUNTAP_MODE_TUN})
	})
	if err != nil {
		t.Fatalf("%s: add tun %q: %v", n.Name, name, err)
	}
	n.SetUp(t, name)
}

func (n *NS) addLink(t testing.TB, l netlink.Link) {
	t.Helper()
	if err := n.Handle.LinkAdd(l); err != nil {
		t.Fatalf("%s: add %s %q: %v", n.Name, l.Type(), l.Attrs().Name, err)
	}
	n.SetUp(t, l.Attrs().Name)
}

// SetUp sets the link administratively up.
func (n *NS) SetUp(t testing.TB, name string) {
	t.Helper()
	if err := n.Handle.LinkSetUp(n.Link(t, name)); err != nil {
		t.Fatalf("%s: set %q up: %v", n.Name, name, err)
	}
}

// SetDown sets the link administratively down.
func (n *NS) SetDown(t testing.TB, name string) {
	t.Helper()
	if err := n.Handle.LinkSetDown(n.Link(t, name)); err != nil {
		t.Fatalf("%s: set %q down: %v", n.Name, name, err)
	}
}

// SetMTU sets the link's MTU.
func (n *NS) SetMTU(t testing.TB, name string, mtu int) {
	t.Helper()
	if err := n.Handle.LinkSetMTU(n.Link(t, name), mtu); err != nil {
		t.Fatalf("%s: set MTU of %q to %d: %v", n.Name, name, mtu, err)
	}
}

// AddAddr adds an address with its prefix, e.g. "192.168.79.128/24" or "fd00::5/64". IPv6
// addresses skip duplicate address detection so they are usable at once.
func (n *NS) AddAddr(t testing.TB, name, cidr string) {
	t.Helper()
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		t.Fatalf("parse address %q: %v", cidr, err)
	}
	if a.IP.To4() == nil {
		a.Flags = unix.IFA_F_NODAD
	}
	if err := n.Handle.AddrAdd(n.Link(t, name), a); err != nil {
		t.Fatalf("%s: add address %s to %q: %v", n.Name, cidr, name, err)
	}
}

// AddRoute adds a unicast route to dst ("default" for 0.0.0.0/0) in the main table, through
// dev and/or via gw; either may be empty. Use Handle for anything more unusual.
func (n *NS) AddRoute(t testing.TB, dst, dev, gw string) {
	t.Helper()
	r := netlink.Route{Dst: n.parseDst(t, dst)}
	if dev != "" {
		r.LinkIndex = n.Link(t, dev).Attrs().Index
	}
	if gw != "" {
		if r.Gw = net.ParseIP(gw); r.Gw == nil {
			t.Fatalf("parse gateway %q", gw)
		}
	}
	if err := n.Handle.RouteAdd(&r); err != nil {
		t.Fatalf("%s: add route %s dev %q via %q: %v", n.Name, dst, dev, gw, err)
	}
}

// AddBlackhole adds a blackhole route, as Calico does for each IPAM block it owns.
func (n *NS) AddBlackhole(t testing.TB, dst string) {
	t.Helper()
	r := netlink.Route{Dst: n.parseDst(t, dst), Type: unix.RTN_BLACKHOLE}
	if err := n.Handle.RouteAdd(&r); err != nil {
		t.Fatalf("%s: add blackhole route %s: %v", n.Name, dst, err)
	}
}

func (n *NS) parseDst(t testing.TB, dst string) *net.IPNet {
	t.Helper()
	if dst == "default" {
		dst = "0.0.0.0/0"
	}
	_, p, err := net.ParseCIDR(dst)
	if err != nil {
		t.Fatalf("parse route destination %q: %v", dst, err)
	}
	return p
}
