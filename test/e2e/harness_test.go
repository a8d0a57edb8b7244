package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/calico-prep/calico-prep/pkg/nodestatus"
	"github.com/calico-prep/calico-prep/test/kubetest"
	"github.com/calico-prep/calico-prep/test/testbed"
	"github.com/calico-prep/calico-prep/test/testkit"
)

const (
	// podCIDR lies clear of the testbed's uplink (192.168.79.0/24); collisionAddr on the
	// uplink makes the node collide with it.
	podCIDR       = "10.244.0.0/16"
	collisionAddr = "10.244.5.1/24"
	// collisionMessage is the cidr check's message for collisionAddr on the default uplink.
	collisionMessage = "pod CIDR 10.244.0.0/16 overlaps ens33 address 10.244.5.1/24"
	// metricsAddr is inside the node's namespace, so every node can use the same.
	metricsAddr = "127.0.0.1:9476"
	// dropInName is the file calico-prep owns in NetworkManager's conf.d.
	dropInName = "calico-prep.conf"
)

// wait bounds the waits for the agent to react; reactions take milliseconds, a loaded machine
// running other test binaries beside this one may take seconds.
const wait = 60 * time.Second

// env is one sandboxed node known to the apiserver as a Node, with a kubeconfig for the agent's
// ServiceAccount that works from inside the node.
type env struct {
	t       testing.TB
	cluster *kubetest.Cluster
	node    *testbed.Node
	name    string
	admin   kubernetes.Interface
	rbac    rbac
	// kubeconfig authenticates as the agent's ServiceAccount with a token bound to the Node,
	// as the kubelet issues it to the agent's pod, against a relay inside the node.
	kubeconfig string
}

// setup starts a node with real firewalld and NetworkManager that passes every check on this
// machine (forwarding on; vxlan encapsulation, since the kernel has no ipip), creates its Node
// with the uplink as InternalIP, applies the deployment's RBAC and issues the agent's token.
func setup(t testing.TB, cluster *kubetest.Cluster, name string) *env {
	t.Helper()
	node := testbed.Up(t, testbed.Options{Name: name, Firewalld: true, NetworkManager: true})
	e := &env{t: t, cluster: cluster, node: node, name: name, admin: cluster.Client(t)}
	// Sysctls under /proc/sys/net belong to the namespace of the thread that opens them.
	if err := node.Do(func() error { return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644) }); err != nil {
		t.Fatalf("turn forwarding on in node %s: %v", name, err)
	}
	e.rbac = applyRBAC(t, cluster)
	e.createNode(name, node.UplinkAddr.Addr())
	token := cluster.Token(t, e.rbac.namespace, e.rbac.serviceAccount, name)
	e.kubeconfig = cluster.KubeconfigFor(t, token, cluster.RelayInto(t, node.NetNS))
	return e
}

// createNode creates a Node as the kubelet would register it, and deletes it at cleanup (after
// the agent has stopped: cleanups run in reverse).
func (e *env) createNode(name string, internalIP netip.Addr) {
	t := e.t
	t.Helper()
	ctx := context.Background()
	nodes := e.admin.CoreV1().Nodes()
	n, err := nodes.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create node %q: %v", name, err)
	}
	t.Cleanup(func() {
		if err := nodes.Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete node %q: %v", name, err)
		}
	})
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: internalIP.String()}, {Type: corev1.NodeHostName, Address: name}}
	if _, err := nodes.UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("set addresses of node %q: %v", name, err)
	}
}

// agentArgs are the flags every test gives: the node's private directories, the encapsulation
// this kernel supports, a pod CIDR clear of the uplink, metrics inside the node. The resync
// interval is an hour so that whatever the agent does within a test was caused by an event.
func (e *env) agentArgs(extra ...string) []string {
	args := []string{"run",
		"--kubeconfig=" + e.kubeconfig,
		"--node-name=" + e.name,
		"--state-dir=" + e.node.StateDir,
		"--networkmanager-conf-dir=" + e.node.NMConfDir,
		"--encapsulation=vxlan",
		"--pod-cidr=" + podCIDR,
		"--metrics-bind-address=" + metricsAddr,
		"--resync-interval=1h",
	}
	return append(args, extra...)
}

