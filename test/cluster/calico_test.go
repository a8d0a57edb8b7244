//go:build calico

package cluster

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/calico-prep/calico-prep/pkg/nodestatus"
	"github.com/calico-prep/calico-prep/pkg/report"
	"github.com/calico-prep/calico-prep/test/testbed"
	"github.com/calico-prep/calico-prep/test/testkit"
)

// helloImage is the workload image (cmd/hello); a name no registry serves, so a missing import
// shows as a pull the egress guard counts rather than as a download.
const helloImage = "e2e.calico-prep.invalid/hello:v1"

// TestRealCalico is the mission's acceptance test: the real Calico v3.32.1, built from source
// (hack/build-calico.sh) and packed under its own image names (hack/calico-images.sh), installed
// the way README's Deploy section says onto a two-node cluster laid out like the seed's hosts
// (ens33 in 192.168.79.0/24, a second NIC that first-found would pick), each node with real
// firewalld in its default zone and NetworkManager. calico-prep holds Calico off the nodes while
// its default pool overlaps ens33, `agent plan` says what to set, the operator's env patch lets
// calico-node start, and pods talk across the nodes through firewalld. Then what breaks without
// calico-prep, and what a firewalld reload and a NetworkManager restart do to the traffic.
// Nothing may leave the test's networks (the egress guard), and the host stays as it was.
func TestRealCalico(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the cluster's nodes are namespaces, mounts and cgroups")
	}
	hostBefore := snapshotHost(t)
	t.Cleanup(func() {
		if d := hostBefore.diff(snapshotHost(t), true); d != "" {
			t.Errorf("the host changed after the cluster was torn down:\n%s", d)
		}
	})
	repo, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()

	began := time.Now()
	calicoDir := strings.TrimSpace(run(t, repo, nil, filepath.Join(repo, "hack/calico-images.sh")))
	t.Logf("figure: Calico images ready in %s (%s)", time.Since(began).Round(time.Second), calicoDir)
	logImageSizes(t, calicoDir)
	began = time.Now()
	run(t, repo, nil, "make", "image", "IMAGE_OUT="+work, "IMAGE_TAGS="+agentTag, "VERSION="+agentTag, "IMAGE_PLATFORMS=linux/amd64")
	agentBin := filepath.Join(work, "agent-bin")
	run(t, repo, []string{"CGO_ENABLED=0"}, "go", "build", "-trimpath", "-o", agentBin, "./cmd/agent")
	images := []string{filepath.Join(work, "calico-prep.oci.tar"), buildHello(t)}
	for _, name := range []string{"node", "cni", "kube-controllers"} {
		images = append(images, filepath.Join(calicoDir, name+".oci.tar"))
	}
	t.Logf("figure: agent and workload images built in %s", time.Since(began).Round(time.Second))

	began = time.Now()
	c := Up(t, Options{Images: images, Seed: true, EgressGuard: true})
	t.Logf("figure: cluster bring-up took %s (%v)", time.Since(began).Round(time.Second), c.Took)
	during := snapshotHost(t)
	during.cgroups = hostBefore.cgroups // the nodes' own cgroup roots, removed at teardown
	if d := hostBefore.diff(during, false); d != "" {
		t.Errorf("the host changed while the cluster runs:\n%s", d)
	}
	e := &calicoE2E{c: c, repo: repo, work: work, agentBin: agentBin, firstFound: map[string]string{}}

	step(t, "calico-prep reports Calico's default pool overlapping ens33", e.deployAgent)
	step(t, "Calico applied, held off every node", e.applyCalico)
	step(t, "agent plan, applied as an operator would: calico-node starts", e.planAndPatch)
	step(t, "calico-node's address is calico-prep's prediction", e.addressAgrees)
	step(t, "pods talk across the nodes through firewalld", e.podsTalk)
	step(t, "Felix and calico-kube-controllers are healthy; calico-prep's link checks pass on Felix's links", e.felixAndLinks)
	step(t, "firewalld reload and NetworkManager restart while traffic flows", e.reloadAndRestart)
	step(t, "without calico-prep's firewalld rules pod traffic fails", e.withoutFirewalldRules)
	step(t, "without calico-prep's NetworkManager drop-in", e.withoutDropIn)
}

// calicoE2E is the state TestRealCalico's steps share.
type calicoE2E struct {
	c        *Cluster
	repo     string
	work     string
	agentBin string
	// firstFound is each node's address under first-found, calico-prep's prediction before the
	// plan changed the method.
	firstFound map[string]string
	// pool and method are what agent plan proposed.
	pool   netip.Prefix
	method string
	// calicoApplied is when Calico's manifest was applied.
	calicoApplied time.Time
	// pods are the workload pods by node, with their addresses and network namespaces.
	pods map[string]*workload
}

// workload is a hello pod.
type workload struct {
	name  string
	addr  netip.Addr
	netns string // /proc/PID/ns/net of its container
}

