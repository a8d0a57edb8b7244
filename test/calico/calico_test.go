//go:build calico

package calico

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/calico-prep/calico-prep/test/testbed"
	"github.com/calico-prep/calico-prep/test/testkit"
)

const (
	// poolCIDR is the IP pool, clear of the uplinks (192.168.79.0/24) that Calico's default
	// 192.168.0.0/16 would overlap.
	poolCIDR = "10.244.0.0/16"
	// peerNet joins the nodes; their InternalIPs are on it.
	peerNet = "10.100.0.0/24"
	// wait bounds Calico's start-up and convergence on a loaded 2-core machine.
	wait = 3 * time.Minute
)

// vxlanEnv is the operator's patch of calico.yaml's calico-node container: VXLAN without BIRD,
// a pool clear of the host networks, the node address from the Node's InternalIP, and no usage
// reports.
var vxlanEnv = []map[string]any{
	{"name": "CALICO_NETWORKING_BACKEND", "value": "vxlan", "valueFrom": nil},
	{"name": "CALICO_IPV4POOL_IPIP", "value": "Never"},
	{"name": "CALICO_IPV4POOL_VXLAN", "value": "Always"},
	{"name": "CALICO_IPV4POOL_CIDR", "value": poolCIDR},
	{"name": "IP_AUTODETECTION_METHOD", "value": "kubernetes-internal-ip"},
	{"name": "FELIX_USAGEREPORTINGENABLED", "value": "false"},
	// The build has no BPF objects (felix/bpf-gpl needs clang): with XDP on, Felix probes
	// for /usr/lib/calico/bpf/filter.o every few seconds, creating and deleting veths.
	{"name": "FELIX_XDPENABLED", "value": "false"},
}

