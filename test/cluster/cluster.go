package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/calico-prep/calico-prep/test/kubetest"
	"github.com/calico-prep/calico-prep/test/testbed"
	"github.com/calico-prep/calico-prep/test/testkit"
)

// PauseImage is the name the locally built pause image is imported under: containerd's sandbox
// image, and the image of deploy/cleanup's "done" container.
const PauseImage = "registry.k8s.io/pause:3.10"

// VIP is the apiserver's advertise address, the endpoint of Service "kubernetes": an address of
// the core namespace, where a relay forwards to the apiserver on the host's loopback.
var VIP = netip.MustParseAddr("172.30.255.1")

// Options say what a cluster holds.
type Options struct {
	// Nodes is the number of nodes, node-a, node-b, …; default 2.
	Nodes int
	// Images are OCI layout tars imported into every node's containerd (namespace k8s.io), in
	// addition to the pause image.
	Images []string
	// Debug raises firewalld's and NetworkManager's log levels.
	Debug bool
	// Seed lays the nodes out like the seed's hosts: every node's ens33 on one LAN, SeedLAN
	// (node-a .128, node-b .129, …), whose gateway .1 (a bridge in the core namespace) routes
	// to VIP, and a second NIC, ens34, on a host-only network of the node's own (HostOnlyNet,
	// reaching no other node). ens34 comes after ens33, so calico-node's first-found, which
	// takes the highest ifindex, picks it. The kubelet's node IP stays ens33's. Without Seed,
	// each node's ens33 has 172.30.N.2/24 on a LAN of its own, routed to the others.
	Seed bool
	// EgressGuard puts testbed's egress guard into every node before anything runs there:
	// the test fails if any of the node's processes or pods sends to an address outside the
	// cluster's own networks (uplinks, VIP, the service CIDR; AllowEgress adds more) or asks
	// for a name.
	EgressGuard bool
}

var (
	// SeedLAN is the LAN of Options.Seed's ens33, the seed guide's 192.168.79.0/24.
	SeedLAN = netip.MustParsePrefix("192.168.79.0/24")
	// HostOnlyNet is the network of Options.Seed's ens34.
	HostOnlyNet = netip.MustParsePrefix("10.10.10.0/24")
)

// Cluster is a running cluster.
type Cluster struct {
	Kube *kubetest.Cluster
	// Nodes are in name order.
	Nodes []*Node
	// APIServer is the apiserver's URL from the nodes and the core namespace: https://VIP:port.
	APIServer string
	// CoreNetNS is the path of the namespace that routes between the nodes' LANs and holds VIP.
	CoreNetNS string
	// Dir holds the cluster's own files (images, logs of the controller manager and scheduler).
	Dir string
	// Took is how long each phase of Up took: "binaries", "images", "control plane", "nodes".
	Took map[string]time.Duration

	id             string
	kubeDir        string
	repo           string
	kcm, scheduler *testkit.Proc
	// nodeInit is the pause program, every node's init.
	nodeInit string
}

