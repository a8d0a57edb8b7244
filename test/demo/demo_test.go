// Package demo is the newcomer's first command (make demo): it brings up a sandboxed node
// like the seed guide's (ens33 on 192.168.79.128/24, firewalld and NetworkManager running,
// Calico's links present), shows it, runs the agent's full job against it and shows it again,
// with a real kube-apiserver for the Node's label and condition. It is also a test: every
// "after" view is asserted.
package demo

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/calico-prep/calico-prep/test/kubetest"
	"github.com/calico-prep/calico-prep/test/testbed"
)

func say(format string, args ...any) { fmt.Fprintf(os.Stdout, format+"\n", args...) }

func section(title string) { say("\n━━ %s ━━", title) }

func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	bin := buildAgent(t)

	section("a sandboxed node: its own network namespace, real firewalld and NetworkManager on a private bus")
	n := testbed.Up(t, testbed.Options{Name: "demo", Firewalld: true, NetworkManager: true, Calico: true})
	say("node %s: uplink %s %s, netns %s", n.Name, n.Uplink, n.UplinkAddr, n.NetNS)
	// Kubernetes needs IP forwarding; a fresh namespace has it off (like many fresh hosts).
	mustExec(t, ctx, n, "sysctl", "-qw", "net.ipv4.ip_forward=1")

	// This machine has no ipip driver, so the demo uses VXLAN; everything else is the default.
	args := []string{"--node-name=" + n.Name, "--encapsulation=vxlan",
		"--state-dir=" + n.StateDir, "--networkmanager-conf-dir=" + n.NMConfDir, "--log-level=warn"}
	// hack/demo.sh turns the API server off when its binaries are not built yet (a cold build
	// takes minutes); the test suite always has it.
	var c *kubetest.Cluster
	runArgs := []string{"run", "--once", "--pod-cidr=172.16.0.0/16"}
	if os.Getenv("CALICO_PREP_DEMO_KUBE") != "off" {
		c = kubetest.Start(t)
		server := c.RelayInto(t, n.NetNS)
		createNode(t, c, n)
		c.Kubectl(t, "apply", "-f", writeRBAC(t))
		runArgs = append(runArgs, "--kubeconfig="+c.KubeconfigFor(t, c.Token(t, "calico-prep", "calico-prep", n.Name), server))
	} else {
		say("(no API server: its binaries are not built yet; run 'make demo KUBE=1' to build them once)")
	}

	section("before: firewalld zone of ens33, NetworkManager devices, links")
	showNode(t, ctx, n)

	section("agent check (read-only) with the default pod CIDR 192.168.0.0/16")
	out, code := runAgent(ctx, n, bin, append([]string{"check"}, args...)...)
	say("%s(exit %d)", out, code)
	if code != 1 || !strings.Contains(out, "pod CIDR 192.168.0.0/16 overlaps ens33 address 192.168.79.128/24") {
		t.Fatalf("check should report the seed's overlap and exit 1, got exit %d", code)
	}

	section("agent run --once with the pod CIDR the seed guide picks, 172.16.0.0/16")
	out, code = runAgent(ctx, n, bin, append(runArgs, args...)...)
	say("%s(exit %d)", out, code)
	if code != 0 {
		t.Fatalf("run --once exit %d, want 0", code)
	}

	section("after")
	fw, nm := showNode(t, ctx, n)
	for _, want := range []string{"179", "4789"} {
		if !strings.Contains(fw, want) {
			t.Errorf("firewalld zone lacks %s after the run", want)
		}
	}
	for _, dev := range []string{testbed.CaliVeth, "tunl0", "vxlan.calico"} {
		if !strings.Contains(nm, dev+":unmanaged") {
			t.Errorf("NetworkManager still manages %s", dev)
		}
	}
	if !strings.Contains(nm, n.Uplink+":connected") {
		t.Errorf("the uplink %s must stay managed", n.Uplink)
	}
	say("drop-in %s:", filepath.Join(n.NMConfDir, "calico-prep.conf"))
	dropIn, err := os.ReadFile(filepath.Join(n.NMConfDir, "calico-prep.conf"))
	if err != nil {
		t.Fatal(err)
	}
	say("%s", dropIn)

	if c != nil {
		showAPINode(t, c, n)
	}

	section("agent cleanup: removes exactly what calico-prep added")
	out, code = runAgent(ctx, n, bin, append([]string{"cleanup", "--pod-cidr=172.16.0.0/16"}, args...)...)
	say("%s(exit %d)", out, code)
	if code != 0 {
		t.Fatalf("cleanup exit %d", code)
	}
	say("\nthe sandbox is torn down when the demo ends; the host is left as it was.")
}

