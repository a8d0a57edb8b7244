package e2e

import (
	"bytes"
	"context"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/calico-prep/calico-prep/test/testkit"
)

// idle is how long the collision test watches a steady node for requests.
const idle = 20 * time.Second

// TestCollisionReportedThenCleared is issue #6's end-to-end case: a node whose host network
// collides with the pod CIDR is reported not ready (condition, label, Event, /readyz) while
// its preparation is still done; removing the colliding address is one netlink event, after
// which the node is reported ready with exactly one more Event and the writes that needs; then
// a steady node costs no API request at all. It also runs the real /metrics through promtool.
func TestCollisionReportedThenCleared(t *testing.T) {
	e := setup(t, kube.Cluster(t), "e2e-collide")
	fw := dialBus(t, e.node)
	w := e.watchNode()
	e.uplinkAddr(true, collisionAddr)

	start := time.Now()
	a := startAgent(t, e.node, e.agentArgs()...)

	w.waitFor(t, wait, "label false and condition False for the collision", statusIs(false, "PodCIDROverlap", collisionMessage))
	evs := e.waitEvents(1)
	if ev := evs[0]; ev.Type != corev1.EventTypeWarning || ev.Reason != "CalicoPrepNotReady" || !strings.Contains(ev.Message, collisionMessage) {
		t.Errorf("first event = %s, want a Warning CalicoPrepNotReady naming the collision", describeEvents(evs))
	}
	body := a.waitHTTP("/readyz", 503)
	if !strings.Contains(body, "cidr/ipv4-pool") || !strings.Contains(body, collisionMessage) {
		t.Errorf("/readyz while colliding said %q, want the failing check and its message", body)
	}
	if v := a.metric(t, "calico_prep_ready"); v != 0 {
		t.Errorf("calico_prep_ready = %v while colliding, want 0", v)
	}
	// What calico-prep prepares does not wait for the node to be ready.
	zone := fw.defaultZone(t)
	testkit.Eventually(t, wait, func() string { return fw.missingPorts(zone) })
	a.waitHTTP("/healthz", 200)

	// The fix: one netlink event, no resync (an hour away), no restart.
	fixed := time.Now()
	e.uplinkAddr(false, collisionAddr)
	w.waitFor(t, wait, "label true and condition True after the fix", statusIs(true, "Prepared", ""))
	// Nothing in between: the condition goes from the collision straight to prepared.
	for _, s := range w.since(fixed) {
		c := condition(s.node)
		if c != nil && c.Status == corev1.ConditionTrue {
			break
		}
		if c == nil || c.Reason != "PodCIDROverlap" {
			t.Errorf("between fix and ready the node went through %s", describeNode(s.node))
		}
	}
	evs = e.waitEvents(2)
	if ev := evs[1]; ev.Type != corev1.EventTypeNormal || ev.Reason != "CalicoPrepReady" {
		t.Errorf("second event = %s, want a Normal CalicoPrepReady", describeEvents(evs[1:]))
	}
	a.waitHTTP("/readyz", 200)
	// The fix costs the label and annotation and the condition (together, in either order),
	// then the Event: nothing more.
	var fixWrites []string
	for _, r := range e.requests(t, fixed) {
		fixWrites = append(fixWrites, r.Verb+" "+r.Resource+"/"+r.Subresource)
	}
	if len(fixWrites) == 3 {
		slices.Sort(fixWrites[:2])
	}
	if want := []string{"patch nodes/", "patch nodes/status", "create events/"}; !slices.Equal(fixWrites, want) {
		t.Errorf("requests after the fix = %q, want %q (the two patches in any order)", fixWrites, want)
	}

	// A steady node: no request at all, not even a read.
	quiet := time.Now()
	time.Sleep(idle)
	if reqs := e.requests(t, quiet); len(reqs) > 0 {
		t.Errorf("%d API requests in %s of idle: %s", len(reqs), idle, describeRequests(reqs))
	}
	if evs := e.events(); len(evs) != 2 {
		t.Errorf("%d events after the idle period, want 2: %s", len(evs), describeEvents(evs))
	}

	// Everything the ServiceAccount asked for, it was allowed.
	all := e.requests(t, start)
	for _, r := range all {
		if r.Code >= 400 {
			t.Errorf("agent request denied or failed: %s %s → %d", r.Verb, r.RequestURI, r.Code)
		}
	}
	t.Logf("API requests of the agent in this test: %d: %s", len(all), describeRequests(all))

	_, metrics, err := a.get(context.Background(), "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if !hasLine(metrics, "calico_prep_ready 1") {
		t.Errorf("/metrics has no line \"calico_prep_ready 1\":\n%s", grepLines(metrics, "calico_prep_ready"))
	}
	promtoolCheck(t, metrics)
}

func hasLine(text, line string) bool {
	for l := range strings.SplitSeq(text, "\n") {
		if l == line {
			return true
		}
	}
	return false
}

func grepLines(text, substr string) string {
	var out []string
	for l := range strings.SplitSeq(text, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// promtoolCheck lints an exposition with `promtool check metrics`, which prints nothing and
// exits 0 when it is clean.
func promtoolCheck(t testing.TB, exposition string) {
	t.Helper()
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = strings.NewReader(exposition)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil || out.Len() > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out.String())
	}
}
