package nodestatus

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/calico-prep/calico-prep/test/kubetest"
)

var kube kubetest.Shared

func TestMain(m *testing.M) { os.Exit(kube.Run(m)) }

// next waits for the watch to deliver a Node matching ok.
func next(t *testing.T, ch <-chan Node, ok func(Node) bool) Node {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case n, open := <-ch:
			if !open {
				t.Fatal("watch closed")
			}
			if ok(n) {
				return n
			}
		case <-timeout:
			t.Fatal("timed out waiting for the Node")
		}
	}
}

// TestPublishAgainstAPIServer: label, prepared label, annotation and condition are written only
// when they change; the prepared label never turns false; a deleted Node is never re-created.
func TestPublishAgainstAPIServer(t *testing.T) {
	c := kube.Cluster(t)
	cs := c.Client(t)
	name := "pub-" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))[:20]
	node, err := cs.CoreV1().Nodes().Create(t.Context(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.168.79.128"}}
	node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady"}}
	if _, err := cs.CoreV1().Nodes().UpdateStatus(t.Context(), node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	client, err := New(c.Config(), name, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	watch := client.Watch(t.Context())
	first := next(t, watch, func(n Node) bool { return len(n.InternalIPs) == 1 })
	if first.InternalIPs[0] != netip.MustParseAddr("192.168.79.128") || first.Condition != nil {
		t.Fatalf("first state %+v", first)
	}

	notReady := Status{Ready: false, Reason: "PodCIDROverlap", Message: "pod CIDR 192.168.0.0/16 overlaps ens33 address 192.168.79.128/24", Report: `{"v":1}`}
	ready := Status{Ready: true, Reason: "Prepared", Message: "node is prepared for Calico", Report: `{"v":1,"ready":true}`}
	steps := []struct {
		want       Status
		writes     int
		label      string
		prepared   string
		condStatus corev1.ConditionStatus
	}{
		{want: notReady, writes: 2, label: "false", prepared: "", condStatus: corev1.ConditionFalse},
		{want: notReady, writes: 0, label: "false", prepared: "", condStatus: corev1.ConditionFalse},
		{want: ready, writes: 2, label: "true", prepared: "true", condStatus: corev1.ConditionTrue},
		{want: notReady, writes: 2, label: "false", prepared: "true", condStatus: corev1.ConditionFalse},
	}
	for i, st := range steps {
		writes, err := client.Publish(t.Context(), st.want)
		if err != nil || writes != st.writes {
			t.Fatalf("step %d: %d writes, %v; want %d", i, writes, err, st.writes)
		}
		got, err := cs.CoreV1().Nodes().Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got.Labels[LabelReady] != st.label || got.Labels[LabelPrepared] != st.prepared {
			t.Fatalf("step %d: labels %v", i, got.Labels)
		}
		var ours, kubelet *corev1.NodeCondition
		for i := range got.Status.Conditions {
			switch got.Status.Conditions[i].Type {
			case ConditionType:
				ours = &got.Status.Conditions[i]
			case corev1.NodeReady:
				kubelet = &got.Status.Conditions[i]
			}
		}
		if ours == nil || ours.Status != st.condStatus || ours.Message != st.want.Message || got.Annotations[AnnotationReport] != st.want.Report ||
			ours.Reason != st.want.Reason || ours.LastHeartbeatTime.IsZero() || ours.LastTransitionTime.IsZero() {
			t.Fatalf("step %d: condition %+v, report %q", i, ours, got.Annotations[AnnotationReport])
		}
		if kubelet == nil || kubelet.Reason != "KubeletReady" {
			t.Fatalf("step %d: kubelet's condition was touched: %+v", i, got.Status.Conditions)
		}
	}

	if err := client.Event(t.Context(), true, "CalicoPrepNotReady", notReady.Message); err != nil {
		t.Fatal(err)
	}
	evs, err := cs.CoreV1().Events(EventNamespace).List(t.Context(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
	if err != nil || len(evs.Items) != 1 || evs.Items[0].Reason != "CalicoPrepNotReady" || evs.Items[0].InvolvedObject.UID != node.UID {
		t.Fatalf("events %+v, %v", evs, err)
	}
	if ev := evs.Items[0]; ev.Type != corev1.EventTypeWarning || ev.Message != notReady.Message || ev.Count != 1 ||
		ev.Source.Component != FieldManager || ev.Source.Host != name || ev.ReportingController != FieldManager ||
		ev.ReportingInstance != name || ev.FirstTimestamp.IsZero() || ev.LastTimestamp.IsZero() || ev.InvolvedObject.Kind != "Node" {
		t.Errorf("event as the API server stored it: %+v", ev)
	}
	if n, err := client.CountNodes(t.Context()); err != nil || n < 1 {
		t.Fatalf("CountNodes = %d, %v", n, err)
	}

	// Node deleted (scale-down) while the agent still runs: nothing may bring it back.
	if err := cs.CoreV1().Nodes().Delete(t.Context(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for client.Seen() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := client.Publish(t.Context(), ready); err == nil {
		t.Fatal("published to a deleted Node")
	}
	if _, err := cs.CoreV1().Nodes().Get(t.Context(), name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the deleted Node exists again: %v", err)
	}
}

// TestPublishAfterUnseenDeletion: even before the watch reports a deletion, the uid in every
// apply makes the API server refuse to create the Node again.
func TestPublishAfterUnseenDeletion(t *testing.T) {
	c := kube.Cluster(t)
	cs := c.Client(t)
	node := createNode(t, c, "pub-unseen-deletion")
	client := newClient(t, c, node.Name)
	// As if the watch had delivered it, and then missed the deletion.
	raw, err := json.Marshal(node)
	if err != nil {
		t.Fatal(err)
	}
	var seen nodeObject
	if err := json.Unmarshal(raw, &seen); err != nil {
		t.Fatal(err)
	}
	client.view.set(&seen)
	if err := cs.CoreV1().Nodes().Delete(t.Context(), node.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Publish(t.Context(), Status{Ready: true, Reason: "Prepared", Message: "m", Report: "{}"}); err == nil {
		t.Fatal("publish to a deleted Node succeeded")
	}
	if client.Seen() {
		t.Error("the client still believes in the deleted Node")
	}
	if _, err := cs.CoreV1().Nodes().Get(t.Context(), node.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the deleted Node exists again: %v", err)
	}
}

// TestRefresh: Refresh records the Node as the API server has it now; for a Node that does not
// exist it returns an error when ctx ends.
func TestRefresh(t *testing.T) {
	c := kube.Cluster(t)
	cs := c.Client(t)
	node := createNode(t, c, "pub-refresh")
	client := newClient(t, c, node.Name)
	if client.Seen() {
		t.Fatal("seen before any read")
	}
	if err := client.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !client.Seen() {
		t.Fatal("not seen after Refresh")
	}
	patch := []byte(`{"metadata":{"labels":{"example.com/zone":"b"}}}`)
	if _, err := cs.CoreV1().Nodes().Patch(t.Context(), node.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := client.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n, _ := client.Current(); n.Labels["example.com/zone"] != "b" {
		t.Fatalf("after a change and Refresh: labels %v, want example.com/zone=b", n.Labels)
	}

	missing := newClient(t, c, "pub-refresh-missing")
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if err := missing.Refresh(ctx); err == nil || missing.Seen() {
		t.Fatalf("Refresh of a missing Node: %v, seen %v; want an error and nothing seen", err, missing.Seen())
	}
}

// createNode creates a Node with only a name.
func createNode(t *testing.T, c *kubetest.Cluster, name string) *corev1.Node {
	t.Helper()
	node, err := c.Client(t).CoreV1().Nodes().Create(t.Context(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return node
}

// newClient is a Client for the Node name, logging nowhere.
func newClient(t *testing.T, c *kubetest.Cluster, name string) *Client {
	t.Helper()
	client, err := New(c.Config(), name, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return client
}
