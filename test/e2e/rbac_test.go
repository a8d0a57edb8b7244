package e2e

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/calico-prep/calico-prep/pkg/nodestatus"
	"github.com/calico-prep/calico-prep/test/kubetest"
	"github.com/calico-prep/calico-prep/test/testkit"
)

// rbac names the agent's ServiceAccount as the applied manifests create it.
type rbac struct {
	namespace, serviceAccount string
}

func (r rbac) user() string {
	return "system:serviceaccount:" + r.namespace + ":" + r.serviceAccount
}

// applyRBAC applies deploy/base, the deployment as it ships: the agent's namespace,
// ServiceAccount, RBAC and the admission policy that confines it to its own Node. Its
// DaemonSet stays inert (kubetest runs no controllers). Applying is idempotent, so every test
// applies it to whichever cluster it uses.
func applyRBAC(t testing.TB, c *kubetest.Cluster) rbac {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	c.Kubectl(t, "apply", "-k", filepath.Join(root, "deploy", "base"))
	return rbac{namespace: "calico-prep", serviceAccount: "calico-prep"}
}

// TestServiceAccountConfinedToItsNode: the agent's own token (bound to its Node, as the
// kubelet issues it) makes exactly the agent's writes on its own Node, and is refused with 403
// on any other Node and for creating one. TestCollisionReportedThenCleared shows the same
// ServiceAccount doing all of the daemon's requests without a denial.
func TestServiceAccountConfinedToItsNode(t *testing.T) {
	c := kube.Cluster(t)
	// Only the Node objects matter here, no sandboxed node.
	e := &env{t: t, cluster: c, name: "e2e-rbac", admin: c.Client(t), rbac: applyRBAC(t, c)}
	e.createNode(e.name, netip.MustParseAddr("192.168.79.128"))
	other := "e2e-rbac-other"
	e.createNode(other, netip.MustParseAddr("192.168.80.128"))
	cfg, err := clientcmd.BuildConfigFromFlags("", c.KubeconfigFor(t, c.Token(t, e.rbac.namespace, e.rbac.serviceAccount, e.name), ""))
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	nodes := cs.CoreV1().Nodes()
	labelOpts := func(name string, opts metav1.PatchOptions) error {
		body := fmt.Sprintf(`{"apiVersion":"v1","kind":"Node","metadata":{"name":%q,"labels":{%q:"true"}}}`, name, nodestatus.LabelReady)
		opts.FieldManager, opts.Force = nodestatus.FieldManager, new(true)
		_, err := nodes.Patch(ctx, name, types.ApplyPatchType, []byte(body), opts)
		return err
	}
	label := func(name string) error { return labelOpts(name, metav1.PatchOptions{}) }
	status := func(name string) error {
		body := fmt.Sprintf(`{"apiVersion":"v1","kind":"Node","metadata":{"name":%q},"status":{"conditions":[{"type":%q,"status":"True","reason":"Prepared","message":"test","lastHeartbeatTime":%q,"lastTransitionTime":%q}]}}`,
			name, nodestatus.ConditionType, time.Now().UTC().Format(time.RFC3339), time.Now().UTC().Format(time.RFC3339))
		_, err := nodes.Patch(ctx, name, types.ApplyPatchType, []byte(body), metav1.PatchOptions{FieldManager: nodestatus.FieldManager, Force: new(true)}, "status")
		return err
	}

	// The apiserver loads a new admission policy asynchronously; until it has, the policy
	// has no effect. Wait for it with requests that change nothing.
	testkit.Eventually(t, wait, func() string {
		err := labelOpts(other, metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}})
		if apierrors.IsForbidden(err) {
			return ""
		}
		return fmt.Sprintf("dry-run label of another node: %v, want 403 once the admission policy is loaded", err)
	})

	// Its own Node: everything the agent does.
	if err := label(e.name); err != nil {
		t.Errorf("label own node: %v", err)
	}
	if err := status(e.name); err != nil {
		t.Errorf("set condition on own node: %v", err)
	}
	w, err := nodes.Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + e.name})
	if err != nil {
		t.Errorf("watch own node: %v", err)
	} else {
		w.Stop()
	}
	if _, err := nodes.List(ctx, metav1.ListOptions{Limit: 1}); err != nil {
		t.Errorf("list nodes (the Typha advice counts them): %v", err)
	}
	ev := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{GenerateName: e.name + ".", Namespace: nodestatus.EventNamespace},
		InvolvedObject: corev1.ObjectReference{Kind: "Node", Name: e.name},
		Reason:         "Test", Message: "rbac test", Type: corev1.EventTypeNormal,
	}
	if _, err := cs.CoreV1().Events(nodestatus.EventNamespace).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		t.Errorf("create event: %v", err)
	}

	// Any other Node: 403, for the metadata and for the status.
	for _, tc := range []struct {
		name string
		do   func() error
	}{
		{"label another node", func() error { return label(other) }},
		{"set the condition of another node", func() error { return status(other) }},
		{"create a node by applying to a missing one", func() error { return label("e2e-rbac-missing") }},
		{"delete its own node", func() error { return nodes.Delete(ctx, e.name, metav1.DeleteOptions{}) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do()
			if !apierrors.IsForbidden(err) {
				t.Errorf("got %v, want 403 Forbidden", err)
			}
		})
	}
	if n, err := e.admin.CoreV1().Nodes().Get(ctx, other, metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	} else if _, ok := n.Labels[nodestatus.LabelReady]; ok || condition(n) != nil {
		t.Errorf("the other node was changed: %s", describeNode(n))
	}
}