func showAPINode(t *testing.T, c *kubetest.Cluster, n *testbed.Node) {
	t.Helper()
	section("the Node in the API server")
	labels := c.Kubectl(t, "get", "node", n.Name, "-o", `jsonpath={.metadata.labels.calico-prep\.io/ready}`)
	cond := c.Kubectl(t, "get", "node", n.Name, "-o", `jsonpath={range .status.conditions[?(@.type=="CalicoPrepReady")]}{.status} {.reason}: {.message}{end}`)
	say("label calico-prep.io/ready=%s\ncondition CalicoPrepReady %s", labels, cond)
	say("%s", c.Kubectl(t, "get", "events", "-n", "default", "--field-selector", "involvedObject.name="+n.Name, "-o", "custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message"))
	if labels != "true" || !strings.HasPrefix(cond, "True Prepared") {
		t.Errorf("node not reported ready: label %q, condition %q", labels, cond)
	}
}

func buildAgent(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "agent")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "github.com/calico-prep/calico-prep/cmd/agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build agent: %v\n%s", err, out)
	}
	return bin
}

// runAgent runs the agent inside the node's network namespace with the node's system bus.
func runAgent(ctx context.Context, n *testbed.Node, bin string, args ...string) (string, int) {
	out, err := n.Exec(ctx, bin, args...)
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	}
	return string(out) + err.Error() + "\n", -1
}

func mustExec(t *testing.T, ctx context.Context, n *testbed.Node, name string, args ...string) string {
	t.Helper()
	out, err := n.Exec(ctx, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// showNode prints firewalld's view of the uplink zone, NetworkManager's devices and the links,
// and returns the first two for assertions.
func showNode(t *testing.T, ctx context.Context, n *testbed.Node) (fw, nm string) {
	t.Helper()
	// firewall-cmd and nmcli talk to the node's private bus (DBUS_SYSTEM_BUS_ADDRESS); the
	// agent itself speaks D-Bus directly.
	zone, err := n.Exec(ctx, "firewall-cmd", "--get-zone-of-interface="+n.Uplink)
	if err != nil { // not bound to a zone: the default zone applies
		zone = []byte(mustExec(t, ctx, n, "firewall-cmd", "--get-default-zone"))
	}
	fw = mustExec(t, ctx, n, "firewall-cmd", "--zone="+strings.TrimSpace(string(zone)), "--list-all")
	say("firewalld, zone of %s:\n%s", n.Uplink, fw)
	nm = mustExec(t, ctx, n, "nmcli", "-t", "-f", "DEVICE,STATE", "device")
	say("NetworkManager devices (DEVICE:STATE):\n%s", nm)
	say("links:\n%s", mustExec(t, ctx, n, "ip", "-br", "link"))
	return fw, nm
}

func createNode(t *testing.T, c *kubetest.Cluster, n *testbed.Node) {
	t.Helper()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name}}
	client := c.Client(t)
	created, err := client.CoreV1().Nodes().Create(t.Context(), node, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	created.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: n.UplinkAddr.Addr().String()}}
	if _, err := client.CoreV1().Nodes().UpdateStatus(t.Context(), created, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// writeRBAC grants the agent's ServiceAccount exactly what deploy/ grants it.
func writeRBAC(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "rbac.yaml")
	if err := os.WriteFile(path, []byte(rbac), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

const rbac = `apiVersion: v1
kind: Namespace
metadata: {name: calico-prep}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: calico-prep, namespace: calico-prep}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: calico-prep-demo}
rules:
- {apiGroups: [""], resources: [nodes], verbs: [get, list, watch, patch]}
- {apiGroups: [""], resources: [nodes/status], verbs: [patch]}
- {apiGroups: [""], resources: [events], verbs: [create, patch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: calico-prep-demo}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: calico-prep-demo}
subjects:
- {kind: ServiceAccount, name: calico-prep, namespace: calico-prep}
`