// TestCalicoVXLAN runs calico.yaml's calico-node pod of the real Calico on two test-bed nodes
// with real firewalld and NetworkManager: Calico starts and configures each node, the CNI plugin
// gives a pod on each node an address from the pool, and the pods talk across the nodes over
// VXLAN once calico-prep has opened firewalld, not before. Nothing leaves the test's networks and
// the host is as it was.
func TestCalicoVXLAN(t *testing.T) {
	checkHostUnchanged(t)
	cluster := kube.Cluster(t)
	admin := cluster.Client(t)
	ctx := t.Context()

	began := time.Now()
	cluster.Kubectl(t, "apply", "--server-side", "-f", filepath.Join(upstream, "calico.yaml"))
	cluster.Kubectl(t, "wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
	// Before any Felix starts: Felix reports usage to projectcalico.org unless told not to.
	felixConfig := filepath.Join(t.TempDir(), "felixconfiguration.yaml")
	if err := os.WriteFile(felixConfig, []byte(`apiVersion: crd.projectcalico.org/v1
kind: FelixConfiguration
metadata:
  name: default
spec:
  usageReportingEnabled: false
`), 0o644); err != nil {
		t.Fatal(err)
	}
	cluster.Kubectl(t, "apply", "-f", felixConfig)
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{"template": map[string]any{"spec": map[string]any{
		"containers": []map[string]any{{"name": "calico-node", "env": vxlanEnv}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	cluster.Kubectl(t, "-n", "kube-system", "patch", "daemonset", "calico-node", "--type=strategic", "-p", string(patch))

	nodes := []*calicoNode{
		startNode(t, "ca", "192.168.79.128/24"),
		startNode(t, "cb", "192.168.79.129/24"),
	}
	peers := []netip.Prefix{netip.MustParsePrefix("10.100.0.1/24"), netip.MustParsePrefix("10.100.0.2/24")}
	testbed.Connect(t, nodes[0].node, nodes[1].node, peers[0], peers[1])
	for i, c := range nodes {
		// NetworkManager starts once the link between the nodes is configured, so that it
		// assumes that configuration as it does at boot; a veth that gains its carrier while
		// NetworkManager watches becomes a managed device without a connection, and
		// NetworkManager removes its address.
		if err := c.node.StartNetworkManager(ctx); err != nil {
			t.Fatal(err)
		}
		if out, err := c.node.Exec(ctx, "ip", "-o", "-4", "address", "show", "dev", "peer0"); err != nil || !strings.Contains(string(out), peers[i].String()) {
			t.Fatalf("node %s: peer0 lost %s: %v\n%s", c.name, peers[i], err, out)
		}
	}
	for i, c := range nodes {
		if err := c.node.GuardEgress(ctx, c.node.UplinkAddr, netip.MustParsePrefix(peerNet), netip.MustParsePrefix(poolCIDR)); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := c.node.CheckEgress(context.Background()); err != nil {
				t.Error(err)
			}
		})
		c.register(peers[i].Addr())
	}
	if _, err := admin.CoreV1().ServiceAccounts("default").Create(ctx,
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}

	agentArgs := func(c *calicoNode, extra ...string) []string {
		return append([]string{"run", "--once", "--encapsulation=vxlan", "--bgp=false", "--pod-cidr=" + poolCIDR,
			"--state-dir=" + c.node.StateDir, "--networkmanager-conf-dir=" + c.node.NMConfDir}, extra...)
	}
	// calico-prep comes first, but for now without its firewalld rules: NetworkManager keeps
	// off Calico's links. (Without the drop-in, NetworkManager takes the new cali veths down
	// a moment after the CNI plugin brought them up, and the pods stay cut off.)
	for _, c := range nodes {
		code, out := c.runAgent(agentArgs(c, "--disable-checks=firewalld")...)
		if code != 0 {
			t.Fatalf("node %s: agent run --once --disable-checks=firewalld exited %d:\n%s", c.name, code, out)
		}
	}
	for _, c := range nodes {
		c.runCalicoPod(cluster.Token(t, "kube-system", "calico-node", c.name), cluster.CAFile)
	}
	for i, c := range nodes {
		c.waitCalicoNode(peers[i])
		c.checkProbes()
	}
	t.Logf("calico-node ready on both nodes %s after applying calico.yaml", time.Since(began).Round(time.Millisecond))

	pods := make([]netip.Addr, len(nodes))
	podNS := make([]string, len(nodes))
	for i, c := range nodes {
		podNS[i], pods[i] = c.addPod()
	}
	server := serve(t, podNS[1])
	defer server.Close()
	target := netip.AddrPortFrom(pods[1], 8080).String()

	// firewalld in its default zone drops VXLAN (4789/udp) arriving at the other node.
	if got, err := dial(podNS[0], target, 2*time.Second); err == nil {
		t.Fatalf("pod %s reached pod %s across nodes before calico-prep opened firewalld (%q)", pods[0], target, got)
	}
	for _, c := range nodes {
		code, out := c.runAgent(agentArgs(c)...)
		t.Logf("node %s: agent run --once exited %d:\n%s", c.name, code, testkit.LastLines(out, 15))
		if code != 0 {
			t.Fatalf("node %s: agent run --once exited %d", c.name, code)
		}
	}
	opened := time.Now()
	testkit.Eventually(t, wait, func() string {
		got, err := dial(podNS[0], target, 2*time.Second)
		if err != nil || got != "hello from "+pods[1].String() {
			return fmt.Sprintf("pod %s on %s to pod %s on %s: %q, %v", pods[0], nodes[0].name, target, nodes[1].name, got, err)
		}
		return ""
	})
	t.Logf("pod-to-pod TCP across nodes over VXLAN works %s after calico-prep opened firewalld", time.Since(opened).Round(time.Millisecond))
}

// startNode starts a test-bed node with real firewalld (NetworkManager comes later), forwarding
// on (as kubeadm requires of a node).
func startNode(t *testing.T, name, uplink string) *calicoNode {
	t.Helper()
	n := testbed.Up(t, testbed.Options{Name: name, Firewalld: true, UplinkAddr: netip.MustParsePrefix(uplink)})
	if err := n.Do(func() error { return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644) }); err != nil {
		t.Fatalf("turn forwarding on in node %s: %v", name, err)
	}
	c := &calicoNode{t: t, node: n, name: name, admin: kube.Cluster(t).Client(t)}
	c.nodeRoot()
	server, err := url.Parse(kube.Cluster(t).RelayInto(t, n.NetNS))
	if err != nil {
		t.Fatal(err)
	}
	c.apiHost, c.apiPort = server.Hostname(), server.Port()
	return c
}

// register creates the node's Node as the kubelet would, with internalIP as its InternalIP.
func (c *calicoNode) register(internalIP netip.Addr) {
	t := c.t
	t.Helper()
	nodes := c.admin.CoreV1().Nodes()
	n, err := nodes.Create(t.Context(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: c.name,
		Labels: map[string]string{"kubernetes.io/os": "linux", "kubernetes.io/hostname": c.name}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create node %q: %v", c.name, err)
	}
	t.Cleanup(func() {
		if err := nodes.Delete(context.Background(), c.name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete node %q: %v", c.name, err)
		}
	})
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: internalIP.String()}, {Type: corev1.NodeHostName, Address: c.name}}
	if _, err := nodes.UpdateStatus(t.Context(), n, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("set addresses of node %q: %v", c.name, err)
	}
}

// runCalicoPod runs the calico-node DaemonSet's pod as the kubelet would: its init containers
// in order, each to completion, then the calico-node container.
func (c *calicoNode) runCalicoPod(token, caFile string) {
	t := c.t
	t.Helper()
	ctx := t.Context()
	ds, err := c.admin.AppsV1().DaemonSets("kube-system").Get(ctx, "calico-node", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	saDir := filepath.Join(c.node.Dir, "pods", "calico-node", "serviceaccount")
	ca, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(saDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"token": []byte(token), "ca.crt": ca, "namespace": []byte("kube-system")} {
		if err := os.WriteFile(filepath.Join(saDir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	spec := &ds.Spec.Template.Spec
	for _, ctr := range spec.InitContainers {
		stdout, stderr := c.runToCompletion(c.resolve(ctx, spec, "kube-system", ctr, saDir), "", 2*time.Minute)
		t.Logf("node %s: init container %s:\n%s", c.name, ctr.Name, testkit.LastLines(stdout+stderr, 6))
	}
	for _, ctr := range spec.Containers {
		cs := c.resolve(ctx, spec, "kube-system", ctr, saDir)
		p, _ := c.start(cs)
		c.probes = append(c.probes, probe{ctr: ctr, spec: cs, proc: p})
	}
}

// probe is what the kubelet needs to run a container's exec probes.
type probe struct {
	ctr  corev1.Container
	spec containerSpec
	proc *testkit.Proc
}

// checkProbes runs calico-node's liveness and readiness commands in its container, with BIRD's
// part left out (VXLAN mode runs no BIRD), and logs what the manifest's own commands say.
func (c *calicoNode) checkProbes() {
	t := c.t
	t.Helper()
	for _, p := range c.probes {
		for _, pr := range []*corev1.Probe{p.ctr.LivenessProbe, p.ctr.ReadinessProbe} {
			if pr == nil || pr.Exec == nil {
				continue
			}
			code, out := c.execIn(p.proc, p.spec, pr.Exec.Command...)
			t.Logf("node %s: the manifest's probe %v exits %d: %s", c.name, pr.Exec.Command, code, strings.TrimSpace(out))
			felixOnly := slices.DeleteFunc(slices.Clone(pr.Exec.Command), func(a string) bool { return strings.HasPrefix(a, "-bird") })
			if code, out := c.execIn(p.proc, p.spec, felixOnly...); code != 0 {
				t.Errorf("node %s: probe %v exits %d: %s", c.name, felixOnly, code, out)
			}
		}
	}
}

// waitCalicoNode waits until calico-node has configured the node: the nodename file, the Node
// annotation with the node's address, vxlan.calico, and Felix's health endpoints.
func (c *calicoNode) waitCalicoNode(addr netip.Prefix) {
	t := c.t
	t.Helper()
	testkit.Eventually(t, wait, func() string {
		b, err := os.ReadFile(filepath.Join(c.node.Dir, "var", "lib", "calico", "nodename"))
		if err != nil || string(b) != c.name {
			return fmt.Sprintf("node %s: /var/lib/calico/nodename: %q, %v", c.name, b, err)
		}
		n, err := c.admin.CoreV1().Nodes().Get(t.Context(), c.name, metav1.GetOptions{})
		if err != nil {
			return err.Error()
		}
		if got := n.Annotations["projectcalico.org/IPv4Address"]; got != addr.String() {
			return fmt.Sprintf("node %s: annotation projectcalico.org/IPv4Address = %q, want %q", c.name, got, addr)
		}
		if out, err := c.node.Exec(t.Context(), "ip", "-d", "link", "show", "vxlan.calico"); err != nil || !strings.Contains(string(out), "vxlan id 4096") {
			return fmt.Sprintf("node %s: vxlan.calico: %s %v", c.name, out, err)
		}
		for _, path := range []string{"/liveness", "/readiness"} {
			if code, body, err := c.health(path); err != nil || code != http.StatusOK {
				return fmt.Sprintf("node %s: Felix %s: %d %q %v", c.name, path, code, body, err)
			}
		}
		return ""
	})
}

// health asks Felix's health endpoint on the node's loopback. The connection is made on the
// thread inside the node (http.Transport would dial from another goroutine, outside it).
func (c *calicoNode) health(path string) (int, string, error) {
	var conn net.Conn
	if err := c.node.Do(func() (err error) {
		conn, err = net.DialTimeout("tcp4", "127.0.0.1:9099", 2*time.Second)
		return err
	}); err != nil {
		return 0, "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	req, err := http.NewRequest(http.MethodGet, "http://localhost:9099"+path, nil)
	if err != nil {
		return 0, "", err
	}
	if err := req.Write(conn); err != nil {
		return 0, "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(body)), err
}

// addPod creates a Pod on the node and runs the CNI plugin for it the way containerd does:
// CNI_COMMAND=ADD with the first plugin of the conflist install-cni wrote, on the node (in its
// network namespace, chrooted into its Dir). It returns the pod's namespace and address.
func (c *calicoNode) addPod() (string, netip.Addr) {
	t := c.t
	t.Helper()
	ctx := t.Context()
	podName := c.name + "-pod"
	if _, err := c.admin.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: podName, Labels: map[string]string{"app": "calico-e2e"}},
		Spec:       corev1.PodSpec{NodeName: c.name, Containers: []corev1.Container{{Name: "app", Image: "calico-e2e/app"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.admin.CoreV1().Pods("default").Delete(context.Background(), podName, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
	})
	podNS, err := c.node.NewNetNS(ctx, "pod")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(c.node.Dir, "etc", "cni", "net.d", "10-calico.conflist"))
	if err != nil {
		t.Fatalf("node %s: install-cni's conflist: %v", c.name, err)
	}
	var list struct {
		Name       string           `json:"name"`
		CNIVersion string           `json:"cniVersion"`
		Plugins    []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(raw, &list); err != nil || len(list.Plugins) == 0 || list.Plugins[0]["type"] != "calico" {
		t.Fatalf("node %s: conflist: %v\n%s", c.name, err, raw)
	}
	conf := list.Plugins[0]
	conf["name"], conf["cniVersion"] = list.Name, list.CNIVersion
	stdin, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	var idb [16]byte
	_, _ = rand.Read(idb[:])
	id := hex.EncodeToString(idb[:])
	nsInNode := "/run/netns/" + filepath.Base(podNS)
	spec := containerSpec{
		name: "cni-add-" + podName,
		argv: []string{"/opt/cni/bin/calico"},
		env: []string{"PATH=/opt/cni/bin:/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND=ADD", "CNI_CONTAINERID=" + id,
			"CNI_NETNS=" + nsInNode, "CNI_IFNAME=eth0", "CNI_PATH=/opt/cni/bin",
			"CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=" + podName + ";K8S_POD_INFRA_CONTAINER_ID=" + id},
		mounts: []bind{{source: podNS, target: nsInNode}},
	}
	out, _ := c.runToCompletion(spec, string(stdin), time.Minute)
	var result struct {
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
	}
	if err := json.Unmarshal([]byte(out), &result); err != nil || len(result.IPs) == 0 {
		t.Fatalf("node %s: CNI ADD result: %v\n%s", c.name, err, out)
	}
	addr, err := netip.ParsePrefix(result.IPs[0].Address)
	if err != nil || !netip.MustParsePrefix(poolCIDR).Contains(addr.Addr()) {
		t.Fatalf("node %s: pod address %q (%v) is not from the pool %s", c.name, result.IPs[0].Address, err, poolCIDR)
	}
	links, err := c.node.Exec(ctx, "ip", "-o", "link", "show")
	if err != nil || !strings.Contains(string(links), ": cali") {
		t.Fatalf("node %s: no cali veth after CNI ADD: %v\n%s", c.name, err, links)
	}
	podAddrs, err := testbed.ExecNS(ctx, podNS, "ip", "-o", "-4", "addr", "show", "dev", "eth0")
	if err != nil || !strings.Contains(string(podAddrs), addr.String()) {
		t.Fatalf("node %s: pod eth0 lacks %s: %v\n%s", c.name, addr, err, podAddrs)
	}
	t.Logf("node %s: pod %s got %s", c.name, podName, addr)
	return podNS, addr.Addr()
}

// runAgent runs the agent to completion in the node's network namespace, on its bus.
func (c *calicoNode) runAgent(args ...string) (int, string) {
	t := c.t
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + c.node.NetNS, "--", agentBin}, args...)...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "DBUS_SYSTEM_BUS_ADDRESS=" + c.node.BusAddress}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() >= 0 {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatalf("node %s: agent %s: %v\n%s", c.name, strings.Join(args, " "), err, out)
	}
	return 0, string(out)
}

// serve answers every TCP connection on :8080 in the pod's namespace with its own address.
func serve(t *testing.T, podNS string) net.Listener {
	t.Helper()
	var l net.Listener
	if err := testbed.InNetNS(podNS, func() (err error) { l, err = net.Listen("tcp4", ":8080"); return err }); err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			local := conn.LocalAddr().(*net.TCPAddr).IP
			fmt.Fprintf(conn, "hello from %s", local)
			conn.Close()
		}
	}()
	return l
}

// dial connects from the pod's namespace and returns what the server sent.
func dial(podNS, addr string, timeout time.Duration) (string, error) {
	var got []byte
	err := testbed.InNetNS(podNS, func() error {
		conn, err := net.DialTimeout("tcp4", addr, timeout)
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(timeout))
		got, err = io.ReadAll(conn)
		return err
	})
	return string(got), err
}

// checkHostUnchanged compares, once every other cleanup of the test has run, what Calico could
// have written on this machine with what was there before: its files and directories, the
// host's iptables (both backends) and nftables rules, links and mounts.
func checkHostUnchanged(t *testing.T) {
	t.Helper()
	before := hostState(t)
	t.Cleanup(func() {
		after := hostState(t)
		for _, what := range []string{"files", "nftables", "iptables-legacy", "links", "mounts"} {
			if before[what] != after[what] {
				t.Errorf("the host's %s changed:\nbefore:\n%s\nafter:\n%s", what, before[what], after[what])
			}
		}
	})
}

func hostState(t *testing.T) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := map[string]string{}
	var files []string
	for _, root := range []string{"/var/lib/calico", "/run/calico", "/run/xtables.lock", "/run/nodeagent",
		"/opt/cni", "/etc/cni", "/var/log/calico", "/var/lib/cni", "/etc/calico", "/sys/fs/bpf"} {
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				files = append(files, p+" "+err.Error())
				return nil
			}
			files = append(files, p)
			return nil
		})
	}
	s["files"] = strings.Join(files, "\n")
	run := func(name string, args ...string) string {
		out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
		if err != nil {
			t.Errorf("%s %s (host, read-only): %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	s["nftables"] = run("nft", "list", "ruleset")
	// The legacy tables the host's network namespace has: Felix (legacy backend in a fresh
	// namespace) would add raw, mangle, nat and filter. Read from /proc: running iptables here
	// would create the host's /run/xtables.lock.
	tables, err := os.ReadFile("/proc/net/ip_tables_names")
	if err != nil {
		t.Fatal(err)
	}
	s["iptables-legacy"] = string(tables)
	var links []string
	for _, l := range strings.Split(run("ip", "-o", "link", "show"), "\n") {
		if f := strings.Fields(l); len(f) > 1 && calicoLink(strings.TrimSuffix(f[1], ":")) {
			links = append(links, f[1])
		}
	}
	s["links"] = strings.Join(links, " ")
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var mounts []string
	for _, l := range strings.Split(string(mi), "\n") {
		if strings.Contains(l, " - bpf ") || strings.Contains(l, " /run/calico") || strings.Contains(l, " /var/lib/calico") ||
			strings.Contains(l, " /opt/cni") || strings.Contains(l, " /etc/cni") {
			mounts = append(mounts, l)
		}
	}
	slices.Sort(mounts)
	s["mounts"] = strings.Join(mounts, "\n")
	return s
}

// calicoLink tells the names of links Calico creates.
func calicoLink(name string) bool {
	name, _, _ = strings.Cut(name, "@")
	for _, p := range []string{"cali", "tunl", "vxlan.calico", "vxlan-v6.calico", "wireguard.cali", "wg-v6.cali", "bpfin.cali", "bpfout.cali"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}
