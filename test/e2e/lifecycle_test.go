package e2e

import (
	"context"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/calico-prep/calico-prep/pkg/nodestatus"
)

// TestBadFlagsExitBeforeTouchingAnything: a bad value is one line naming the flag and the
// value, exit status 2, and nothing on the node or in the cluster has been touched, although
// every other flag points the agent at a live node and a working apiserver.
func TestBadFlagsExitBeforeTouchingAnything(t *testing.T) {
	e := setup(t, kube.Cluster(t), "e2e-badflags")
	fw := dialBus(t, e.node)
	zone := fw.defaultZone(t)
	start := time.Now()
	// The wording is config's; what matters here is one line naming the flag and the value.
	for _, tc := range []struct {
		name, flag, field, value string
	}{
		{"negative resync interval", "--resync-interval=-1s", "--resync-interval", "-1s"},
		{"zero resync interval", "--resync-interval=0", "--resync-interval", "0"},
		{"address without a port", "--metrics-bind-address=127.0.0.1", "--metrics-bind-address", "127.0.0.1"},
		{"port that is not a number", "--metrics-bind-address=127.0.0.1:metrics", "--metrics-bind-address", "127.0.0.1:metrics"},
		{"host that is not an address", "--metrics-bind-address=300.1.2.3:9476", "--metrics-bind-address", "300.1.2.3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := runAgent(t, e.node, wait, e.agentArgs(tc.flag)...)
			if code != 2 {
				t.Errorf("exit status %d, want 2", code)
			}
			line, rest, _ := strings.Cut(out, "\n")
			if rest != "" || !strings.HasPrefix(line, "agent: "+tc.field+": ") || !strings.Contains(line, strconv.Quote(tc.value)) {
				t.Errorf("output:\n%s\nwant one line \"agent: %s: …\" quoting %q", out, tc.field, tc.value)
			}
		})
	}

	if names := dirEntries(t, e.node.NMConfDir); len(names) > 0 {
		t.Errorf("NetworkManager conf.d holds %v after bad flags, want nothing", names)
	}
	if names := dirEntries(t, e.node.StateDir); len(names) > 0 {
		t.Errorf("state dir holds %v after bad flags, want nothing", names)
	}
	for _, p := range calicoPorts {
		rt, err1 := fw.runtimePort(zone, p)
		perm, err2 := fw.permanentPort(zone, p)
		if err1 != nil || err2 != nil || rt || perm {
			t.Errorf("port %s in zone %s after bad flags: runtime %v (%v), permanent %v (%v); want absent", p, zone, rt, err1, perm, err2)
		}
	}
	if slices.Contains(fw.permanentZones(t), "calico-prep") {
		t.Errorf("firewalld has zone calico-prep after bad flags")
	}
	if reqs := e.requests(t, start); len(reqs) > 0 {
		t.Errorf("agent made API requests with bad flags: %s", describeRequests(reqs))
	}
	n, err := e.admin.CoreV1().Nodes().Get(t.Context(), e.name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := n.Labels[nodestatus.LabelReady]; ok || condition(n) != nil {
		t.Errorf("node changed by an agent with bad flags: %s", describeNode(n))
	}

	// The same flags without the bad one do change all of that, so the looks above can fail.
	if code, out := runAgent(t, e.node, wait, e.agentArgs("--once")...); code != 0 {
		t.Fatalf("agent run --once with good flags: exit status %d:\n%s", code, out)
	}
	if msg := fw.missingPorts(zone); msg != "" {
		t.Errorf("after run --once with good flags: %s", msg)
	}
	if len(dirEntries(t, e.node.NMConfDir)) == 0 || len(e.requests(t, start)) == 0 {
		t.Errorf("run --once with good flags wrote no drop-in or made no API request")
	}
}

// TestSIGTERMExitsAndKeepsPreparation: SIGTERM, as the kubelet sends it when the pod is
// deleted or updated, ends the agent with status 0 well within the pod's grace period, and
// nothing it prepared is undone: the node stays ready for Calico without the agent.
func TestSIGTERMExitsAndKeepsPreparation(t *testing.T) {
	e := setup(t, kube.Cluster(t), "e2e-sigterm")
	fw := dialBus(t, e.node)
	zone := fw.defaultZone(t)
	w := e.watchNode()
	a := startAgent(t, e.node, e.agentArgs()...)
	w.waitFor(t, wait, "label true and condition True", statusIs(true, "Prepared", ""))
	a.waitHTTP("/readyz", 200)
	dropIn, err := os.ReadFile(dropInPath(e.node))
	if err != nil {
		t.Fatalf("drop-in after the agent prepared the node: %v", err)
	}
	state := dirEntries(t, e.node.StateDir)
	if len(state) == 0 {
		t.Fatalf("state dir empty after the agent prepared the node")
	}

	sent := time.Now()
	if err := a.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Kubernetes' default terminationGracePeriodSeconds; the kubelet kills after it.
	code, err := a.Wait(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("exited %s after SIGTERM", time.Since(sent).Round(time.Millisecond))
	if code != 0 {
		t.Errorf("exit status %d after SIGTERM, want 0; log:\n%s", code, a.logTail(20))
	}

	if msg := fw.missingPorts(zone); msg != "" {
		t.Errorf("after the agent exited: %s", msg)
	}
	if !slices.Contains(fw.permanentZones(t), "calico-prep") {
		t.Errorf("firewalld zone calico-prep gone after the agent exited")
	}
	if got, err := os.ReadFile(dropInPath(e.node)); err != nil || string(got) != string(dropIn) {
		t.Errorf("drop-in after the agent exited: %q, %v; want it unchanged", got, err)
	}
	if got := dirEntries(t, e.node.StateDir); !slices.Equal(got, state) {
		t.Errorf("state dir after exit holds %v, before %v", got, state)
	}
	n, err := e.admin.CoreV1().Nodes().Get(context.Background(), e.name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !conditionIs(corev1.ConditionTrue, "Prepared", "")(n) || n.Labels[nodestatus.LabelReady] != "true" {
		t.Errorf("after the agent exited: %s; want it still reported prepared", describeNode(n))
	}
}
