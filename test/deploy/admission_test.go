package deploy

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/calico-prep/calico-prep/pkg/nodestatus"
	"github.com/calico-prep/calico-prep/test/kubetest"
)

// The agent's identity, as deploy/base names it.
const (
	agentNamespace      = "calico-prep"
	agentServiceAccount = "calico-prep"
)

// applyBase applies the kustomize base for real: namespace, ServiceAccount, RBAC, admission
// policy and the DaemonSet (which nothing runs: the test apiserver has no controllers).
func applyBase(t testing.TB, c *kubetest.Cluster) {
	t.Helper()
	c.Kubectl(t, "apply", "-k", filepath.Join(repoRoot(t), "deploy/base"))
}

// createNode creates a Node as kubelet would have registered it: a foreign label and
// annotation, an InternalIP and kubelet's Ready condition.
func createNode(t testing.TB, cs kubernetes.Interface, name, internalIP string) {
	t.Helper()
	ctx := t.Context()
	n, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name:        name,
		Labels:      map[string]string{"kubernetes.io/hostname": name, "team": "network"},
		Annotations: map[string]string{"example/owner": "kubelet"},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create node %q: %v", name, err)
	}
	t.Cleanup(func() {
		_ = cs.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	now := metav1.Now()
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: internalIP}}
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionFalse,
		Reason: "KubeletNotReady", Message: "container runtime network not ready", LastHeartbeatTime: now, LastTransitionTime: now}}
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("set status of node %q: %v", name, err)
	}
}

// agentConfigFor is a client configuration with a token of the agent's ServiceAccount, bound
// to node (or unbound when node is empty).
func agentRESTConfig(t testing.TB, c *kubetest.Cluster, node string) *rest.Config {
	t.Helper()
	return &rest.Config{
		Host:            c.Server,
		BearerToken:     c.Token(t, agentNamespace, agentServiceAccount, node),
		TLSClientConfig: rest.TLSClientConfig{CAFile: c.CAFile},
	}
}

