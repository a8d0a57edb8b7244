package e2e

import (
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/calico-prep/calico-prep/test/kubetest"
	"github.com/calico-prep/calico-prep/test/testkit"
)

// outage is how long the apiserver stays away, issue #6's figure.
const outage = 30 * time.Second

// TestAPIServerOutage: the apiserver goes away for 30 s. The agent keeps preparing the host
// meanwhile (a firewalld reload that drops a rule gets it back) and keeps judging it (a
// collision makes /readyz 503); it does not crash; once the apiserver is back, the Node says
// what the host is, with the Event for the change. It takes an apiserver of its own.
func TestAPIServerOutage(t *testing.T) {
	c := kubetest.Start(t)
	e := setup(t, c, "e2e-outage")
	fw := dialBus(t, e.node)
	zone := fw.defaultZone(t)
	w := e.watchNode()
	a := startAgent(t, e.node, e.agentArgs()...)
	w.waitFor(t, wait, "condition True", conditionIs(corev1.ConditionTrue, "Prepared", ""))
	e.waitEvents(1)
	a.settle(t)

	c.StopAPIServer(t)
	down := time.Now()

	bgp := calicoPorts[0]
	fw.removePermanentPort(t, zone, bgp)
	fw.reloadFirewalld(t)
	testkit.Eventually(t, wait, func() string { return fw.missingPorts(zone) })

	e.uplinkAddr(true, collisionAddr)
	a.waitHTTP("/readyz", 503)
	a.waitHTTP("/healthz", 200)

	time.Sleep(time.Until(down.Add(outage)))
	if a.Exited() {
		t.Fatalf("agent exited during the outage (%s):\n%s", a.State(), a.logTail(20))
	}
	restart := time.Now()
	c.StartAPIServer(t)
	ready := time.Now()

	s := w.waitFor(t, 3*time.Minute, "label false and condition False after the outage",
		statusIs(false, "PodCIDROverlap", collisionMessage))
	// The apiserver serves requests before kubetest's readiness probe, which also waits for
	// namespace default, sees it ready.
	t.Logf("apiserver away %s; restarted, it took %s to be ready; label and condition were seen false %s after the restart began",
		restart.Sub(down).Round(time.Millisecond), ready.Sub(restart).Round(time.Millisecond), s.at.Sub(restart).Round(time.Millisecond))
	evs := e.waitEvents(2)
	if ev := evs[1]; ev.Type != corev1.EventTypeWarning || ev.Reason != "CalicoPrepNotReady" {
		t.Errorf("event after the outage = %s, want a Warning CalicoPrepNotReady", describeEvents(evs[1:]))
	}
	if a.Exited() {
		t.Fatalf("agent exited (%s):\n%s", a.State(), a.logTail(20))
	}
	if err := a.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("agent process: %v", err)
	}
	a.waitHTTP("/healthz", 200)
	if msg := fw.missingPorts(zone); msg != "" {
		t.Error(msg)
	}
}
