package kubetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/calico-prep/calico-prep/internal/netnstest"
	"github.com/calico-prep/calico-prep/test/testkit"
)

var kube Shared

func TestMain(m *testing.M) { os.Exit(kube.Run(m)) }

// uniqueName derives an object name from the test, with a random suffix so that neither other
// tests nor reruns (-count) on the shared cluster collide. It fits namespace names (63 bytes).
func uniqueName(t testing.TB) string {
	name := strings.ToLower(regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(t.Name(), "-"))
	name = strings.Trim(name[:min(len(name), 50)], "-")
	return fmt.Sprintf("kt-%s-%04x", name, rand.IntN(1<<16))
}

func createNode(t testing.TB, cs kubernetes.Interface, name string) *corev1.Node {
	t.Helper()
	node, err := cs.CoreV1().Nodes().Create(t.Context(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create node %q: %v", name, err)
	}
	t.Cleanup(func() {
		err := cs.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete node %q: %v", name, err)
		}
	})
	return node
}

func clientFor(t testing.TB, kubeconfig string) kubernetes.Interface {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatalf("load kubeconfig: %v", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("create clientset: %v", err)
	}
	return cs
}

func TestNodeLabelAndStatusCondition(t *testing.T) {
	c := kube.Cluster(t)
	cs := c.Client(t)
	ctx := t.Context()
	name := uniqueName(t)
	createNode(t, cs, name)

	_, err := cs.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"calico-prep.io/ready":"true"}}}`), metav1.PatchOptions{})
	if err != nil {
		t.Fatalf("label node: %v", err)
	}
	now := time.Now().UTC().Format(time.RFC3339)
	condition := fmt.Sprintf(`{"status":{"conditions":[{"type":"CalicoPrepReady","status":"True","reason":"AllChecksPassed",`+
		`"message":"node is ready for Calico","lastHeartbeatTime":%q,"lastTransitionTime":%q}]}}`, now, now)
	// Through the main resource the status is ignored; only the subresource may change it.
	if _, err := cs.CoreV1().Nodes().Patch(ctx, name, types.StrategicMergePatchType, []byte(condition), metav1.PatchOptions{}); err != nil {
		t.Fatalf("patch node: %v", err)
	}
	if node, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{}); err != nil || len(node.Status.Conditions) != 0 {
		t.Fatalf("after patching status through the main resource: conditions %v, error %v; want none", node.Status.Conditions, err)
	}
	if _, err := cs.CoreV1().Nodes().Patch(ctx, name, types.StrategicMergePatchType, []byte(condition), metav1.PatchOptions{}, "status"); err != nil {
		t.Fatalf("patch node status: %v", err)
	}

	node, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get node: %v", err)
	}
	if got := node.Labels["calico-prep.io/ready"]; got != "true" {
		t.Errorf("label calico-prep.io/ready = %q, want true", got)
	}
	if len(node.Status.Conditions) != 1 {
		t.Fatalf("conditions = %+v, want one", node.Status.Conditions)
	}
	got := node.Status.Conditions[0]
	if got.Type != "CalicoPrepReady" || got.Status != corev1.ConditionTrue || got.Reason != "AllChecksPassed" ||
		got.LastHeartbeatTime.UTC().Format(time.RFC3339) != now {
		t.Errorf("condition = %+v", got)
	}
}

func TestServiceAccountWithoutPermissionsIsDenied(t *testing.T) {
	c := kube.Cluster(t)
	ctx := t.Context()
	name := uniqueName(t)
	createNode(t, c.Client(t), name)
	sa := clientFor(t, c.KubeconfigFor(t, c.Token(t, name, "agent", ""), ""))
	patch := []byte(`{"metadata":{"labels":{"calico-prep.io/ready":"true"}}}`)

	_, err := sa.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("patch node without permission: error %v, want Forbidden", err)
	}

	// The same request passes once RBAC allows it, so the denial above was RBAC's. The
	// authorizer reads RBAC objects from an informer, so the grant takes a moment to apply.
	grantNodePatch(t, c, name, name, "agent")
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := sa.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
		if err == nil {
			break
		}
		if !apierrors.IsForbidden(err) || time.Now().After(deadline) {
			t.Fatalf("patch node with permission: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func grantNodePatch(t testing.TB, c *Cluster, name, namespace, serviceAccount string) {
	t.Helper()
	ctx := t.Context()
	cs := c.Client(t)
	_, err := cs.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "patch"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create clusterrole: %v", err)
	}
	_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: name},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: namespace, Name: serviceAccount}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create clusterrolebinding: %v", err)
	}
	t.Cleanup(func() {
		_ = cs.RbacV1().ClusterRoleBindings().Delete(context.Background(), name, metav1.DeleteOptions{})
		_ = cs.RbacV1().ClusterRoles().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
}

func TestNodeBoundTokenCarriesNodeName(t *testing.T) {
	c := kube.Cluster(t)
	ctx := t.Context()
	cs := c.Client(t)
	name := uniqueName(t)
	node := createNode(t, cs, name)

	whoami := func(token string) (authenticationv1.UserInfo, error) {
		review, err := clientFor(t, c.KubeconfigFor(t, token, "")).AuthenticationV1().SelfSubjectReviews().
			Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if err != nil {
			return authenticationv1.UserInfo{}, err
		}
		return review.Status.UserInfo, nil
	}

	bound := c.Token(t, name, "agent", name)
	user, err := whoami(bound)
	if err != nil {
		t.Fatalf("review node-bound token: %v", err)
	}
	if want := "system:serviceaccount:" + name + ":agent"; user.Username != want {
		t.Errorf("username = %q, want %q", user.Username, want)
	}
	if got := user.Extra["authentication.kubernetes.io/node-name"]; len(got) != 1 || got[0] != name {
		t.Errorf("extra node-name = %v, want [%s]", got, name)
	}
	if got := user.Extra["authentication.kubernetes.io/node-uid"]; len(got) != 1 || got[0] != string(node.UID) {
		t.Errorf("extra node-uid = %v, want [%s]", got, node.UID)
	}

	unbound, err := whoami(c.Token(t, name, "agent", ""))
	if err != nil {
		t.Fatalf("review unbound token: %v", err)
	}
	if got, ok := unbound.Extra["authentication.kubernetes.io/node-name"]; ok {
		t.Errorf("unbound token has node-name %v", got)
	}
}

func TestKubectl(t *testing.T) {
	c := kube.Cluster(t)
	if got := c.Kubectl(t, "get", "namespace", "default", "-o", "jsonpath={.metadata.name}"); got != "default" {
		t.Errorf("kubectl get namespace default printed %q", got)
	}

	// Privileged host-network DaemonSets must pass server-side dry-run (--allow-privileged).
	manifest := filepath.Join(t.TempDir(), "ds.yaml")
	if err := os.WriteFile(manifest, []byte(privilegedDaemonSet), 0o600); err != nil {
		t.Fatal(err)
	}
	c.Kubectl(t, "apply", "--dry-run=server", "-f", manifest)

	name := uniqueName(t)
	sa := c.KubeconfigFor(t, c.Token(t, name, "agent", ""), "")
	_, err := c.TryKubectl(t, "--kubeconfig", sa, "get", "nodes")
	if err == nil || !strings.Contains(err.Error(), "Forbidden") {
		t.Errorf("kubectl get nodes as a service account without permissions: error %v, want Forbidden", err)
	}
}

const privilegedDaemonSet = `apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: privileged
  namespace: default