// uplinkAddr adds (add true) or removes an address on the node's uplink over netlink, and
// returns when the kernel has made the change.
func (e *env) uplinkAddr(add bool, cidr string) time.Time {
	e.t.Helper()
	ns, err := netns.GetFromPath(e.node.NetNS)
	if err != nil {
		e.t.Fatalf("open node namespace: %v", err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		e.t.Fatalf("netlink handle in node: %v", err)
	}
	defer h.Close()
	link, err := h.LinkByName(e.node.Uplink)
	if err != nil {
		e.t.Fatalf("find uplink: %v", err)
	}
	addr, err := netlink.ParseAddr(cidr)
	if err != nil {
		e.t.Fatal(err)
	}
	if add {
		err = h.AddrAdd(link, addr)
	} else {
		err = h.AddrDel(link, addr)
	}
	if err != nil {
		e.t.Fatalf("change address %s on %s (add %v): %v", cidr, e.node.Uplink, add, err)
	}
	return time.Now()
}

// events returns the Events about the node, oldest first.
func (e *env) events() []corev1.Event {
	e.t.Helper()
	sel := fields.Set{"involvedObject.kind": "Node", "involvedObject.name": e.name}.AsSelector().String()
	list, err := e.admin.CoreV1().Events(nodestatus.EventNamespace).List(context.Background(), metav1.ListOptions{FieldSelector: sel})
	if err != nil {
		e.t.Fatalf("list events of node %s: %v", e.name, err)
	}
	evs := list.Items
	slices.SortStableFunc(evs, func(a, b corev1.Event) int { return a.FirstTimestamp.Compare(b.FirstTimestamp.Time) })
	return evs
}

// waitEvents waits until the node has n Events and returns them.
func (e *env) waitEvents(n int) []corev1.Event {
	e.t.Helper()
	var evs []corev1.Event
	testkit.Eventually(e.t, wait, func() string {
		evs = e.events()
		if len(evs) == n {
			return ""
		}
		return fmt.Sprintf("node %s has %d events, want %d: %s", e.name, len(evs), n, describeEvents(evs))
	})
	return evs
}

func describeEvents(evs []corev1.Event) string {
	var s []string
	for _, ev := range evs {
		s = append(s, fmt.Sprintf("%s %s %q", ev.Type, ev.Reason, ev.Message))
	}
	return "[" + strings.Join(s, "; ") + "]"
}

// requests are the agent's API requests since a moment, one per request (a watch has two audit
// entries, when it starts and when it ends; it counts once).
func (e *env) requests(t testing.TB, since time.Time) []kubetest.AuditEvent {
	t.Helper()
	var out []kubetest.AuditEvent
	seen := map[string]bool{}
	for _, ev := range e.cluster.AuditEvents(t, e.rbac.user()) {
		if ev.Time.Before(since) || seen[ev.AuditID] {
			continue
		}
		seen[ev.AuditID] = true
		out = append(out, ev)
	}
	return out
}

func describeRequests(reqs []kubetest.AuditEvent) string {
	var s []string
	for _, r := range reqs {
		s = append(s, fmt.Sprintf("%s %s %d", r.Verb, r.RequestURI, r.Code))
	}
	return "[" + strings.Join(s, "; ") + "]"
}

// condition is calico-prep's NodeCondition, or nil.
func condition(n *corev1.Node) *corev1.NodeCondition {
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == nodestatus.ConditionType {
			return &n.Status.Conditions[i]
		}
	}
	return nil
}

// conditionIs matches a Node whose condition has the status and reason (and message, when not
// empty).
func conditionIs(status corev1.ConditionStatus, reason, message string) func(*corev1.Node) bool {
	return func(n *corev1.Node) bool {
		c := condition(n)
		return c != nil && c.Status == status && c.Reason == reason && (message == "" || c.Message == message)
	}
}

// statusIs matches a Node whose label and condition both say ready (or not) for reason: they
// are two writes, which the agent makes at once and which land in either order.
func statusIs(ready bool, reason, message string) func(*corev1.Node) bool {
	cond := conditionIs(map[bool]corev1.ConditionStatus{true: corev1.ConditionTrue, false: corev1.ConditionFalse}[ready], reason, message)
	return func(n *corev1.Node) bool { return cond(n) && n.Labels[nodestatus.LabelReady] == fmt.Sprint(ready) }
}

