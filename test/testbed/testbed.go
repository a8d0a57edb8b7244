package testbed

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/calico-prep/calico-prep/test/testkit"
)

// Options say what a node holds. The zero value is a bare node named "node" with the uplink
// ens33 192.168.79.128/24.
type Options struct {
	// Name is the node name, used in the namespace and directory names; a lower-case DNS label
	// of at most 32 characters. Default "node".
	Name string
	// Firewalld starts real firewalld (nftables backend) in the node.
	Firewalld bool
	// NetworkManager starts real NetworkManager in the node; Start then waits until the uplink
	// (and the cali veth) are managed.
	NetworkManager bool
	// Uplink is the uplink's name. Default "ens33".
	Uplink string
	// UplinkAddr is the uplink's address. Default 192.168.79.128/24; give each node of a
	// multi-node test its own.
	UplinkAddr netip.Prefix
	// Calico also creates Calico's links: a cali veth with a pod behind it, tunl0 and
	// vxlan.calico.
	Calico bool
	// PodCIDR is where tunl0's address (the first host) and pod addresses (the following
	// ones) come from. Default 10.65.<last byte of UplinkAddr>.0/24.
	PodCIDR netip.Prefix
	// Debug raises the daemons' log levels (firewalld --debug, NetworkManager DEBUG).
	Debug bool
	// Networkd starts Debian's systemd-networkd in the node.
	Networkd bool
	// FirewalldBackend is firewalld's FirewallBackend, nftables or iptables; "" means
	// $CALICO_PREP_TESTBED_FIREWALLD_BACKEND, else nftables.
	FirewalldBackend string
	// FirewalldVersion and NetworkManagerVersion run a daemon built from that upstream release
	// (hack/build-upstream.sh) in place of Debian's package, in the node's mount namespace
	// only; "debian" is Debian's package. "" means $CALICO_PREP_TESTBED_FIREWALLD or
	// $CALICO_PREP_TESTBED_NETWORKMANAGER, else Debian's.
	FirewalldVersion, NetworkManagerVersion string
}

// Node is one sandboxed node. Its exported fields are fixed once Start returns, except Pods,
// which AddCaliVeth appends to.
type Node struct {
	Name string `json:"name"`
	// NetNS is the path of the node's network namespace, e.g. /run/netns/cpt-node-ab12cd.
	NetNS string `json:"netns"`
	// BusAddress is the private system bus, the value for DBUS_SYSTEM_BUS_ADDRESS.
	BusAddress string `json:"busAddress"`
	// Dir is the node's private root on the host side.
	Dir string `json:"dir"`
	// NMConfDir is what NetworkManager in this node reads as /etc/NetworkManager/conf.d.
	NMConfDir string `json:"nmConfDir"`
	// FirewalldDir is what firewalld in this node reads and writes as /etc/firewalld.
	FirewalldDir string `json:"firewalldDir"`
	// NetworkdConfDir is what systemd-networkd in this node reads as /etc/systemd/network; its
	// networkd.conf and networkd.conf.d are next to it.
	NetworkdConfDir string `json:"networkdConfDir"`
	// FirewalldVersion, NetworkManagerVersion ("debian" for Debian's package) and
	// FirewalldBackend say which daemons the node runs.
	FirewalldVersion      string `json:"firewalldVersion"`
	NetworkManagerVersion string `json:"networkManagerVersion"`
	FirewalldBackend      string `json:"firewalldBackend"`
	// StateDir is a private /var/lib/calico-prep for the agent.
	StateDir string `json:"stateDir"`
	// LogDir holds dbus.log, firewalld.log and NetworkManager.log.
	LogDir     string       `json:"logDir"`
	Uplink     string       `json:"uplink"`
	UplinkAddr netip.Prefix `json:"uplinkAddr"`
	// Gateway is the address on the far end of the uplink and the node's default route.
	Gateway netip.Addr `json:"gateway"`
	// TunlIsStandIn is true when tunl0 is a TUN device because the kernel has no ipip driver.
	TunlIsStandIn bool `json:"tunlIsStandIn"`
	// Pods are the pod namespaces behind the node's cali veths, in creation order.
	Pods []PodLink `json:"pods,omitempty"`

	opts     Options
	id       string
	netnsIno uint64
	// owned are the namespaces this node created, node namespace first.
	owned []string
	// madeNetnsDir is set when this node created /run/netns, so that Down removes it again.
	madeNetnsDir bool
	podCount     int

	mu      sync.Mutex
	bus     *dbus.Conn
	daemons map[string]*daemon
	peers   int
	downed  bool
	// phases are start-up durations by phase, for the benchmark.
	phases []phase
}