func (e *calicoE2E) deployAgent(t *testing.T) {
	base := agentOverlay(t, e.repo, e.work)
	e.c.Kube.Kubectl(t, "apply", "-k", base)
	for _, n := range e.c.Nodes {
		node := waitNode(t, e.c, n.Name, 3*time.Minute, "reported unprepared", func(node *corev1.Node) bool {
			cond := NodeCondition(node, nodestatus.ConditionType)
			return cond != nil && cond.Status == corev1.ConditionFalse && node.Annotations[nodestatus.AnnotationReport] != ""
		})
		cond := NodeCondition(node, nodestatus.ConditionType)
		want := "pod CIDR 192.168.0.0/16 overlaps ens33 address " + n.UplinkAddr.String()
		if cond.Reason != "PodCIDROverlap" || !strings.Contains(cond.Message, want) {
			t.Errorf("node %s: condition %s: %s; want PodCIDROverlap naming %q", n.Name, cond.Reason, cond.Message, want)
		}
		if node.Labels[nodestatus.LabelPrepared] != "" {
			t.Errorf("node %s is labelled prepared with a colliding pool: %v", n.Name, node.Labels)
		}
		e.firstFound[n.Name] = prediction(t, node)
		t.Logf("node %s: %s; first-found would give calico-node %s", n.Name, cond.Message, e.firstFound[n.Name])
	}
}

// prediction is calico-prep's IPv4 autodetection result in the Node's report: the address the
// configured method picks on the node, as calico-node would pick it.
func prediction(t *testing.T, node *corev1.Node) string {
	t.Helper()
	r, err := report.Decode(node.Annotations[nodestatus.AnnotationReport])
	if err != nil {
		t.Fatalf("node %s: report: %v", node.Name, err)
	}
	for _, a := range r.Autodetect {
		if a.CIDR.Addr().Is4() {
			return a.Method + " " + a.Interface + " " + a.CIDR.String()
		}
	}
	t.Fatalf("node %s: no IPv4 autodetection result in the report: %+v", node.Name, r.Autodetect)
	return ""
}

func (e *calicoE2E) applyCalico(t *testing.T) {
	dir := calicoManifest(t, e.repo, e.work)
	e.calicoApplied = time.Now()
	e.c.Kube.Kubectl(t, "apply", "--server-side", "-k", dir)
	e.c.Kube.Kubectl(t, "wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
	// Before any calico-node can run: Felix reports usage to projectcalico.org unless told not
	// to, and this build has no BPF objects (they need clang), for which Felix with XDP on keeps
	// probing, creating and deleting veths. FelixConfiguration "default" is where a cluster's
	// Felix settings live; calico-node's start-up keeps what it finds there.
	felix := filepath.Join(e.work, "felixconfiguration.yaml")
	writeFile(t, felix, "apiVersion: crd.projectcalico.org/v1\nkind: FelixConfiguration\nmetadata:\n  name: default\nspec:\n  usageReportingEnabled: false\n  xdpEnabled: false\n")
	e.c.Kube.Kubectl(t, "apply", "-f", felix)
	cs := e.c.Kube.Client(t)
	var ds *appsv1.DaemonSet
	testkit.Eventually(t, time.Minute, func() string {
		var err error
		if ds, err = cs.AppsV1().DaemonSets("kube-system").Get(t.Context(), "calico-node", metav1.GetOptions{}); err != nil {
			return err.Error()
		}
		if ds.Status.ObservedGeneration != ds.Generation {
			return fmt.Sprintf("the DaemonSet controller has not seen calico-node yet: %+v", ds.Status)
		}
		return ""
	})
	if pods := podsOn(t, e.c, "kube-system", "k8s-app=calico-node"); ds.Status.DesiredNumberScheduled != 0 || len(pods) != 0 {
		t.Fatalf("calico-node scheduled onto unprepared nodes: desired %d, pods on %v", ds.Status.DesiredNumberScheduled, keys(pods))
	}
	t.Logf("calico-node DaemonSet: %d nodes desired, no pod: every node is held by its pool overlap", ds.Status.DesiredNumberScheduled)
}

func (e *calicoE2E) planAndPatch(t *testing.T) {
	plan := func(format string) string {
		cmd := exec.CommandContext(t.Context(), e.agentBin, "plan", "--kubeconfig", e.c.Kube.Kubeconfig,
			"--encapsulation", "vxlan", "--service-cidr", serviceCIDR.String(), "-o", format)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("agent plan -o %s: %v\n%s", format, err, out)
		}
		return string(out)
	}
	t.Logf("agent plan:\n%s", plan("human"))
	var env []string
	for _, l := range strings.Split(plan("env"), "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		env = append(env, l)
		k, v, _ := strings.Cut(l, "=")
		switch k {
		case "CALICO_IPV4POOL_CIDR":
			e.pool = netip.MustParsePrefix(v)
		case "IP_AUTODETECTION_METHOD":
			e.method = v
		}
	}
	t.Logf("agent plan -o env: %q", env)
	if !e.pool.IsValid() || e.pool.Overlaps(SeedLAN) || e.pool.Overlaps(HostOnlyNet) || e.pool.Overlaps(serviceCIDR) {
		t.Fatalf("the plan's pool %s: want one clear of %s, %s and %s", e.pool, SeedLAN, HostOnlyNet, serviceCIDR)
	}
	if e.method == "" || e.method == "first-found" {
		t.Fatalf("the plan's autodetection method %q: want one that picks ens33 (first-found picks ens34 here)", e.method)
	}
	if err := e.c.AllowEgress(t.Context(), e.pool); err != nil {
		t.Fatal(err)
	}
	// The operator's step: calico-node's env first, so that it never starts with the old
	// pool, then the agent's, which README step 1 keeps equal to calico-node's.
	patched := time.Now()
	e.c.Kube.Kubectl(t, append([]string{"-n", "kube-system", "set", "env", "daemonset/calico-node", "-c", "calico-node"}, env...)...)
	e.c.Kube.Kubectl(t, append([]string{"-n", "calico-prep", "set", "env", "daemonset/calico-prep", "-c", "agent"}, env...)...)
	for _, n := range e.c.Nodes {
		waitNode(t, e.c, n.Name, 3*time.Minute, "prepared", prepared)
	}
	t.Logf("figure: env patch → both nodes prepared in %s", time.Since(patched).Round(100*time.Millisecond))
	e.waitCalicoNode(t, 5*time.Minute)
	t.Logf("figure: env patch → calico-node ready on both nodes in %s (kubectl apply of Calico → ready: %s)",
		time.Since(patched).Round(100*time.Millisecond), time.Since(e.calicoApplied).Round(100*time.Millisecond))
}

