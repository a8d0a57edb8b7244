package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/calico-prep/calico-prep/pkg/calico"
	"github.com/calico-prep/calico-prep/pkg/nodestatus"
	"github.com/calico-prep/calico-prep/pkg/report"
	"github.com/calico-prep/calico-prep/test/calicotest"
	"github.com/calico-prep/calico-prep/test/kubetest"
	"github.com/calico-prep/calico-prep/test/testkit"
)

// calicoEnv is the env block of the calico-node the tests pretend to run: a VXLAN pool (this
// kernel has no ipip driver) clear of the uplink, no BGP. The pool variables only seed
// calico-node's first pool; Calico's IP pools win over them once they exist.
var calicoEnv = []string{
	calico.EnvIPv4PoolCIDR + "=" + podCIDR,
	calico.EnvIPv4PoolIPIP + "=Never",
	calico.EnvIPv4PoolVXLAN + "=Always",
	calico.EnvNetworkingBackend + "=vxlan",
}

// calicoArgs are agentArgs without the pool flags, which would win over Calico's pools.
func (e *env) calicoArgs(extra ...string) []string {
	var args []string
	for _, a := range e.agentArgs(extra...) {
		if !strings.HasPrefix(a, "--encapsulation=") && !strings.HasPrefix(a, "--pod-cidr=") {
			args = append(args, a)
		}
	}
	return args
}

// portState says whether p is open in zone at runtime and permanently.
func (b bus) portState(zone string, p port) string {
	rt, err := b.runtimePort(zone, p)
	if err != nil {
		return err.Error()
	}
	perm, err := b.permanentPort(zone, p)
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%s runtime %t permanent %t", p, rt, perm)
}

// waitPorts waits until every port of open is open, runtime and permanent, and every port of
// closed is closed in both.
func (b bus) waitPorts(t testing.TB, zone string, open, closed []port) {
	t.Helper()
	testkit.Eventually(t, wait, func() string {
		var wrong []string
		for _, p := range open {
			if s := b.portState(zone, p); s != p.String()+" runtime true permanent true" {
				wrong = append(wrong, s)
			}
		}
		for _, p := range closed {
			if s := b.portState(zone, p); s != p.String()+" runtime false permanent false" {
				wrong = append(wrong, s)
			}
		}
		if len(wrong) > 0 {
			return fmt.Sprintf("zone %s: %s", zone, strings.Join(wrong, "; "))
		}
		return ""
	})
}

// statusBegins is statusIs for a condition message that begins with message (calico/config
// appends its warnings).
func statusBegins(ready bool, reason, message string) func(*corev1.Node) bool {
	is := statusIs(ready, reason, "")
	return func(n *corev1.Node) bool { return is(n) && strings.HasPrefix(condition(n).Message, message) }
}

// nodeReport decodes the Node's calico-prep.io/report annotation.
func nodeReport(t testing.TB, n *corev1.Node) report.Node {
	t.Helper()
	var r report.Node
	if err := json.Unmarshal([]byte(n.Annotations[nodestatus.AnnotationReport]), &r); err != nil {
		t.Fatalf("decode the report of node %s: %v", n.Name, err)
	}
	return r
}

// annotate sets (or with "" removes) calico-node's annotations on the Node, as calico-node does.
func (e *env) annotate(t testing.TB, annotations map[string]string) {
	t.Helper()
	m := map[string]any{}
	for k, v := range annotations {
		if v == "" {
			m[k] = nil
		} else {
			m[k] = v
		}
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": m}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.CoreV1().Nodes().Patch(context.Background(), e.name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "calico-node"}); err != nil {
		t.Fatalf("annotate node %s: %v", e.name, err)
	}
}