// seenClient is a nodestatus client that has seen its Node through its watch, as the agent's is
// before it publishes.
func seenClient(ctx context.Context, t testing.TB, cfg *rest.Config, node string) *nodestatus.Client {
	t.Helper()
	cl, err := nodestatus.New(cfg, node, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	select {
	case <-cl.Watch(ctx):
	case <-time.After(30 * time.Second):
		t.Fatalf("watch of node %q delivered nothing", node)
	}
	return cl
}

func shortName(prefix string) string { return fmt.Sprintf("%s-%04x", prefix, rand.IntN(1<<16)) }

// TestAdmissionPolicyConfinesAgent runs the agent's own Node client with a node-bound token of
// the DaemonSet's ServiceAccount against the real apiserver: everything the agent does passes,
// and writes to another node, to foreign labels, annotations, conditions, status or spec are
// refused by the policy.
func TestAdmissionPolicyConfinesAgent(t *testing.T) {
	c := kube.Cluster(t)
	applyBase(t, c)
	admin := c.Client(t)
	own, other := shortName("adm-own"), shortName("adm-other")
	createNode(t, admin, own, "192.0.2.10")
	createNode(t, admin, other, "192.0.2.11")

	cfg := agentRESTConfig(t, c, own)
	sa, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	mergePatch := func(node, patch string, subresource ...string) error {
		_, err := sa.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}, subresource...)
		return err
	}

	unbound := agentRESTConfig(t, c, "")
	saUnbound, err := kubernetes.NewForConfig(unbound)
	if err != nil {
		t.Fatal(err)
	}
	// The policy takes effect once the apiserver has loaded it: wait for a refusal. The probe
	// changes the node each time, so it cannot pass for having nothing to change.
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; ; i++ {
		_, err := saUnbound.CoreV1().Nodes().Patch(ctx, own, types.MergePatchType,
			fmt.Appendf(nil, `{"metadata":{"labels":{"calico-prep.io/probe":"%d"}}}`, i), metav1.PatchOptions{})
		if isPolicyDenial(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the admission policy never refused an unbound token: last answer %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	t.Run("the agent's own requests pass", func(t *testing.T) {
		cl := seenClient(ctx, t, cfg, own)
		writes, err := cl.Publish(ctx, nodestatus.Status{Ready: false, Reason: "FirewalldPortMissing",
			Message: "179/tcp is not open", Report: `{"v":1}`})
		if err != nil || writes != 2 {
			t.Fatalf("publish: %d writes, %v", writes, err)
		}
		if err := cl.Event(ctx, true, "NotPrepared", "179/tcp is not open"); err != nil {
			t.Fatal(err)
		}
		if n, err := cl.CountNodes(ctx); err != nil || n < 2 {
			t.Fatalf("count nodes: %d, %v", n, err)
		}
		// A transition: the condition and label change again.
		if _, err := cl.Publish(ctx, nodestatus.Status{Ready: true, Reason: "Prepared", Message: "ok", Report: `{"v":1,"ready":true}`}); err != nil {
			t.Fatal(err)
		}
		n, err := admin.CoreV1().Nodes().Get(ctx, own, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if n.Labels[nodestatus.LabelReady] != "true" || n.Labels["team"] != "network" || n.Annotations["example/owner"] != "kubelet" ||
			len(n.Status.Conditions) != 2 || n.Status.Conditions[0].Type != corev1.NodeReady {
			t.Fatalf("node after publishing: labels %v annotations %v conditions %+v", n.Labels, n.Annotations, n.Status.Conditions)
		}
	})

	apply := func(node, body string, subresource ...string) error {
		_, err := sa.CoreV1().Nodes().Patch(ctx, node, types.ApplyPatchType, []byte(body),
			metav1.PatchOptions{FieldManager: nodestatus.FieldManager, Force: new(true)}, subresource...)
		return err
	}
	foreignLabel := `{"metadata":{"labels":{"team":"storage"}}}`
	denied := []struct {
		name    string
		do      func() error
		message string
	}{
		// The agent's own apply, sent with the typed client: nodestatus's raw requests do not
		// decode the refusal's message.
		{"another node's label", func() error {
			return apply(other, `{"apiVersion":"v1","kind":"Node","metadata":{"name":"`+other+`","labels":{"calico-prep.io/ready":"true"}}}`)
		}, "may not change node " + other},
		{"another node's condition by apply", func() error {
			return apply(other, `{"apiVersion":"v1","kind":"Node","metadata":{"name":"`+other+`"},"status":{"conditions":[{"type":"CalicoPrepReady","status":"True","reason":"Prepared"}]}}`, "status")
		}, "may not change node " + other},
		{"a foreign label", func() error { return mergePatch(own, foreignLabel) }, "only labels under calico-prep.io/"},
		{"removing a foreign label", func() error { return mergePatch(own, `{"metadata":{"labels":{"team":null}}}`) }, "only labels under calico-prep.io/"},
		{"a foreign annotation", func() error { return mergePatch(own, `{"metadata":{"annotations":{"example/owner":"me"}}}`) }, "only annotations under calico-prep.io/"},
		{"the spec", func() error { return mergePatch(own, `{"spec":{"unschedulable":true}}`) }, "may not change a Node's spec"},
		{"a taint", func() error {
			return mergePatch(own, `{"spec":{"taints":[{"key":"x","effect":"NoSchedule"}]}}`)
		}, "may not change a Node's spec"},
		{"kubelet's condition", func() error {
			return mergePatch(own, `{"status":{"conditions":[{"type":"Ready","status":"True","reason":"KubeletReady"}]}}`, "status")
		}, "only the CalicoPrepReady condition"},
		{"the addresses", func() error {
			return mergePatch(own, `{"status":{"addresses":[{"type":"InternalIP","address":"192.0.2.99"}]}}`, "status")
		}, "no Node status but its CalicoPrepReady condition"},
		{"another node's condition", func() error {
			return mergePatch(other, `{"status":{"conditions":[{"type":"CalicoPrepReady","status":"True","reason":"Prepared"}]}}`, "status")
		}, "may not change node " + other},
		{"an event about another node", func() error {
			_, err := sa.CoreV1().Events(nodestatus.EventNamespace).Create(ctx, &corev1.Event{
				ObjectMeta:     metav1.ObjectMeta{GenerateName: "adm-"},
				InvolvedObject: corev1.ObjectReference{Kind: "Node", Name: other},
				Reason:         "Prepared", Message: "x", Type: corev1.EventTypeNormal,
			}, metav1.CreateOptions{})
			return err
		}, "events only about its own Node"},
		{"a token not bound to a node", func() error {
			_, err := saUnbound.CoreV1().Nodes().Patch(ctx, own, types.MergePatchType,
				[]byte(`{"metadata":{"labels":{"calico-prep.io/ready":"false"}}}`), metav1.PatchOptions{})
			return err
		}, "token bound to its pod or Node"},
	}
	for _, d := range denied {
		t.Run("refuses "+d.name, func(t *testing.T) {
			err := d.do()
			if !isPolicyDenial(err) || !strings.Contains(err.Error(), d.message) {
				t.Fatalf("want the policy's refusal %q, got %v", d.message, err)
			}
		})
	}

	t.Run("the agent's client on another node is refused", func(t *testing.T) {
		_, err := seenClient(ctx, t, cfg, other).Publish(ctx, nodestatus.Status{Ready: true, Reason: "Prepared", Report: "{}"})
		if !apierrors.IsForbidden(err) {
			t.Fatalf("publish to another node: want forbidden, got %v", err)
		}
	})

	t.Run("RBAC refuses what the agent never does", func(t *testing.T) {
		for name, do := range map[string]func() error{
			"delete a node": func() error { return sa.CoreV1().Nodes().Delete(ctx, other, metav1.DeleteOptions{}) },
			"get a node":    func() error { _, err := sa.CoreV1().Nodes().Get(ctx, own, metav1.GetOptions{}); return err },
			"list secrets":  func() error { _, err := sa.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{}); return err },
			"event in kube-system": func() error {
				_, err := sa.CoreV1().Events("kube-system").Create(ctx, &corev1.Event{ObjectMeta: metav1.ObjectMeta{GenerateName: "adm-"},
					InvolvedObject: corev1.ObjectReference{Kind: "Node", Name: own}}, metav1.CreateOptions{})
				return err
			},
		} {
			if err := do(); err == nil || !strings.Contains(err.Error(), "forbidden") || isPolicyDenial(err) {
				t.Errorf("%s: want an RBAC refusal, got %v", name, err)
			}
		}
	})

	t.Run("others are not confined", func(t *testing.T) {
		if _, err := admin.CoreV1().Nodes().Patch(ctx, own, types.MergePatchType, []byte(foreignLabel), metav1.PatchOptions{}); err != nil {
			t.Fatalf("admin patch of a foreign label: %v", err)
		}
	})
}

func isPolicyDenial(err error) bool {
	return err != nil && strings.Contains(err.Error(), "ValidatingAdmissionPolicy 'calico-prep-own-node'")
}

// TestPolicyCoversNodeStatus fails when the API gains a NodeStatus field that the policy's
// field-by-field status comparison does not hold: the agent could otherwise change it.
func TestPolicyCoversNodeStatus(t *testing.T) {
	for _, file := range []string{"deploy/base/admission.yaml", "deploy/helm/calico-prep/templates/admission.yaml"} {
		policy := readFile(t, file)
		st := reflect.TypeFor[corev1.NodeStatus]()
		for i := range st.NumField() {
			name, _, _ := strings.Cut(st.Field(i).Tag.Get("json"), ",")
			if name == "conditions" {
				continue // compared type by type
			}
			want := fmt.Sprintf("object.status.?%s == oldObject.status.?%s", name, name)
			if !strings.Contains(policy, want) {
				t.Errorf("%s: NodeStatus field %q is not compared (want %q)", file, name, want)
			}
		}
	}
}
