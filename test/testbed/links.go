package testbed

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/calico-prep/calico-prep/internal/netnstest"
)

const (
	// podGateway is the link-local next hop Calico gives every pod; the cali veth answers
	// ARP for it by proxy.
	podGateway = "169.254.1.1"
	// caliMAC is the address Calico gives every host-side veth.
	caliMAC = "ee:ee:ee:ee:ee:ee"
)

// makeLinks wires the uplink to its far side and, with Calico, adds Calico's links.
func (n *Node) makeLinks(ctx context.Context) error {
	lan := filepath.Base(n.lanNS())
	if err := ipBatch(ctx, n.NetNS,
		"link set lo up",
		fmt.Sprintf("link add %s type veth peer name eth0 netns %s", n.Uplink, lan),
	); err != nil {
		return fmt.Errorf("create uplink: %w", err)
	}
	gw := netip.PrefixFrom(n.Gateway, n.UplinkAddr.Bits())
	if err := ipBatch(ctx, n.lanNS(),
		fmt.Sprintf("address add %s dev eth0", gw),
		"link set eth0 up",
	); err != nil {
		return fmt.Errorf("configure uplink peer: %w", err)
	}
	if err := ipBatch(ctx, n.NetNS,
		fmt.Sprintf("address add %s dev %s", n.UplinkAddr, n.Uplink),
		fmt.Sprintf("link set %s up", n.Uplink),
		fmt.Sprintf("route add default via %s dev %s", n.Gateway, n.Uplink),
	); err != nil {
		return fmt.Errorf("configure uplink: %w", err)
	}
	if !n.opts.Calico {
		return nil
	}
	if err := n.makeTunl(ctx); err != nil {
		return err
	}
	if err := ipBatch(ctx, n.NetNS,
		fmt.Sprintf("link add vxlan.calico type vxlan id 4096 dstport 4789 local %s dev %s", n.UplinkAddr.Addr(), n.Uplink),
		"link set vxlan.calico mtu 1450 up",
	); err != nil {
		return fmt.Errorf("create vxlan.calico: %w", err)
	}
	return n.AddCaliVeth(ctx, CaliVeth)
}

// makeTunl makes tunl0 with the first address of the pod CIDR, as Calico's IPIP mode does.
// Where the kernel has ipip, every new namespace already has its fallback tunl0.
func (n *Node) makeTunl(ctx context.Context) error {
	out, err := ExecNS(ctx, n.NetNS, "ip", "-d", "-o", "link", "show", "tunl0")
	switch {
	case err == nil && strings.Contains(string(out), " ipip "):
	case err == nil:
		return fmt.Errorf("create tunl0: a tunl0 that is not ipip exists already: %s", out)
	default:
		err := ipBatch(ctx, n.NetNS, "link add tunl0 type ipip")
		if err != nil && !strings.Contains(err.Error(), "Unknown device type") {
			return fmt.Errorf("create tunl0: %w", err)
		}
		if err != nil {
			if err := ipBatch(ctx, n.NetNS, "tuntap add dev tunl0 mode tun"); err != nil {
				return fmt.Errorf("create TUN stand-in for tunl0: %w", err)
			}
			n.TunlIsStandIn = true
		}
	}
	addr, err := nthAddr(n.opts.PodCIDR, 1)
	if err != nil {
		return err
	}
	if err := ipBatch(ctx, n.NetNS,
		fmt.Sprintf("address add %s/32 dev tunl0", addr),
		"link set tunl0 mtu 1480 up",
	); err != nil {
		return fmt.Errorf("configure tunl0: %w", err)
	}
	return nil
}