// TestFollowsCalicoLive runs the agent on a node before Calico exists and then installs Calico's
// CRDs and changes its resources under it, in both API groups: each change shows on the node
// (firewalld runtime and permanent, the checks, the Node), live, with no restart of anything.
func TestFollowsCalicoLive(t *testing.T) {
	c := kubetest.Start(t) // Calico's CRDs would change the other tests' agents
	e := setup(t, c, "e2e-calico")
	fw := dialBus(t, e.node)
	zone := fw.defaultZone(t)
	w := e.watchNode()
	vxlan, bgp := port{"4789", "udp"}, port{"179", "tcp"}
	a := startAgentEnv(t, e.node, calicoEnv, e.calicoArgs("--bgp-port=179")...)
	w.waitFor(t, wait, "ready before Calico", statusIs(true, "Prepared", ""))
	fw.waitPorts(t, zone, []port{vxlan}, []port{bgp})
	if v := a.metric(t, `calico_prep_check_status{check="calico/config",status="not-applicable"}`); v != 1 {
		t.Errorf("calico/config before Calico's CRDs: not-applicable = %v, want 1", v)
	}
	firewalldPID := e.node.PID("firewalld")
	// Another tool's runtime-only rule: a reload of firewalld would drop it.
	other := port{"1234", "tcp"}
	var z string
	must(t, fw.call(context.Background(), fwName, fwPath, fwName+".zone.addPort", []any{zone, other.num, other.proto, int32(0)}, &z))

	t.Run("v3 CRDs installed after the agent started", func(t *testing.T) {
		calicotest.Install(t, c, calicotest.V3)
		calicotest.Apply(t, c, `
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec: {vxlanPort: 8472}
`)
		fw.waitPorts(t, zone, []port{{"8472", "udp"}}, []port{vxlan})
	})

	t.Run("crd.projectcalico.org/v1 is preferred", func(t *testing.T) {
		calicotest.Install(t, c, calicotest.V1)
		// No FelixConfiguration there: Felix's default port again.
		fw.waitPorts(t, zone, []port{vxlan}, []port{{"8472", "udp"}})
	})

	t.Run("FelixConfiguration default then the node's own which wins", func(t *testing.T) {
		calicotest.Apply(t, c, `
apiVersion: crd.projectcalico.org/v1
kind: FelixConfiguration
metadata: {name: default}
spec: {vxlanPort: 8472, wireguardEnabled: true, prometheusMetricsEnabled: true}
`)
		fw.waitPorts(t, zone, []port{{"8472", "udp"}, {"51820", "udp"}, {"9091", "tcp"}}, []port{vxlan})
		// This kernel has no wireguard module: the node is reported not ready, and still
		// prepared.
		w.waitFor(t, wait, "the wireguard module missing", statusIs(false, "ModuleMissing", ""))
		calicotest.Apply(t, c, fmt.Sprintf(`
apiVersion: crd.projectcalico.org/v1
kind: FelixConfiguration
metadata: {name: node.%s}
spec: {vxlanPort: 4790, wireguardListeningPort: 51830}
`, e.name))
		fw.waitPorts(t, zone, []port{{"4790", "udp"}, {"51830", "udp"}, {"9091", "tcp"}}, []port{{"8472", "udp"}, {"51820", "udp"}})
		calicotest.Apply(t, c, `
apiVersion: crd.projectcalico.org/v1
kind: FelixConfiguration
metadata: {name: default}
spec: {vxlanPort: 8472, wireguardEnabled: false, prometheusMetricsEnabled: true}
`)
		fw.waitPorts(t, zone, []port{{"4790", "udp"}, {"9091", "tcp"}}, []port{{"51830", "udp"}})
		w.waitFor(t, wait, "ready with WireGuard off", statusIs(true, "Prepared", ""))
	})

	t.Run("Typha's Service", func(t *testing.T) {
		calicotest.Apply(t, c, `
apiVersion: v1
kind: Service
metadata: {name: calico-typha, namespace: kube-system}
spec: {ports: [{name: calico-typha, port: 5473, targetPort: 5473}]}
`)
		fw.waitPorts(t, zone, []port{{"5473", "tcp"}}, nil)
	})

	t.Run("nothing was restarted or reloaded", func(t *testing.T) {
		if a.Exited() {
			t.Fatalf("agent exited: %s", a.State())
		}
		if pid := e.node.PID("firewalld"); pid != firewalldPID {
			t.Errorf("firewalld pid %d, was %d", pid, firewalldPID)
		}
		if rt, err := fw.runtimePort(zone, other); err != nil || !rt {
			t.Errorf("another tool's runtime-only %s: %t, %v; firewalld was reloaded", other, rt, err)
		}
	})

	t.Run("an explicit flag wins and the disagreement is reported", func(t *testing.T) {
		calicotest.Apply(t, c, `
apiVersion: crd.projectcalico.org/v1
kind: BGPConfiguration
metadata: {name: default}
spec: {listenPort: 1179}
`)
		want := "BGP port: 179 from --bgp-port, but BGPConfiguration default spec.listenPort says 1179; using 179 (an explicit setting wins)"
		s := w.waitFor(t, wait, "the warning in the report", func(n *corev1.Node) bool {
			return slices.Contains(nodeReport(t, n).Warnings, want)
		})
		if c := condition(s.node); c == nil || c.Status != corev1.ConditionTrue {
			t.Errorf("a disagreement made the node not ready: %s", describeNode(s.node))
		}
	})

	t.Run("the CIDR checks use every enabled IP pool", func(t *testing.T) {
		calicotest.Apply(t, c, `
apiVersion: crd.projectcalico.org/v1
kind: IPPool
metadata: {name: default-ipv4-ippool}
spec: {cidr: 10.250.0.0/16, vxlanMode: Always}
---
apiVersion: crd.projectcalico.org/v1
kind: IPPool
metadata: {name: collides}
spec: {cidr: 192.168.0.0/16, vxlanMode: Always}
`)
		s := w.waitFor(t, wait, "the second pool's collision with the uplink", statusIs(false, "PodCIDROverlap", ""))
		if want := "pod CIDR 192.168.0.0/16 overlaps " + e.node.Uplink + " address " + e.node.UplinkAddr.String(); !strings.HasPrefix(condition(s.node).Message, want) {
			t.Errorf("condition message %q, want it to begin %q", condition(s.node).Message, want)
		}
		calicotest.Apply(t, c, `
apiVersion: crd.projectcalico.org/v1
kind: IPPool
metadata: {name: collides}
spec: {cidr: 192.168.0.0/16, vxlanMode: Always, disabled: true}
`)
		s = w.waitFor(t, wait, "ready with the colliding pool disabled", statusIs(true, "Prepared", ""))
		if got := fmt.Sprint(nodeReport(t, s.node).Pools); got != "[10.250.0.0/16]" {
			t.Errorf("report pools %s, want Calico's enabled pool", got)
		}
	})

	t.Run("an invalid value is reported and changes nothing", func(t *testing.T) {
		calicotest.Apply(t, c, fmt.Sprintf(`
apiVersion: crd.projectcalico.org/v1
kind: FelixConfiguration
metadata: {name: node.%s}
spec: {vxlanPort: 70000}
`, e.name))
		msg := fmt.Sprintf(`invalid values in Calico's resources, which change nothing here: FelixConfiguration "node.%s": spec.vxlanPort: 70000 is not a port (want 1-65535); keeping its previous version`, e.name)
		w.waitFor(t, wait, "InvalidCalicoConfig", statusBegins(false, "InvalidCalicoConfig", msg))
		fw.waitPorts(t, zone, []port{{"4790", "udp"}}, nil)
		calicotest.Apply(t, c, fmt.Sprintf(`
apiVersion: crd.projectcalico.org/v1
kind: FelixConfiguration
metadata: {name: node.%s}
spec: {vxlanPort: 4791}
`, e.name))
		w.waitFor(t, wait, "ready once fixed", statusIs(true, "Prepared", ""))
		fw.waitPorts(t, zone, []port{{"4791", "udp"}}, []port{{"4790", "udp"}})
	})

	t.Run("calico-node's chosen address against the prediction", func(t *testing.T) {
		e.annotate(t, map[string]string{calico.AnnotationIPv4Address: "10.99.0.7/24"})
		msg := fmt.Sprintf("calico-node chose 10.99.0.7/24 (on no interface of this node), but first-found (default) predicts %s (%s): calico-node was configured with another method, or this host's interfaces changed since it started",
			e.node.UplinkAddr, e.node.Uplink)
		w.waitFor(t, wait, "the mismatch", statusBegins(false, "CalicoAddressMismatch", msg))
		e.annotate(t, map[string]string{calico.AnnotationIPv4Address: e.node.UplinkAddr.String()})
		w.waitFor(t, wait, "ready once calico-node agrees", statusIs(true, "Prepared", ""))
	})

	t.Run("Calico removed: back to the flags with Calico's ports closed", func(t *testing.T) {
		calicotest.Uninstall(t, c, calicotest.V1)
		calicotest.Uninstall(t, c, calicotest.V3)
		fw.waitPorts(t, zone, []port{vxlan}, []port{{"4791", "udp"}, {"51830", "udp"}, {"9091", "tcp"}, {"5473", "tcp"}})
		testkit.Eventually(t, wait, func() string {
			if v := a.metric(t, `calico_prep_check_status{check="calico/config",status="not-applicable"}`); v != 1 {
				return fmt.Sprintf("calico/config without Calico's CRDs: not-applicable = %v, want 1", v)
			}
			return ""
		})
	})

	// Every request of the agent was allowed, and none wrote to anything but its Node and Events.
	for _, r := range e.requests(t, a.started) {
		if r.Code >= 400 && r.Code != 429 {
			t.Errorf("agent request refused or failed: %s %s → %d", r.Verb, r.RequestURI, r.Code)
		}
		if r.IsWrite() && r.Resource != "nodes" && r.Resource != "events" {
			t.Errorf("agent wrote %s %s", r.Verb, r.RequestURI)
		}
	}
}