// Up starts a cluster for the test and tears it down in t.Cleanup; it fails the test if any
// part cannot start. Nodes are NotReady (no CNI) but registered, with kube-proxy serving the
// "kubernetes" Service in their namespaces.
func Up(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("a cluster needs root: it makes namespaces, mounts and cgroups")
	}
	if opts.Nodes == 0 {
		opts.Nodes = 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	c := &Cluster{Dir: t.TempDir(), Took: map[string]time.Duration{}}
	var idb [3]byte
	if _, err := rand.Read(idb[:]); err != nil {
		t.Fatal(err)
	}
	c.id = hex.EncodeToString(idb[:])
	var err error
	phase := func(name string, f func() error) {
		t.Helper()
		began := time.Now()
		if err := f(); err != nil {
			t.Fatalf("start cluster: %s: %v", name, err)
		}
		c.Took[name] = time.Since(began)
	}
	phase("binaries", func() error {
		if c.repo, err = repoRoot(); err != nil {
			return err
		}
		if c.kubeDir, err = script(ctx, c.repo, "hack/build-kube.sh"); err != nil {
			return err
		}
		_, err = exec.LookPath("runc")
		return err
	})
	var pause string
	phase("images", func() error {
		pause, err = c.BuildImage(ctx, "pause", []string{PauseImage}, []string{"/pause"}, "65535:65535",
			map[string]string{"pause": "./test/cluster/cmd/pause"})
		c.nodeInit = filepath.Join(c.Dir, "images", "pause", "pause")
		return err
	})
	phase("control plane", func() error {
		c.Kube = kubetest.StartWith(t, kubetest.Options{AdvertiseAddress: VIP})
		return c.startControlPlane(t)
	})
	phase("nodes", func() error {
		for i := range opts.Nodes {
			name := fmt.Sprintf("node-%c", 'a'+i)
			uplink := netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 30, byte(i + 1), 2}), 24)
			if opts.Seed {
				uplink = netip.PrefixFrom(nthHost(SeedLAN, 128+i), SeedLAN.Bits())
			}
			// NetworkManager starts once the node's links are in place (below), as at boot: a
			// veth that gains its carrier while NetworkManager watches becomes a managed
			// device without a connection, and NetworkManager removes its address.
			tb, err := testbed.Start(ctx, testbed.Options{
				Name: name, Firewalld: true, Debug: opts.Debug, UplinkAddr: uplink,
			})
			if err != nil {
				return err
			}
			n := &Node{Node: tb}
			c.Nodes = append(c.Nodes, n)
			// The node's processes stop before the test bed takes its namespaces down.
			t.Cleanup(func() {
				if t.Failed() {
					for _, p := range []string{"holder", "containerd", "kubelet", "kube-proxy", "dbus", "firewalld", "NetworkManager"} {
						t.Logf("node %s: tail of %s.log:\n%s", n.Name, p, testkit.Tail(n.LogPath(p), 25))
					}
				}
				ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
				defer cancel()
				if err := n.down(ctx); err != nil {
					t.Errorf("stop node %s: %v", n.Name, err)
				}
				if err := tb.Down(ctx); err != nil {
					t.Errorf("tear down node %s: %v", n.Name, err)
				}
			})
			allowed := []netip.Prefix{n.UplinkAddr.Masked(), netip.PrefixFrom(VIP, 32), serviceCIDR}
			if opts.Seed {
				err = c.seed(ctx, i, n)
				allowed = append(allowed, HostOnlyNet)
			} else {
				err = c.route(ctx, i, n)
			}
			if err != nil {
				return err
			}
			if opts.EgressGuard {
				if err := n.GuardEgress(ctx, allowed...); err != nil {
					return err
				}
				// Registered after the node's teardown, so it runs before it.
				t.Cleanup(func() {
					ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
					defer cancel()
					if err := n.CheckEgress(ctx); err != nil {
						t.Error(err)
					}
				})
			}
			if err := n.StartNetworkManager(ctx); err != nil {
				return err
			}
		}
		for _, n := range c.Nodes {
			if err := n.up(ctx, c, append([]string{pause}, opts.Images...)); err != nil {
				return err
			}
		}
		return c.waitNodes(ctx)
	})
	return c
}

// startControlPlane starts the core namespace with the relay at VIP, then the controller
// manager and the scheduler on the host's loopback, as a control-plane node runs them.
func (c *Cluster) startControlPlane(t testing.TB) error {
	ctx := context.Background()
	c.CoreNetNS = "/run/netns/cpc-core-" + c.id
	if err := ipCmd(ctx, "netns", "add", filepath.Base(c.CoreNetNS)); err != nil {
		return err
	}
	t.Cleanup(func() {
		if err := ipCmd(context.Background(), "netns", "del", filepath.Base(c.CoreNetNS)); err != nil {
			t.Errorf("remove core namespace: %v", err)
		}
	})
	if _, err := testbed.ExecNS(ctx, c.CoreNetNS, "ip", "address", "add", VIP.String()+"/32", "dev", "lo"); err != nil {
		return err
	}
	if _, err := testbed.ExecNS(ctx, c.CoreNetNS, "ip", "link", "set", "lo", "up"); err != nil {
		return err
	}
	if err := testbed.InNetNS(c.CoreNetNS, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
	}); err != nil {
		return fmt.Errorf("turn on forwarding in the core namespace: %w", err)
	}
	c.APIServer = c.Kube.RelayOn(t, c.CoreNetNS, VIP)

	kcmConfig := filepath.Join(c.Dir, "kube-controller-manager.kubeconfig")
	if err := c.Kube.ClientKubeconfig(kcmConfig, "system:kube-controller-manager", nil, ""); err != nil {
		return err
	}
	schedConfig := filepath.Join(c.Dir, "kube-scheduler.kubeconfig")
	if err := c.Kube.ClientKubeconfig(schedConfig, "system:kube-scheduler", nil, ""); err != nil {
		return err
	}
	caFile := filepath.Join(c.Dir, "ca.crt")
	if err := os.WriteFile(caFile, c.Kube.CAPEM(), 0o644); err != nil {
		return err
	}
	var err error
	// No HTTPS serving (--secure-port=0): nothing here scrapes them, and they would otherwise
	// write self-signed certificates.
	c.kcm, err = c.startLocal("kube-controller-manager",
		"--kubeconfig="+kcmConfig, "--secure-port=0", "--leader-elect=false",
		"--use-service-account-credentials=true", "--root-ca-file="+caFile,
		"--cert-dir="+filepath.Join(c.Dir, "kcm-certs"), "--v=1")
	if err != nil {
		return err
	}
	c.scheduler, err = c.startLocal("kube-scheduler",
		"--kubeconfig="+schedConfig, "--secure-port=0", "--leader-elect=false", "--v=1")
	t.Cleanup(func() {
		for _, p := range []*testkit.Proc{c.scheduler, c.kcm} {
			if p != nil {
				_ = stop(p)
			}
		}
	})
	return err
}