// AddCaliVeth adds a veth named name (a cali* name, for Calico's patterns to match) whose
// peer "eth0" sits in a fresh pod namespace with the next pod address, routed as Calico
// routes a workload. The pod is appended to Pods.
func (n *Node) AddCaliVeth(ctx context.Context, name string) error {
	if err := checkLinkName(name); err != nil {
		return fmt.Errorf("invalid veth name %q: %w", name, err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.downed {
		return fmt.Errorf("add veth %q: node %s is down", name, n.Name)
	}
	addr, err := nthAddr(n.opts.PodCIDR, 2+n.podCount)
	if err != nil {
		return fmt.Errorf("add veth %q: %w", name, err)
	}
	podNS := filepath.Join(netnsDir, fmt.Sprintf("cpt-%s-%s-pod%d", n.Name, n.id, n.podCount))
	if err := netnstest.Pin(podNS); err != nil {
		return fmt.Errorf("add veth %q: %w", name, err)
	}
	n.owned = append(n.owned, podNS)
	n.podCount++
	if err := ipBatch(ctx, n.NetNS,
		fmt.Sprintf("link add %s type veth peer name eth0 netns %s", name, filepath.Base(podNS)),
		fmt.Sprintf("link set %s address %s", name, caliMAC),
		fmt.Sprintf("link set %s up", name),
		fmt.Sprintf("route add %s/32 dev %s scope link", addr, name),
	); err != nil {
		return fmt.Errorf("add veth %q: %w", name, err)
	}
	if err := writeSysctl(n.NetNS, "net/ipv4/conf/"+name+"/proxy_arp", "1"); err != nil {
		return fmt.Errorf("add veth %q: %w", name, err)
	}
	if err := ipBatch(ctx, podNS,
		"link set lo up",
		fmt.Sprintf("address add %s/32 dev eth0", addr),
		"link set eth0 up",
		fmt.Sprintf("route add %s dev eth0 scope link", podGateway),
		// A static entry, as Calico's CNI plugin adds: proxy ARP answers only where
		// forwarding is on, and a fresh node has it off.
		fmt.Sprintf("neigh add %s lladdr %s dev eth0 nud permanent", podGateway, caliMAC),
		fmt.Sprintf("route add default via %s dev eth0", podGateway),
	); err != nil {
		return fmt.Errorf("configure pod of veth %q: %w", name, err)
	}
	n.Pods = append(n.Pods, PodLink{Veth: name, NetNS: podNS, Addr: addr})
	return nil
}

// RestorePodRoutes brings every cali veth up and puts back its pod's route, as Felix does.
// NetworkManager removes the route while it manages the veth (the breakage calico-prep
// prevents), so tests that forward to pods on a node with NetworkManager call this once the
// veth is unmanaged.
func (n *Node) RestorePodRoutes(ctx context.Context) error {
	n.mu.Lock()
	pods := append([]PodLink(nil), n.Pods...)
	n.mu.Unlock()
	var lines []string
	for _, p := range pods {
		lines = append(lines,
			fmt.Sprintf("link set %s up", p.Veth),
			fmt.Sprintf("route replace %s/32 dev %s scope link", p.Addr, p.Veth))
	}
	if len(lines) == 0 {
		return nil
	}
	if err := ipBatch(ctx, n.NetNS, lines...); err != nil {
		return fmt.Errorf("restore pod routes: %w", err)
	}
	return nil
}

// Pod returns the namespace and address of the pod behind the node's first cali veth, or
// zero values when the node has none (Options.Calico unset and no AddCaliVeth).
func Pod(n *Node) (podNS string, podAddr netip.Addr) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.Pods) == 0 {
		return "", netip.Addr{}
	}
	return n.Pods[0].NetNS, n.Pods[0].Addr
}

// Connect joins two nodes with a veth pair, "peer0" in each for their first connection
// ("peer1", … for further ones), addressed aAddr and bAddr, which must share a network. The
// links fall in firewalld's default zone. The pair is removed in t.Cleanup.
func Connect(t testing.TB, a, b *Node, aAddr, bAddr netip.Prefix) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	aLink, err := connect(ctx, a, b, aAddr, bAddr)
	if err != nil {
		t.Fatalf("connect nodes %s and %s: %v", a.Name, b.Name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		a.mu.Lock()
		downed := a.downed
		a.mu.Unlock()
		if downed {
			return // the pair went with a's namespace
		}
		if _, err := a.Exec(ctx, "ip", "link", "del", aLink); err != nil {
			t.Errorf("disconnect nodes %s and %s: %v", a.Name, b.Name, err)
		}
	})
}

func connect(ctx context.Context, a, b *Node, aAddr, bAddr netip.Prefix) (string, error) {
	switch {
	case a == b:
		return "", errors.New("a node cannot be connected to itself")
	case !aAddr.Addr().Is4() || !bAddr.Addr().Is4():
		return "", fmt.Errorf("invalid addresses %q and %q: want IPv4", aAddr, bAddr)
	case aAddr.Masked() != bAddr.Masked() || aAddr.Addr() == bAddr.Addr():
		return "", fmt.Errorf("invalid addresses %q and %q: want two addresses of one network", aAddr, bAddr)
	}
	aLink, bLink := a.nextPeer(), b.nextPeer()
	if err := ipBatch(ctx, a.NetNS,
		fmt.Sprintf("link add %s type veth peer name %s netns %s", aLink, bLink, filepath.Base(b.NetNS)),
		fmt.Sprintf("address add %s dev %s", aAddr, aLink),
		fmt.Sprintf("link set %s up", aLink),
	); err != nil {
		return "", err
	}
	if err := ipBatch(ctx, b.NetNS,
		fmt.Sprintf("address add %s dev %s", bAddr, bLink),
		fmt.Sprintf("link set %s up", bLink),
	); err != nil {
		return "", err
	}
	return aLink, nil
}

func (n *Node) nextPeer() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	name := fmt.Sprintf("peer%d", n.peers)
	n.peers++
	return name
}