func describeNode(n *corev1.Node) string {
	if n == nil {
		return "no node seen"
	}
	c := condition(n)
	cond := "no condition"
	if c != nil {
		cond = fmt.Sprintf("condition %s %s %q", c.Status, c.Reason, c.Message)
	}
	return fmt.Sprintf("node %s: label %s=%q, %s", n.Name, nodestatus.LabelReady, n.Labels[nodestatus.LabelReady], cond)
}

// seenNode is one state of the Node as the test's watch saw it, and when.
type seenNode struct {
	at   time.Time
	node *corev1.Node
}

// nodeWatch follows one Node from the test's side, as a controller acting on the condition
// would, and records every version with the time it arrived. It rides out apiserver outages.
type nodeWatch struct {
	mu      sync.Mutex
	seen    []seenNode
	changed chan struct{} // closed and replaced at every new version
}

func (e *env) watchNode() *nodeWatch {
	w := &nodeWatch{changed: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	e.t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	nodes := e.admin.CoreV1().Nodes()
	sel := fields.OneTermEqualSelector("metadata.name", e.name).String()
	wg.Go(func() {
		rv := ""
		for ctx.Err() == nil {
			wi, err := nodes.Watch(ctx, metav1.ListOptions{FieldSelector: sel, ResourceVersion: rv, AllowWatchBookmarks: true})
			if err != nil {
				sleepCtx(ctx, 100*time.Millisecond)
				continue
			}
			for ev := range wi.ResultChan() {
				at := time.Now()
				switch ev.Type {
				case watch.Added, watch.Modified:
					n, ok := ev.Object.(*corev1.Node)
					if !ok {
						continue
					}
					rv = n.ResourceVersion
					w.add(seenNode{at: at, node: n})
				case watch.Bookmark:
					if n, ok := ev.Object.(*corev1.Node); ok {
						rv = n.ResourceVersion
					}
				case watch.Error:
					if st, ok := ev.Object.(*metav1.Status); ok && st.Code == 410 {
						rv = ""
					}
				}
			}
			wi.Stop()
			sleepCtx(ctx, 100*time.Millisecond)
		}
	})
	return w
}

func (w *nodeWatch) add(s seenNode) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.seen = append(w.seen, s)
	close(w.changed)
	w.changed = make(chan struct{})
}

// latest returns the newest version seen and a channel that closes when a newer one arrives.
func (w *nodeWatch) latest() (*seenNode, <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.seen) == 0 {
		return nil, w.changed
	}
	return &w.seen[len(w.seen)-1], w.changed
}

// since returns the versions that arrived at or after t.
func (w *nodeWatch) since(t time.Time) []seenNode {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []seenNode
	for _, s := range w.seen {
		if !s.at.Before(t) {
			out = append(out, s)
		}
	}
	return out
}

// waitFor waits until the newest version seen matches and returns it.
func (w *nodeWatch) waitFor(t testing.TB, within time.Duration, what string, match func(*corev1.Node) bool) seenNode {
	t.Helper()
	s, err := w.await(within, match)
	if err != nil {
		t.Fatalf("wait for %s: %v", what, err)
	}
	return s
}

func (w *nodeWatch) await(within time.Duration, match func(*corev1.Node) bool) (seenNode, error) {
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		s, changed := w.latest()
		if s != nil && match(s.node) {
			return *s, nil
		}
		select {
		case <-changed:
		case <-deadline.C:
			var last *corev1.Node
			if s != nil {
				last = s.node
			}
			return seenNode{}, fmt.Errorf("not seen within %s; last: %s", within, describeNode(last))
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// dialIn opens a TCP connection from inside the network namespace at path: a socket belongs to
// the namespace of the thread that creates it.
func dialIn(ctx context.Context, path, addr string) (net.Conn, error) {
	var conn net.Conn
	err := testbed.InNetNS(path, func() error {
		var err error
		conn, err = (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", addr)
		return err
	})
	return conn, err
}

// dirEntries lists the names in dir; a missing dir is empty.
func dirEntries(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func dropInPath(n *testbed.Node) string { return filepath.Join(n.NMConfDir, dropInName) }