// waitCalicoNode waits until calico-node runs and is ready on every node.
func (e *calicoE2E) waitCalicoNode(t *testing.T, within time.Duration) {
	t.Helper()
	testkit.Eventually(t, within, func() string {
		pods := podsOn(t, e.c, "kube-system", "k8s-app=calico-node")
		for _, n := range e.c.Nodes {
			p, ok := pods[n.Name]
			if !ok || !podReady(p) {
				return fmt.Sprintf("calico-node on %s: %s %+v", n.Name, p.Status.Phase, p.Status.ContainerStatuses)
			}
		}
		return ""
	})
}

func (e *calicoE2E) addressAgrees(t *testing.T) {
	for _, n := range e.c.Nodes {
		// The agent's report follows its new method at its next pass after the rollout.
		node := waitNode(t, e.c, n.Name, time.Minute, "annotated by calico-node and reporting the planned method", func(node *corev1.Node) bool {
			r, err := report.Decode(node.Annotations[nodestatus.AnnotationReport])
			return err == nil && len(r.Autodetect) > 0 && r.Autodetect[0].Method == e.method &&
				node.Annotations["projectcalico.org/IPv4Address"] != ""
		})
		got := node.Annotations["projectcalico.org/IPv4Address"]
		want := prediction(t, node)
		if !strings.HasSuffix(want, " "+got) || got != n.UplinkAddr.String() {
			t.Errorf("node %s: calico-node chose %s; calico-prep predicted %q; the intended address is ens33 %s", n.Name, got, want, n.UplinkAddr)
		}
		if strings.HasSuffix(e.firstFound[n.Name], " "+got) {
			t.Errorf("node %s: first-found (%s) would have picked the same address %s: the layout does not tell the methods apart", n.Name, e.firstFound[n.Name], got)
		}
		t.Logf("node %s: calico-node chose %s, calico-prep predicted %q (first-found: %q)", n.Name, got, want, e.firstFound[n.Name])
	}
}

func (e *calicoE2E) podsTalk(t *testing.T) {
	e.pods = map[string]*workload{}
	for _, n := range e.c.Nodes {
		e.pods[n.Name] = e.startWorkload(t, n, "hello-"+strings.TrimPrefix(n.Name, "node-"))
	}
	a, b := e.c.Nodes[0], e.c.Nodes[1]
	pa, pb := e.pods[a.Name], e.pods[b.Name]
	testkit.Eventually(t, 2*time.Minute, func() string {
		if got, err := hello(pa.netns, pb.addr, time.Second); err != nil {
			return fmt.Sprintf("pod %s on %s to pod %s on %s: %v", pa.addr, a.Name, pb.addr, b.Name, err)
		} else if got != "hello from "+pb.addr.String() {
			return fmt.Sprintf("pod %s on %s to pod %s on %s: answer %q", pa.addr, a.Name, pb.addr, b.Name, got)
		}
		return ""
	})
	t.Logf("figure: kubectl apply of Calico → first cross-node pod TCP in %s", time.Since(e.calicoApplied).Round(100*time.Millisecond))
	if got, err := hello(pb.netns, pa.addr, 2*time.Second); err != nil || got != "hello from "+pa.addr.String() {
		t.Errorf("pod %s on %s to pod %s on %s: %q, %v", pb.addr, b.Name, pa.addr, a.Name, got, err)
	}
	for _, pair := range [][2]*Node{{a, b}, {b, a}} {
		from, to := e.pods[pair[0].Name], pair[1]
		if err := ping(from.netns, to.UplinkAddr.Addr(), 2*time.Second); err != nil {
			t.Errorf("pod %s on %s to node %s's host %s: %v", from.addr, pair[0].Name, to.Name, to.UplinkAddr.Addr(), err)
		}
	}
	for _, n := range e.c.Nodes {
		if out, err := n.Exec(t.Context(), "firewall-cmd", "--state"); err != nil || strings.TrimSpace(string(out)) != "running" {
			t.Errorf("node %s: firewall-cmd --state: %s %v", n.Name, out, err)
		}
	}
	t.Logf("pods %s (%s) and %s (%s) talk over TCP both ways and reach the other node's host (ICMP echo), firewalld running on both",
		pa.addr, a.Name, pb.addr, b.Name)
}