func (c *Cluster) startLocal(name string, args ...string) (*testkit.Proc, error) {
	logf, err := os.OpenFile(filepath.Join(c.Dir, name+".log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(c.kubeDir, name), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	p, err := testkit.Start(cmd)
	if err != nil {
		return nil, err
	}
	p.Name = name
	return p, nil
}

// LogPath is the log of the controller manager or the scheduler.
func (c *Cluster) LogPath(name string) string { return filepath.Join(c.Dir, name+".log") }

// route joins node i's LAN namespace to the core: a veth with a /30 of 172.30.0.0/24, the LAN's
// default route to the core, the core's route to the node's network.
func (c *Cluster) route(ctx context.Context, i int, n *Node) error {
	lan := n.LANNetNS()
	coreSide := netip.AddrFrom4([4]byte{172, 30, 0, byte(4*i + 1)})
	lanSide := coreSide.Next()
	link := fmt.Sprintf("lan%d", i)
	if _, err := testbed.ExecNS(ctx, c.CoreNetNS, "ip", "link", "add", link, "type", "veth", "peer", "name", "core", "netns", filepath.Base(lan)); err != nil {
		return err
	}
	core := []string{
		fmt.Sprintf("address add %s/30 dev %s", coreSide, link),
		fmt.Sprintf("link set %s up", link),
		fmt.Sprintf("route add %s via %s", n.UplinkAddr.Masked(), lanSide),
	}
	lanCmds := []string{
		fmt.Sprintf("address add %s/30 dev core", lanSide),
		"link set core up",
		fmt.Sprintf("route add default via %s", coreSide),
	}
	for ns, lines := range map[string][]string{c.CoreNetNS: core, lan: lanCmds} {
		for _, l := range lines {
			if _, err := testbed.ExecNS(ctx, ns, "ip", strings.Fields(l)...); err != nil {
				return err
			}
		}
	}
	return testbed.InNetNS(lan, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
	})
}

// seed joins node i to the seed's LAN and gives it its host-only NIC (Options.Seed). The LAN
// is a bridge in the core namespace holding the gateway address; the end of the node's uplink
// that the test bed put into the node's LAN namespace moves onto it. The host-only NIC is a
// veth whose other end stays in the node's LAN namespace, which now leads nowhere.
func (c *Cluster) seed(ctx context.Context, i int, n *Node) error {
	core, lan := c.CoreNetNS, n.LANNetNS()
	if i == 0 {
		gw := netip.PrefixFrom(nthHost(SeedLAN, 1), SeedLAN.Bits())
		for _, l := range []string{"link add seed type bridge", "address add " + gw.String() + " dev seed", "link set seed up"} {
			if _, err := testbed.ExecNS(ctx, core, "ip", strings.Fields(l)...); err != nil {
				return err
			}
		}
	}
	port := "lan-" + n.Name
	hostOnly := netip.PrefixFrom(nthHost(HostOnlyNet, 10+i), HostOnlyNet.Bits())
	steps := []struct {
		ns   string
		line string
	}{
		{lan, "link set eth0 name " + port},
		{lan, "link set " + port + " netns " + filepath.Base(core)},
		{core, "link set " + port + " master seed"},
		{core, "link set " + port + " up"},
		{n.NetNS, "link add ens34 type veth peer name hostonly netns " + filepath.Base(lan)},
		{n.NetNS, "address add " + hostOnly.String() + " dev ens34"},
		{n.NetNS, "link set ens34 up"},
		{lan, "link set hostonly up"},
	}
	for _, s := range steps {
		if _, err := testbed.ExecNS(ctx, s.ns, "ip", strings.Fields(s.line)...); err != nil {
			return err
		}
	}
	return nil
}

// nthHost is the n-th address after p's network address.
func nthHost(p netip.Prefix, n int) netip.Addr {
	a := p.Masked().Addr()
	for range n {
		a = a.Next()
	}
	return a
}

// serviceCIDR is the apiserver's service range (test/kubetest), which holds ServiceIP.
var serviceCIDR = netip.PrefixFrom(kubetest.ServiceIP, 12).Masked()

// AllowEgress lets every node's egress guard (Options.EgressGuard) pass traffic to p, e.g. the
// pod CIDR once it is chosen.
func (c *Cluster) AllowEgress(ctx context.Context, p netip.Prefix) error {
	for _, n := range c.Nodes {
		if err := n.AllowEgress(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

// waitNodes waits until every node is registered, the controller manager has given the
// namespaces their ServiceAccount and CA ConfigMap, and every node reaches the apiserver at the
// "kubernetes" Service's ClusterIP (kube-proxy has written its rules).
func (c *Cluster) waitNodes(ctx context.Context) error {
	cs, err := c.Kube.Clientset()
	if err != nil {
		return err
	}
	for _, n := range c.Nodes {
		err := waitFor(ctx, n.kubelet, n.LogPath("kubelet"), "node "+n.Name+" to register", func() bool {
			_, err := cs.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			return err == nil
		})
		if err != nil {
			return err
		}
	}
	err = waitFor(ctx, c.kcm, c.LogPath("kube-controller-manager"), "ServiceAccount default/default and ConfigMap kube-root-ca.crt", func() bool {
		_, err1 := cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		_, err2 := cs.CoreV1().ConfigMaps("default").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		return err1 == nil && err2 == nil
	})
	if err != nil {
		return err
	}
	svc := netip.AddrPortFrom(kubetest.ServiceIP, 443)
	for _, n := range c.Nodes {
		err := waitFor(ctx, n.kubeProxy, n.LogPath("kube-proxy"), "node "+n.Name+" to reach "+svc.String(), func() bool {
			return n.Do(func() error { return tlsHandshake(svc.String()) }) == nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// tlsHandshake connects to addr and completes a TLS handshake, without verifying: it shows a
// TLS server answers there.
func tlsHandshake(addr string) error {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // only shows the apiserver answers
	if err != nil {
		return err
	}
	return conn.Close()
}

// NodeNamed returns the node called name, or nil.
func (c *Cluster) NodeNamed(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// WaitPodsGone waits until namespace holds no pod; tests use it between installs.
func (c *Cluster) WaitPodsGone(ctx context.Context, namespace string) error {
	cs, err := c.Kube.Clientset()
	if err != nil {
		return err
	}
	for {
		pods, err := cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		if err == nil && len(pods.Items) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for the pods of %s to go: %w", namespace, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// NodeCondition returns the Node's condition of type t, or nil.
func NodeCondition(node *corev1.Node, t corev1.NodeConditionType) *corev1.NodeCondition {
	for i := range node.Status.Conditions {
		if node.Status.Conditions[i].Type == t {
			return &node.Status.Conditions[i]
		}
	}
	return nil
}

func ipCmd(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// repoRoot is the directory above the working directory that holds hack/build-kube.sh.
func repoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "hack", "build-kube.sh")); err == nil {
			return dir, nil
		}
		if dir == filepath.Dir(dir) {
			return "", fmt.Errorf("find hack/build-kube.sh above %q: not found", wd)
		}
	}
}

// script runs a build script of the repository and returns the directory it prints.
func script(ctx context.Context, repo, name string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, filepath.Join(repo, name))
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("run %s: %w; last output:\n%s", name, err, testkit.LastLines(stderr.String(), 30))
	}
	dir := strings.TrimSpace(stdout.String())
	if dir == "" {
		return "", errors.New(name + " printed no directory")
	}
	return dir, nil
}