// TestCalicoRequests: the agent's API requests at start on a node of a cluster where Calico is
// installed, and that a steady node then makes none at all (its watches stay open).
func TestCalicoRequests(t *testing.T) {
	c := kubetest.Start(t)
	calicotest.Install(t, c, calicotest.V1)
	calicotest.Install(t, c, calicotest.Operator, "installations.operator.tigera.io")
	calicotest.Apply(t, c, `
apiVersion: crd.projectcalico.org/v1
kind: FelixConfiguration
metadata: {name: default}
spec: {vxlanPort: 8472}
---
apiVersion: crd.projectcalico.org/v1
kind: IPPool
metadata: {name: default-ipv4-ippool}
spec: {cidr: 10.244.0.0/16, vxlanMode: Always}
`)
	e := setup(t, c, "e2e-calico-requests")
	w := e.watchNode()
	a := startAgentEnv(t, e.node, calicoEnv, e.calicoArgs()...)
	w.waitFor(t, wait, "ready", statusIs(true, "Prepared", ""))
	a.settle(t)
	start := e.requests(t, a.started)
	var reads, writes []string
	for _, r := range start {
		if r.IsWrite() {
			writes = append(writes, r.Verb+" "+r.Resource)
		} else {
			reads = append(reads, r.Verb+" "+r.Resource)
		}
	}
	slices.Sort(reads)
	t.Logf("%d requests at start: %d reads %q, %d writes %q", len(start), len(reads), reads, len(writes), writes)
	// One watch of each (watch-list): CRDs, FelixConfiguration default and node.NODE,
	// BGPConfiguration, IPPools, Installation, Typha's Service, calico-config; and its Node's.
	if want := 9; len(reads) != want {
		t.Errorf("%d reads at start, want %d", len(reads), want)
	}
	// The first pass already follows Calico (8472/udp, not Felix's default 4789): the label and
	// report, the condition, the Event, and nothing to correct after.
	if want := 3; len(writes) != want {
		t.Errorf("%d writes at start, want %d: %s", len(writes), want, describeRequests(start))
	}

	quiet := time.Now()
	time.Sleep(idle)
	if reqs := e.requests(t, quiet); len(reqs) > 0 {
		t.Errorf("%d API requests in %s of idle: %s", len(reqs), idle, describeRequests(reqs))
	}
}