spec:
  selector:
    matchLabels: {app: privileged}
  template:
    metadata:
      labels: {app: privileged}
    spec:
      hostNetwork: true
      containers:
      - name: agent
        image: example.invalid/agent:1
        securityContext:
          privileged: true
`

func TestAuditEventsSeeWrites(t *testing.T) {
	c := kube.Cluster(t)
	ctx := t.Context()
	cs := c.Client(t)
	name := uniqueName(t)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
	if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create configmap: %v", err)
	}
	t.Cleanup(func() {
		_ = cs.CoreV1().ConfigMaps("default").Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	if _, err := cs.CoreV1().ConfigMaps("default").Patch(ctx, name, types.MergePatchType, []byte(`{"data":{"k":"v"}}`), metav1.PatchOptions{}); err != nil {
		t.Fatalf("patch configmap: %v", err)
	}
	sa := clientFor(t, c.KubeconfigFor(t, c.Token(t, name, "agent", ""), ""))
	if _, err := sa.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, []byte(`{}`), metav1.PatchOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("patch node as service account: error %v, want Forbidden", err)
	}

	// Read right after the requests returned: the log must already hold them.
	var adminWrites []string
	for _, e := range c.AuditEvents(t, AdminUser) {
		if e.IsWrite() && e.Resource == "configmaps" && e.Name == name {
			adminWrites = append(adminWrites, fmt.Sprintf("%s %s/%s %d", e.Verb, e.Namespace, e.Name, e.Code))
		}
	}
	want := []string{"create default/" + name + " 201", "patch default/" + name + " 200"}
	if strings.Join(adminWrites, "; ") != strings.Join(want, "; ") {
		t.Errorf("admin writes = %q, want %q", adminWrites, want)
	}

	saEvents := c.AuditEvents(t, "system:serviceaccount:"+name+":agent")
	if len(saEvents) != 1 {
		t.Fatalf("service account events = %+v, want one", saEvents)
	}
	if e := saEvents[0]; e.Verb != "patch" || e.Resource != "nodes" || e.Name != name || e.Code != 403 || !e.IsWrite() {
		t.Errorf("service account event = %+v, want a denied node patch", e)
	}

	if got := c.AuditEvents(t, "system:apiserver"); len(got) != 0 {
		t.Errorf("the apiserver's own requests are logged: %d events", len(got))
	}
}

func TestRelayInto(t *testing.T) {
	c := kube.Cluster(t)
	ns := netnstest.New(t)
	// RelayInto must cope with a namespace as "ip netns add" leaves it.
	ns.SetDown(t, "lo")

	name := uniqueName(t)
	token := c.Token(t, name, "agent", "")
	inside := func(server string) (string, error) {
		cmd := exec.CommandContext(t.Context(), "ip", "netns", "exec", ns.Name, filepath.Join(c.BinDir, "kubectl"),
			"--kubeconfig", c.KubeconfigFor(t, token, server), "--request-timeout=10s",
			"auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
		out, err := cmd.Output()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			err = fmt.Errorf("%w: %s", err, exit.Stderr)
		}
		return string(out), err
	}

	server := c.RelayInto(t, ns.Path)
	if !strings.HasPrefix(server, "https://127.0.0.1:") {
		t.Errorf("relay server = %q, want https://127.0.0.1:<port>", server)
	}
	got, err := inside(server)
	if err != nil {
		t.Fatalf("kubectl inside the namespace through the relay: %v", err)
	}
	if want := "system:serviceaccount:" + name + ":agent"; got != want {
		t.Errorf("whoami through the relay = %q, want %q", got, want)
	}

	// The namespace's loopback is its own: the apiserver's address leads nowhere there.
	if out, err := inside(c.Server); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("apiserver address from inside the namespace: output %q, error %v; want connection refused", out, err)
	}
}

// TestAPIServerOutage takes a cluster of its own: stopping the shared apiserver would break
// every other test.
func TestAPIServerOutage(t *testing.T) {
	var (
		dir   string
		procs []*testkit.Proc
	)
	t.Run("restart", func(t *testing.T) {
		c := Start(t)
		dir = c.Dir
		procs = []*testkit.Proc{c.etcd, c.apiserver}
		cs := c.Client(t)
		ctx := t.Context()
		name := uniqueName(t)
		createNode(t, cs, name)

		w, err := cs.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatalf("watch nodes: %v", err)
		}
		defer w.Stop()

		// An open watch must not hold the stop up, and must end with it.
		c.StopAPIServer(t)
		for range w.ResultChan() {
		}
		_, err = cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("get node while the apiserver is stopped: error %v, want connection refused", err)
		}
		if c.etcd.Exited() {
			t.Fatalf("etcd stopped with the apiserver: %s", c.etcd.State())
		}

		c.StartAPIServer(t)
		if _, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{}); err != nil {
			t.Fatalf("get node after restart on the same address: %v", err)
		}
	})

	for _, p := range procs {
		if !p.Exited() {
			t.Errorf("%s still running after cleanup", p.State())
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cluster dir %q after cleanup: %v, want it removed", dir, err)
	}
}

func TestFreePortsAreDistinct(t *testing.T) {
	ports, err := freePorts(3)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if seen[p] {
			t.Fatalf("port %d handed out twice: %v", p, ports)
		}
		seen[p] = true
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			t.Errorf("port %d not free after freePorts returned: %v", p, err)
			continue
		}
		_ = ln.Close()
	}
}

// BenchmarkStart measures start to ready (/readyz and namespace "default") plus stop, with warm
// binaries.
func BenchmarkStart(b *testing.B) {
	for b.Loop() {
		c, err := start(Options{})
		if err != nil {
			b.Fatal(err)
		}
		if err := c.stop(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRestartAPIServer measures an outage round trip: stop the apiserver, start it, ready.
func BenchmarkRestartAPIServer(b *testing.B) {
	c := Start(b)
	for b.Loop() {
		c.StopAPIServer(b)
		c.StartAPIServer(b)
	}
}