// startWorkload runs a hello pod on node n and waits until it runs with an address of the pool.
func (e *calicoE2E) startWorkload(t *testing.T, n *Node, name string) *workload {
	t.Helper()
	cs := e.c.Kube.Client(t)
	_, err := cs.CoreV1().Pods("default").Create(t.Context(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "hello"}},
		Spec: corev1.PodSpec{
			NodeSelector:                  map[string]string{"kubernetes.io/hostname": n.Name},
			TerminationGracePeriodSeconds: new(int64),
			Containers: []corev1.Container{{Name: "hello", Image: helloImage, ImagePullPolicy: corev1.PullNever,
				Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var pod *corev1.Pod
	testkit.Eventually(t, 3*time.Minute, func() string {
		pod, err = cs.CoreV1().Pods("default").Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			return err.Error()
		}
		if pod.Status.Phase != corev1.PodRunning || pod.Status.PodIP == "" {
			return fmt.Sprintf("pod %s: %s %q %+v", name, pod.Status.Phase, pod.Status.PodIP, pod.Status.Conditions)
		}
		return ""
	})
	addr := netip.MustParseAddr(pod.Status.PodIP)
	if !e.pool.Contains(addr) {
		t.Fatalf("pod %s on %s has %s, outside the pool %s", name, n.Name, addr, e.pool)
	}
	tk := containerOf(t, n, *pod, "hello")
	w := &workload{name: name, addr: addr, netns: fmt.Sprintf("/proc/%d/ns/net", tk.pid)}
	t.Logf("pod %s on %s: %s", name, n.Name, addr)
	return w
}

func (e *calicoE2E) felixAndLinks(t *testing.T) {
	for _, n := range e.c.Nodes {
		for _, path := range []string{"/liveness", "/readiness"} {
			code, body, err := felixHealth(n, path)
			if err != nil || code != http.StatusOK {
				t.Errorf("node %s: Felix %s on 127.0.0.1:9099: %d %q %v", n.Name, path, code, body, err)
			}
		}
		for _, check := range []string{"links/vxlan.calico", "links/cali-veths"} {
			testkit.Eventually(t, time.Minute, func() string {
				if got := checkStatus(t, n, check); got != "pass" {
					return fmt.Sprintf("node %s: %s is %q, want pass", n.Name, check, got)
				}
				return ""
			})
		}
		links, err := n.Exec(t.Context(), "ip", "-o", "-d", "link", "show")
		if err != nil {
			t.Fatal(err)
		}
		var mtus []string
		for _, l := range strings.Split(string(links), "\n") {
			if f := strings.Fields(l); len(f) > 4 && (strings.HasPrefix(f[1], "cali") || strings.HasPrefix(f[1], "vxlan.calico") || strings.HasPrefix(f[1], "ens33")) {
				mtus = append(mtus, strings.TrimSuffix(strings.Split(f[1], "@")[0], ":")+" mtu "+f[4])
			}
		}
		t.Logf("node %s: Felix live and ready; links/vxlan.calico and links/cali-veths pass on %v", n.Name, mtus)
	}
	// calico-kube-controllers, a pod on the pod network, reaches the apiserver through the
	// kubernetes Service and reports itself ready.
	testkit.Eventually(t, 2*time.Minute, func() string {
		for _, p := range podsOn(t, e.c, "kube-system", "k8s-app=calico-kube-controllers") {
			if podReady(p) {
				return ""
			}
		}
		return "calico-kube-controllers is not ready"
	})
}

func (e *calicoE2E) reloadAndRestart(t *testing.T) {
	a, b := e.c.Nodes[0], e.c.Nodes[1]
	pa, pb := e.pods[a.Name], e.pods[b.Name]
	p := startProbe(t, pa.netns, pb.addr)
	disruptions := []struct {
		what string
		do   func(ctx context.Context) error
	}{
		{"firewall-cmd --reload on " + b.Name, func(ctx context.Context) error {
			_, err := b.Exec(ctx, "firewall-cmd", "--reload")
			return err
		}},
		{"NetworkManager restart on " + b.Name, func(ctx context.Context) error {
			if err := b.StopNetworkManager(ctx); err != nil {
				return err
			}
			return b.StartNetworkManager(ctx)
		}},
		{"firewall-cmd --reload on " + a.Name, func(ctx context.Context) error {
			_, err := a.Exec(ctx, "firewall-cmd", "--reload")
			return err
		}},
		{"NetworkManager restart on " + a.Name, func(ctx context.Context) error {
			if err := a.StopNetworkManager(ctx); err != nil {
				return err
			}
			return a.StartNetworkManager(ctx)
		}},
	}
	for _, d := range disruptions {
		p.waitSteady(t, 3*time.Second, time.Minute)
		start := time.Now()
		if err := d.do(t.Context()); err != nil {
			t.Fatalf("%s: %v", d.what, err)
		}
		took := time.Since(start)
		p.waitSteady(t, 3*time.Second, 2*time.Minute)
		failed, outage := p.outage(start)
		t.Logf("figure: %s (took %s): %d of %d probes failed, traffic interrupted for %s",
			d.what, took.Round(time.Millisecond), failed, p.count(start), outage.Round(time.Millisecond))
	}
}

func (e *calicoE2E) withoutFirewalldRules(t *testing.T) {
	a, b := e.c.Nodes[0], e.c.Nodes[1]
	pa, pb := e.pods[a.Name], e.pods[b.Name]
	e.pauseAgent(t)
	for _, n := range e.c.Nodes {
		out := e.agentOn(t, n, "cleanup", "--networkmanager=off")
		t.Logf("node %s: agent cleanup --networkmanager=off: %s", n.Name, strings.TrimSpace(out))
		zones, err := n.Exec(t.Context(), "firewall-cmd", "--list-all-zones")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(zones), "4789/udp") {
			t.Fatalf("node %s: 4789/udp still open after agent cleanup:\n%s", n.Name, zones)
		}
		if _, err := os.Stat(filepath.Join(n.NMConfDir, "calico-prep.conf")); err != nil {
			t.Fatalf("node %s: the NetworkManager drop-in went too: %v", n.Name, err)
		}
	}
	// Every new connection must fail: each takes a fresh VXLAN source port, which firewalld's
	// connection tracking has not seen.
	var errs []string
	for range 10 {
		got, err := hello(pa.netns, pb.addr, time.Second)
		if err == nil {
			t.Errorf("pod %s on %s reached pod %s on %s (%q) with firewalld closed", pa.addr, a.Name, pb.addr, b.Name, got)
		} else {
			errs = append(errs, err.Error())
		}
	}
	if got, err := hello(pb.netns, pa.addr, time.Second); err == nil {
		t.Errorf("pod %s on %s reached pod %s on %s (%q) with firewalld closed", pb.addr, b.Name, pa.addr, a.Name, got)
	}
	for _, n := range e.c.Nodes {
		if err := ping(e.pods[n.Name].netns, e.pods[e.other(n).Name].addr, time.Second); err == nil {
			t.Errorf("ICMP from pod on %s to pod on %s passes with firewalld closed", n.Name, e.other(n).Name)
		}
	}
	t.Logf("without calico-prep's firewalld rules: %d of 10 connections from %s to %s failed (%s), and the reverse and ICMP fail too",
		len(errs), a.Name, b.Name, firstOf(errs))
	// Half the rules: VXLAN's port open, no zone or policy for forwarded pod traffic. The
	// default zone's own forwarding covers only interfaces bound to it, and Calico's are not.
	for _, n := range e.c.Nodes {
		e.agentOn(t, n, "run", "--once", "--pod-cidr="+e.pool.String(), "--encapsulation=vxlan", "--bgp=false",
			"--firewalld-forwarding=false", "--networkmanager=off", "--disable-checks=kernel,cidr,autodetect,links")
	}
	if got, err := hello(pa.netns, pb.addr, 2*time.Second); err == nil {
		t.Errorf("with 4789/udp open and no forwarding zone or policy, pod %s reached pod %s (%q)", pa.addr, pb.addr, got)
	} else {
		t.Logf("with 4789/udp open but no forwarding zone or policy, pod %s → pod %s fails too: %v", pa.addr, pb.addr, err)
	}
	began := time.Now()
	e.resumeAgent(t)
	e.waitReady(t, 2*time.Minute)
	e.waitTraffic(t, pa, pb)
	t.Logf("figure: calico-prep back → cross-node pod traffic again in %s", time.Since(began).Round(100*time.Millisecond))
}

// withoutDropIn shows what NetworkManager does to Calico's links when calico-prep's drop-in
// goes while they exist, and to a pod that starts then; what is left when calico-prep comes back;
// and the operator's way out. What NetworkManager does is reported, not asserted: it is its
// behaviour, not the product's. The step fails when the drop-in does not go or come back, or
// when the nodes do not recover.
func (e *calicoE2E) withoutDropIn(t *testing.T) {
	a, b := e.c.Nodes[0], e.c.Nodes[1]
	pa, pb := e.pods[a.Name], e.pods[b.Name]
	before := map[string]string{}
	for _, n := range e.c.Nodes {
		before[n.Name] = e.nmView(t, n)
	}
	e.pauseAgent(t)
	for _, n := range e.c.Nodes {
		out := e.agentOn(t, n, "cleanup", "--firewalld=off")
		t.Logf("node %s: agent cleanup --firewalld=off: %s", n.Name, strings.TrimSpace(out))
		if _, err := os.Stat(filepath.Join(n.NMConfDir, "calico-prep.conf")); err == nil {
			t.Fatalf("node %s: the NetworkManager drop-in is still there", n.Name)
		}
	}
	p := startProbe(t, pa.netns, pb.addr)
	time.Sleep(15 * time.Second)
	p.stop()
	for _, n := range e.c.Nodes {
		t.Logf("node %s with the drop-in:\n%s\n15 s after agent cleanup removed it:\n%s", n.Name, before[n.Name], e.nmView(t, n))
	}
	failed, outage := p.outage(time.Time{})
	t.Logf("observed: pod %s → pod %s over those 15 s: %d of %d connections failed (longest interruption %s)",
		pa.addr, pb.addr, failed, p.count(time.Time{}), outage.Round(time.Millisecond))
	// A pod that starts while NetworkManager manages cali*: its veth appears under
	// NetworkManager's eyes.
	late := e.startWorkload(t, b, "hello-late")
	time.Sleep(10 * time.Second)
	got, err := hello(pa.netns, late.addr, 2*time.Second)
	t.Logf("observed: pod %s started on %s without the drop-in; from pod %s: %q, %v; 10 s later on %s:\n%s",
		late.addr, b.Name, pa.addr, got, err, b.Name, e.nmView(t, b))

	e.resumeAgent(t)
	for _, n := range e.c.Nodes {
		testkit.Eventually(t, time.Minute, func() string {
			if _, err := os.Stat(filepath.Join(n.NMConfDir, "calico-prep.conf")); err != nil {
				return fmt.Sprintf("node %s: no drop-in since calico-prep is back: %v", n.Name, err)
			}
			return ""
		})
	}
	time.Sleep(15 * time.Second)
	for _, n := range e.c.Nodes {
		node, err := e.c.Kube.Client(t).CoreV1().Nodes().Get(t.Context(), n.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cond := NodeCondition(node, nodestatus.ConditionType)
		t.Logf("observed: node %s 15 s after calico-prep is back: CalicoPrepReady=%s %s: %s\n%s", n.Name, cond.Status, cond.Reason, cond.Message, e.nmView(t, n))
	}
	_, errAB := hello(pa.netns, pb.addr, time.Second)
	_, errLate := hello(pa.netns, late.addr, time.Second)
	t.Logf("observed: with calico-prep back, pod %s → pod %s: %v; → pod %s: %v", pa.addr, pb.addr, errText(errAB), late.addr, errText(errLate))

	// The way out for an operator: pods whose veths are down get new ones when they are
	// replaced, and with the drop-in in place NetworkManager leaves those alone.
	began := time.Now()
	cs := e.c.Kube.Client(t)
	for ns, selector := range map[string]string{"default": "app=hello", "kube-system": "k8s-app=calico-kube-controllers"} {
		if err := cs.CoreV1().Pods(ns).DeleteCollection(t.Context(), metav1.DeleteOptions{GracePeriodSeconds: new(int64)},
			metav1.ListOptions{LabelSelector: selector}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if err := e.c.WaitPodsGone(ctx, "default"); err != nil {
		t.Fatal(err)
	}
	for _, n := range e.c.Nodes {
		e.pods[n.Name] = e.startWorkload(t, n, "hello-"+strings.TrimPrefix(n.Name, "node-"))
	}
	e.waitReady(t, 3*time.Minute)
	e.waitTraffic(t, e.pods[a.Name], e.pods[b.Name])
	t.Logf("figure: pods replaced → nodes ready and cross-node pod traffic again in %s", time.Since(began).Round(100*time.Millisecond))
}

// nmView is what NetworkManager makes of the node's links, and the links' state and routes.
func (e *calicoE2E) nmView(t *testing.T, n *Node) string {
	t.Helper()
	var b strings.Builder
	out, err := n.Exec(t.Context(), "nmcli", "-t", "-f", "DEVICE,TYPE,STATE", "device")
	fmt.Fprintf(&b, "  nmcli device: %s%v\n", strings.ReplaceAll(strings.TrimSpace(string(out)), "\n", "  "), errText(err))
	out, err = n.Exec(t.Context(), "ip", "-o", "-br", "link", "show")
	fmt.Fprintf(&b, "  links: %s%v\n", strings.Join(strings.Fields(string(out)), " "), errText(err))
	out, err = n.Exec(t.Context(), "ip", "-4", "route", "show")
	var routes []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if strings.Contains(l, "cali") || strings.Contains(l, "vxlan.calico") {
			routes = append(routes, l)
		}
	}
	fmt.Fprintf(&b, "  Calico's routes: %q%v", routes, errText(err))
	return b.String()
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return " (" + err.Error() + ")"
}

func (e *calicoE2E) other(n *Node) *Node {
	if n == e.c.Nodes[0] {
		return e.c.Nodes[1]
	}
	return e.c.Nodes[0]
}

// waitTraffic waits until pod from reaches pod to and back.
func (e *calicoE2E) waitTraffic(t *testing.T, from, to *workload) {
	t.Helper()
	testkit.Eventually(t, 3*time.Minute, func() string {
		for _, pair := range [][2]*workload{{from, to}, {to, from}} {
			if got, err := hello(pair[0].netns, pair[1].addr, time.Second); err != nil || got != "hello from "+pair[1].addr.String() {
				return fmt.Sprintf("pod %s to pod %s: %q, %v", pair[0].addr, pair[1].addr, got, err)
			}
		}
		return ""
	})
}

// pauseAgent takes the agent off every node, the way an operator stops a DaemonSet without
// deleting it: a node selector nothing matches. The agent leaves what it applied in place.
func (e *calicoE2E) pauseAgent(t *testing.T) {
	t.Helper()
	e.c.Kube.Kubectl(t, "-n", "calico-prep", "patch", "daemonset", "calico-prep", "--type=merge",
		"-p", `{"spec":{"template":{"spec":{"nodeSelector":{"e2e.calico-prep.io/paused":"true"}}}}}`)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if err := e.c.WaitPodsGone(ctx, "calico-prep"); err != nil {
		t.Fatal(err)
	}
}

// resumeAgent puts the agent back on every node and waits until both are prepared by it.
func (e *calicoE2E) resumeAgent(t *testing.T) {
	t.Helper()
	e.c.Kube.Kubectl(t, "-n", "calico-prep", "patch", "daemonset", "calico-prep", "--type=json",
		"-p", `[{"op":"remove","path":"/spec/template/spec/nodeSelector/e2e.calico-prep.io~1paused"}]`)
	testkit.Eventually(t, 2*time.Minute, func() string {
		pods := podsOn(t, e.c, "calico-prep", "app.kubernetes.io/name=calico-prep")
		for _, n := range e.c.Nodes {
			if p, ok := pods[n.Name]; !ok || p.Status.Phase != corev1.PodRunning {
				return fmt.Sprintf("no running agent on %s yet", n.Name)
			}
		}
		return ""
	})
}

// waitReady waits until every node's agent reports it ready; the failure names the check.
func (e *calicoE2E) waitReady(t *testing.T, within time.Duration) {
	t.Helper()
	for _, n := range e.c.Nodes {
		waitNode(t, e.c, n.Name, within, "ready", prepared)
	}
}

// agentOn runs the agent binary on node n as `agent cleanup` would run there: in the node's
// network namespace, on its bus, with the node's state and NetworkManager directories, and
// never systemd-networkd's (the host's /etc/systemd).
func (e *calicoE2E) agentOn(t *testing.T, n *Node, args ...string) string {
	t.Helper()
	args = append(args, "--state-dir="+n.Root("/var/lib/calico-prep"), "--networkmanager-conf-dir="+n.NMConfDir, "--networkd=off")
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + n.NetNS, "--", e.agentBin}, args...)...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "DBUS_SYSTEM_BUS_ADDRESS=" + n.BusAddress}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node %s: agent %s: %v\n%s", n.Name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// calicoManifest lays out deploy/gating/calico-manifest with Calico's VXLAN manifest of the
// release as its calico.yaml, as README's Deploy step 4 says, and returns the directory.
func calicoManifest(t *testing.T, repo, work string) string {
	t.Helper()
	upstream := os.Getenv("CALICO_PREP_UPSTREAM")
	if upstream == "" {
		upstream = filepath.Join(repo, "..", "shared", "upstream")
	}
	dir := filepath.Join(work, "calico-manifest")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for src, dst := range map[string]string{
		filepath.Join(repo, "deploy/gating/calico-manifest/kustomization.yaml"):        "kustomization.yaml",
		filepath.Join(repo, "deploy/gating/calico-manifest/calico-node-affinity.yaml"): "calico-node-affinity.yaml",
		filepath.Join(upstream, "calico-"+calicoRelease, "calico-vxlan.yaml"):          "calico.yaml",
	} {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatalf("%v (set CALICO_PREP_UPSTREAM to the directory holding calico-%s/)", err, calicoRelease)
		}
		writeFile(t, filepath.Join(dir, dst), string(data))
	}
	return dir
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// buildHello builds the workload image.
func buildHello(t *testing.T) string {
	t.Helper()
	c := &Cluster{Dir: t.TempDir()}
	var err error
	if c.repo, err = repoRoot(); err != nil {
		t.Fatal(err)
	}
	img, err := c.BuildImage(t.Context(), "hello", []string{helloImage}, []string{"/hello"}, "65534:65534",
		map[string]string{"hello": "./test/cluster/cmd/hello"})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// logImageSizes logs hack/calico-images.sh's sizes.txt: image, tar bytes, unpacked bytes.
func logImageSizes(t *testing.T, dir string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "sizes.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var name string
		var packed, unpacked int64
		fmt.Sscan(l, &name, &packed, &unpacked)
		t.Logf("figure: image quay.io/calico/%s:%s: %.1f MB compressed, %.1f MB unpacked", name, calicoRelease, float64(packed)/1e6, float64(unpacked)/1e6)
	}
}

// felixHealth asks Felix's health endpoint on the node's loopback. The connection is made on
// the thread inside the node (http.Transport would dial from another goroutine, outside it).
func felixHealth(n *Node, path string) (int, string, error) {
	var conn net.Conn
	if err := n.Do(func() (err error) {
		conn, err = net.DialTimeout("tcp4", "127.0.0.1:9099", 2*time.Second)
		return err
	}); err != nil {
		return 0, "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	req, err := http.NewRequest(http.MethodGet, "http://localhost:9099"+path, nil)
	if err != nil {
		return 0, "", err
	}
	if err := req.Write(conn); err != nil {
		return 0, "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(body)), err
}

// hello connects from the network namespace netns to a hello pod and returns its answer.
func hello(netns string, addr netip.Addr, timeout time.Duration) (string, error) {
	var conn net.Conn
	err := testbed.InNetNS(netns, func() (err error) {
		conn, err = net.DialTimeout("tcp4", netip.AddrPortFrom(addr, 8080).String(), timeout)
		return err
	})
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	got, err := io.ReadAll(conn)
	return string(got), err
}

// ping sends one ICMP echo request from the network namespace netns to addr and waits for the
// reply (a raw socket: the test runs as root).
func ping(netns string, addr netip.Addr, timeout time.Duration) error {
	var conn net.PacketConn
	if err := testbed.InNetNS(netns, func() (err error) {
		conn, err = net.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	}); err != nil {
		return err
	}
	defer conn.Close()
	id := uint16(os.Getpid())
	msg := []byte{8, 0, 0, 0, byte(id >> 8), byte(id), 0, 1, 'c', 'a', 'l', 'i', 'c', 'o'}
	binary.BigEndian.PutUint16(msg[2:], icmpChecksum(msg))
	if _, err := conn.WriteTo(msg, &net.IPAddr{IP: addr.AsSlice()}); err != nil {
		return err
	}
	_ = conn.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 1500)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			return fmt.Errorf("no echo reply from %s: %w", addr, err)
		}
		ip, ok := from.(*net.IPAddr)
		// An echo reply (type 0) with our identifier.
		if ok && ip.IP.Equal(addr.AsSlice()) && n >= 8 && buf[0] == 0 && binary.BigEndian.Uint16(buf[4:]) == id {
			return nil
		}
	}
}

func icmpChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

func firstOf(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return s[0]
}

// probe connects from a pod's namespace to a hello pod every 100 ms and records the outcomes.
type probe struct {
	mu      sync.Mutex
	samples []sample
	cancel  context.CancelFunc
	done    chan struct{}
}

type sample struct {
	at time.Time
	ok bool
}

func startProbe(t *testing.T, netns string, to netip.Addr) *probe {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &probe{cancel: cancel, done: make(chan struct{})}
	want := "hello from " + to.String()
	go func() {
		defer close(p.done)
		for ctx.Err() == nil {
			at := time.Now()
			got, err := hello(netns, to, 300*time.Millisecond)
			p.mu.Lock()
			p.samples = append(p.samples, sample{at: at, ok: err == nil && got == want})
			p.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(100*time.Millisecond - time.Since(at)):
			}
		}
	}()
	t.Cleanup(p.stop)
	return p
}

func (p *probe) stop() {
	p.cancel()
	<-p.done
}

// waitSteady waits until the last probes over d all succeeded; it fails the test after within.
func (p *probe) waitSteady(t *testing.T, d, within time.Duration) {
	t.Helper()
	testkit.Eventually(t, within, func() string {
		p.mu.Lock()
		defer p.mu.Unlock()
		if len(p.samples) == 0 || time.Since(p.samples[0].at) < d {
			return "probing just started"
		}
		for i := len(p.samples) - 1; i >= 0 && time.Since(p.samples[i].at) <= d; i-- {
			if !p.samples[i].ok {
				return fmt.Sprintf("a probe failed %s ago", time.Since(p.samples[i].at).Round(time.Millisecond))
			}
		}
		return ""
	})
}

// count is the number of probes since start.
func (p *probe) count(since time.Time) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, s := range p.samples {
		if !s.at.Before(since) {
			n++
		}
	}
	return n
}

// outage returns how many probes since start failed and the longest run of failures, from the
// first failed probe's start to the next successful probe's start.
func (p *probe) outage(since time.Time) (int, time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	failed := 0
	var longest time.Duration
	var runStart time.Time
	for _, s := range p.samples {
		if s.at.Before(since) {
			continue
		}
		switch {
		case !s.ok:
			failed++
			if runStart.IsZero() {
				runStart = s.at
			}
		case !runStart.IsZero():
			longest = max(longest, s.at.Sub(runStart))
			runStart = time.Time{}
		}
	}
	if !runStart.IsZero() && len(p.samples) > 0 {
		longest = max(longest, p.samples[len(p.samples)-1].at.Sub(runStart))
	}
	return failed, longest
}