// PodLink is a pod namespace behind a cali veth.
type PodLink struct {
	// Veth is the host-side link in the node, e.g. "cali0a1b2c3d4e5".
	Veth string `json:"veth"`
	// NetNS is the path of the pod's network namespace; its link is "eth0".
	NetNS string     `json:"netns"`
	Addr  netip.Addr `json:"addr"`
}

type phase struct {
	name string
	took time.Duration
}

// CaliVeth is the cali veth Options.Calico creates.
const CaliVeth = "cali0a1b2c3d4e5"

const (
	defaultName   = "node"
	defaultUplink = "ens33"
	netnsDir      = "/run/netns"
	// maxSocketPath is sun_path's size less its terminating NUL.
	maxSocketPath = 107
)

var (
	nameRE           = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$`)
	defaultUplinkNet = netip.MustParsePrefix("192.168.79.128/24")
)

// Up starts a node for a test, fails the test if anything cannot start, and tears the node
// down in t.Cleanup. When the test failed, the tails of the daemons' logs are logged first.
func Up(t testing.TB, opts Options) *Node {
	t.Helper()
	testkit.NeedsRoot(t, "starts a sandboxed node: network and mount namespaces, a private system bus and its daemons")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("start test node: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, name := range []string{"dbus", "firewalld", "NetworkManager", "networkd"} {
				if tail := n.LogTail(name, 40); tail != "" {
					t.Logf("node %s: tail of %s.log:\n%s", n.Name, name, tail)
				}
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := n.Down(ctx); err != nil {
			t.Errorf("tear down test node: %v", err)
		}
	})
	return n
}

// Start starts a node. On error everything it made is torn down again; on success the caller
// calls Down.
func Start(ctx context.Context, opts Options) (n *Node, err error) {
	opts, err = opts.withEnv(os.Getenv).withDefaults()
	if err != nil {
		return nil, err
	}
	var idb [3]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return nil, fmt.Errorf("make node id: %w", err)
	}
	n = &Node{
		Name:       opts.Name,
		Uplink:     opts.Uplink,
		UplinkAddr: opts.UplinkAddr,
		Gateway:    gatewayOf(opts.UplinkAddr),
		opts:       opts,

		FirewalldVersion:      opts.FirewalldVersion,
		NetworkManagerVersion: opts.NetworkManagerVersion,
		FirewalldBackend:      opts.FirewalldBackend,
		id:                    hex.EncodeToString(idb[:]),
		daemons:               map[string]*daemon{},
	}
	defer func() {
		if err != nil {
			// The caller's context may be what failed; teardown still needs time.
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			if derr := n.Down(dctx); derr != nil {
				err = errors.Join(err, fmt.Errorf("tear down after failed start: %w", derr))
			}
			n = nil
		}
	}()
	steps := []struct {
		name string
		run  func(context.Context) error
	}{
		{"files", n.makeFiles},
		{"netns", n.makeNamespaces},
		{"links", n.makeLinks},
		{"dbus", n.startBus},
		{"daemons", n.startDaemons},
	}
	for _, s := range steps {
		began := time.Now()
		if err := s.run(ctx); err != nil {
			return n, fmt.Errorf("start node %q: %w", opts.Name, err)
		}
		n.phases = append(n.phases, phase{s.name, time.Since(began)})
	}
	return n, nil
}

// Validate reports the first invalid option as one line naming the field and its value.
func (o Options) Validate() error {
	_, err := o.withDefaults()
	return err
}

func (o Options) withDefaults() (Options, error) {
	if o.Name == "" {
		o.Name = defaultName
	}
	if !nameRE.MatchString(o.Name) {
		return o, fmt.Errorf("invalid Options.Name %q: want a lower-case DNS label of at most 32 characters", o.Name)
	}
	if o.Uplink == "" {
		o.Uplink = defaultUplink
	}
	if err := checkLinkName(o.Uplink); err != nil {
		return o, fmt.Errorf("invalid Options.Uplink %q: %w", o.Uplink, err)
	}
	if o.Uplink == CaliVeth || o.Uplink == "tunl0" || o.Uplink == "vxlan.calico" {
		return o, fmt.Errorf("invalid Options.Uplink %q: that name belongs to a Calico link", o.Uplink)
	}
	if !o.UplinkAddr.IsValid() {
		o.UplinkAddr = defaultUplinkNet
	}
	if !o.UplinkAddr.Addr().Is4() || o.UplinkAddr.Bits() < 1 || o.UplinkAddr.Bits() > 30 {
		return o, fmt.Errorf("invalid Options.UplinkAddr %q: want an IPv4 address with a prefix of 1 to 30 bits", o.UplinkAddr)
	}
	if o.UplinkAddr.Addr() == o.UplinkAddr.Masked().Addr() || o.UplinkAddr.Addr() == lastAddr(o.UplinkAddr) {
		return o, fmt.Errorf("invalid Options.UplinkAddr %q: the network or broadcast address", o.UplinkAddr)
	}
	if !o.PodCIDR.IsValid() {
		b := o.UplinkAddr.Addr().As4()
		o.PodCIDR = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 65, b[3], 0}), 24)
	}
	if !o.PodCIDR.Addr().Is4() || o.PodCIDR.Bits() > 29 || o.PodCIDR.Masked() != o.PodCIDR {
		return o, fmt.Errorf("invalid Options.PodCIDR %q: want an IPv4 network of at most 29 bits", o.PodCIDR)
	}
	if o.PodCIDR.Overlaps(o.UplinkAddr.Masked()) {
		return o, fmt.Errorf("invalid Options.PodCIDR %q: overlaps the uplink network %s", o.PodCIDR, o.UplinkAddr.Masked())
	}
	return o.variantDefaults()
}

func checkLinkName(name string) error {
	if len(name) == 0 || len(name) > 15 {
		return errors.New("want 1 to 15 characters")
	}
	for _, r := range name {
		if r <= ' ' || r == '/' || r == ':' || r > '~' {
			return fmt.Errorf("character %q not allowed", r)
		}
	}
	return nil
}

// gatewayOf is the first host of the uplink's network, or its last when that is the uplink.
func gatewayOf(p netip.Prefix) netip.Addr {
	gw := p.Masked().Addr().Next()
	if gw == p.Addr() {
		gw = lastAddr(p).Prev()
	}
	return gw
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// nthAddr is the n-th address after p's network address.
func nthAddr(p netip.Prefix, n int) (netip.Addr, error) {
	a := p.Masked().Addr()
	for range n {
		a = a.Next()
	}
	if !p.Contains(a) || a == lastAddr(p) {
		return netip.Addr{}, fmt.Errorf("pod CIDR %s has no host number %d", p, n)
	}
	return a, nil
}

// makeFiles lays out Dir: the daemons' private roots, their configuration and the log directory.
func (n *Node) makeFiles(context.Context) error {
	base := filepath.Join(os.TempDir(), "calico-prep-testbed-"+n.Name+"-"+n.id)
	if err := os.Mkdir(base, 0o700); err != nil {
		return fmt.Errorf("create node directory: %w", err)
	}
	n.Dir = base
	sock := filepath.Join(n.Dir, "run", "dbus", "system_bus_socket")
	if len(sock) > maxSocketPath {
		return fmt.Errorf("bus socket path %q is longer than %d bytes: set TMPDIR to a shorter directory", sock, maxSocketPath)
	}
	n.BusAddress = "unix:path=" + sock
	n.FirewalldDir = filepath.Join(n.Dir, "etc", "firewalld")
	n.NetworkdConfDir = filepath.Join(n.Dir, "etc", "systemd", "network")
	n.NMConfDir = filepath.Join(n.Dir, "etc", "NetworkManager", "conf.d")
	n.StateDir = filepath.Join(n.Dir, "var", "lib", "calico-prep")
	n.LogDir = filepath.Join(n.Dir, "log")
	return writeRoot(n)
}
