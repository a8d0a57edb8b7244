package cluster

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/calico-prep/calico-prep/pkg/nodestatus"
	"github.com/calico-prep/calico-prep/test/testkit"
)

const (
	agentRepo = "ghcr.io/calico-prep/calico-prep"
	// agentTag is the tag deploy/base and the chart name; nextTag is the rolling update's.
	agentTag = "v0.1.0"
	nextTag  = "e2e-next"
	// calicoRelease is the Calico whose manifest is gated, from the shared upstream files.
	calicoRelease = "v3.32.1"
	// collision is a host route inside Calico's default pool 192.168.0.0/16, which holds a
	// node unprepared (PodCIDROverlap) until it is removed.
	collision = "192.168.77.0/24"
)

// vxlanEnv are calico-vxlan.yaml's settings in calico-node's env block, which README step 1
// says to copy into the agent's env block. This kernel has no ipip driver, so the IPIP manifest
// (calico.yaml) cannot work here: a real calico-node would fail to create tunl0 as well.
var vxlanEnv = map[string]string{
	"CALICO_IPV4POOL_IPIP":      "Never",
	"CALICO_IPV4POOL_VXLAN":     "CrossSubnet",
	"CALICO_NETWORKING_BACKEND": "vxlan",
}

// TestDaemonSetOnRealCluster is README's Deploy section on a two-node cluster with a real
// kubelet and containerd: make image, the DaemonSet from deploy/base, the admission policy for
// the pod's own token, Calico's real manifest gated through deploy/gating/calico-manifest, a
// rolling update, a killed container, the move from deploy/base to the Helm chart scraped by
// Prometheus, then removal with deploy/cleanup. The host is checked unchanged before, during and
// after.
func TestDaemonSetOnRealCluster(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the cluster's nodes are namespaces, mounts and cgroups")
	}
	hostBefore := snapshotHost(t)
	var roots []string // the nodes' cgroup roots
	t.Cleanup(func() {
		if d := hostBefore.others(roots).diff(snapshotHost(t).others(roots), true); d != "" {
			t.Errorf("the host changed after the cluster was torn down:\n%s", d)
		}
	})
	repo, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}

	began := time.Now()
	imageDir := t.TempDir()
	run(t, repo, nil, "make", "image", "IMAGE_OUT="+imageDir, "IMAGE_TAGS="+agentTag+" "+nextTag, "VERSION="+agentTag)
	t.Logf("figure: make image (both platforms) took %s", time.Since(began).Round(time.Second))
	agentImage := filepath.Join(imageDir, "calico-prep.oci.tar")

	began = time.Now()
	standin := buildStandIn(t)
	c := Up(t, Options{Images: []string{agentImage, standin}})
	t.Logf("figure: cluster bring-up took %s (%v)", time.Since(began).Round(time.Second), c.Took)

	for _, n := range c.Nodes {
		roots = append(roots, n.CgroupRoot)
	}
	during := snapshotHost(t)
	for _, r := range roots {
		if !slices.ContainsFunc(during.cgroups, func(cg string) bool { return "/"+filepath.Base(cg) == r }) {
			t.Errorf("the host check does not see node cgroup %s: it would not see one left behind", r)
		}
	}
	// The nodes' own cgroup roots are there until teardown.
	if d := hostBefore.others(nil).diff(during.others(nil), false); d != "" {
		t.Errorf("the host changed while the cluster runs:\n%s", d)
	}
	a, b := c.Nodes[0], c.Nodes[1]
	step(t, "nodes are NotReady without a CNI", func(t *testing.T) { nodesNotReady(t, c) })

	work := t.TempDir()
	base := agentOverlay(t, repo, work)
	before := map[string]map[string]string{}
	for _, n := range c.Nodes {
		before[n.Name], _ = configFiles(t, n)
	}
	holdUnprepared(t, b)
	watch := watchNodes(t, c)

	step(t, "deploy/base", func(t *testing.T) {
		began := time.Now()
		c.Kube.Kubectl(t, "apply", "-k", base)
		waitNode(t, c, a.Name, 3*time.Minute, "prepared", prepared)
		t.Logf("figure: kubectl apply → node %s prepared in %s", a.Name, time.Since(began).Round(100*time.Millisecond))
		// The label and the condition go out as two concurrent applies: wait for both.
		held := waitNode(t, c, b.Name, time.Minute, "reported unprepared", func(n *corev1.Node) bool {
			cond := NodeCondition(n, nodestatus.ConditionType)
			return cond != nil && cond.Status == corev1.ConditionFalse && n.Labels[nodestatus.LabelReady] != ""
		})
		if held.Labels[nodestatus.LabelPrepared] != "" || held.Labels[nodestatus.LabelReady] != "false" {
			t.Errorf("node %s with a pod CIDR collision: labels %v, want ready=false and no prepared", b.Name, held.Labels)
		}
		t.Logf("node %s held: %s", b.Name, NodeCondition(held, nodestatus.ConditionType).Message)
		agentPodAsManifestSays(t, c, a)
		preparedFromOutside(t, a)
	})

	step(t, "admission policy holds for the pod's token", func(t *testing.T) {
		pod := podsOn(t, c, "calico-prep", "app.kubernetes.io/name=calico-prep")[a.Name]
		p := newPodClient(t, a, containerOf(t, a, pod, "agent").pid)
		code, body := p.patch(t, "/api/v1/nodes/"+b.Name, `{"metadata":{"labels":{"calico-prep.io/ready":"true"}}}`)
		if code != 403 || !strings.Contains(body, "may not change node "+b.Name) {
			t.Errorf("the pod on %s patching node %s: %d %s; want 403 from the admission policy", a.Name, b.Name, code, body)
		}
		code, body = p.patch(t, "/api/v1/nodes/"+a.Name, `{"metadata":{"labels":{"e2e.calico-prep.io/other":"x"}}}`)
		if code != 403 {
			t.Errorf("the pod patching a label outside calico-prep.io/ on its own node: %d %s; want 403", code, body)
		}
		code, body = p.patch(t, "/api/v1/nodes/"+a.Name, `{"metadata":{"annotations":{"calico-prep.io/e2e":"own node"}}}`)
		if code != 200 {
			t.Errorf("the pod annotating its own node under calico-prep.io/: %d %s; want 200", code, body)
		}
		p.patch(t, "/api/v1/nodes/"+a.Name, `{"metadata":{"annotations":{"calico-prep.io/e2e":null}}}`)
	})

	step(t, "Calico's manifest gated", func(t *testing.T) { gateCalico(t, c, repo, work) })

	step(t, "rolling update", func(t *testing.T) {
		old := podsOn(t, c, "calico-prep", "app.kubernetes.io/name=calico-prep")
		mark := watch.mark()
		began := time.Now()
		c.Kube.Kubectl(t, "-n", "calico-prep", "set", "image", "daemonset/calico-prep", "agent="+agentRepo+":"+nextTag)
		c.Kube.Kubectl(t, "-n", "calico-prep", "rollout", "status", "daemonset/calico-prep", "--timeout=5m")
		t.Logf("rollout over both nodes took %s", time.Since(began).Round(100*time.Millisecond))
		pods := podsOn(t, c, "calico-prep", "app.kubernetes.io/name=calico-prep")
		for _, n := range c.Nodes {
			p := pods[n.Name]
			if img := p.Spec.Containers[0].Image; img != agentRepo+":"+nextTag || p.UID == old[n.Name].UID || !podReady(p) {
				t.Errorf("node %s after the rollout: pod %s (was %s) runs %s, ready %v; want a new, ready pod of the new tag",
					n.Name, p.UID, old[n.Name].UID, img, podReady(p))
			}
			// Every change of the Node is a version the watch sees: none means it never changed.
			watch.steady(t, mark, n.Name, "rolling update")
		}
	})

	step(t, "killed container", func(t *testing.T) {
		mark := watch.mark()
		pod := podsOn(t, c, "calico-prep", "app.kubernetes.io/name=calico-prep")[a.Name]
		restarts := pod.Status.ContainerStatuses[0].RestartCount
		tk := containerOf(t, a, pod, "agent")
		if _, err := a.Ctr(t.Context(), "-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", tk.id); err != nil {
			t.Fatal(err)
		}
		testkit.Eventually(t, 3*time.Minute, func() string {
			p := podsOn(t, c, "calico-prep", "app.kubernetes.io/name=calico-prep")[a.Name]
			if p.UID != pod.UID {
				return "the pod was replaced, not restarted"
			}
			if len(p.Status.ContainerStatuses) == 0 || p.Status.ContainerStatuses[0].RestartCount == restarts || !podReady(p) {
				return fmt.Sprintf("kubelet has not restarted the agent yet: %+v", p.Status.ContainerStatuses)
			}
			return ""
		})
		watch.steady(t, mark, a.Name, "container kill and restart")
		agentMemory(t, c, a)
	})

	// From deploy/base to the chart, as an operator moving to Helm would: what the agent applied
	// stays while no agent runs, and the chart's agent finds it in place.
	var helm helmRelease
	step(t, "helm install scraped by Prometheus", func(t *testing.T) {
		mark := watch.mark()
		c.Kube.Kubectl(t, "delete", "-k", base)
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
		defer cancel()
		if err := c.WaitPodsGone(ctx, "calico-prep"); err != nil {
			t.Fatal(err)
		}
		// The chart creates the namespace again, which cannot happen while it terminates.
		c.Kube.Kubectl(t, "wait", "--for=delete", "namespace/calico-prep", "--timeout=3m")
		helm = helmInstall(t, c, repo)
		for _, n := range c.Nodes {
			watch.steady(t, mark, n.Name, "deploy/base replaced by the chart")
		}
		scrapedByPrometheus(t, c, repo)
	})

	step(t, "removal restores firewalld and NetworkManager", func(t *testing.T) {
		// README, Remove: un-gate Calico (here: remove it), stop the agent, clean up, uninstall.
		c.Kube.Kubectl(t, "delete", "-k", filepath.Join(work, "calico-manifest"), "--ignore-not-found", "--wait=false")
		c.Kube.Kubectl(t, "-n", "calico-prep", "delete", "daemonset", "calico-prep", "--cascade=foreground")
		c.Kube.Kubectl(t, "apply", "-k", filepath.Join(repo, "deploy/cleanup"))
		c.Kube.Kubectl(t, "-n", "calico-prep", "rollout", "status", "daemonset/calico-prep-cleanup", "--timeout=3m")
		for _, n := range c.Nodes {
			after, backups := configFiles(t, n)
			if d := diffFiles(before[n.Name], after); d != "" {
				t.Errorf("node %s: firewalld/NetworkManager configuration after cleanup differs from before the install:\n%s", n.Name, d)
			}
			t.Logf("node %s: configuration as before the install; firewalld's own backups left: %v", n.Name, backups)
		}
		c.Kube.Kubectl(t, "delete", "-k", filepath.Join(repo, "deploy/cleanup"))
		helm.run(t, "uninstall", "calico-prep", "-n", "calico-prep", "--wait", "--timeout=3m")
	})
}

// step runs one step of the sequence as a subtest and stops the sequence when it fails: every
// later step builds on the earlier ones.
func step(t *testing.T, name string, f func(t *testing.T)) {
	t.Helper()
	if !t.Run(name, f) {
		t.FailNow()
	}
}

// buildStandIn builds the image that stands in for calico/node and calico/cni.
func buildStandIn(t *testing.T) string {
	t.Helper()
	c := &Cluster{Dir: t.TempDir()}
	var err error
	if c.repo, err = repoRoot(); err != nil {
		t.Fatal(err)
	}
	img, err := c.BuildImage(t.Context(), "calico-standin",
		[]string{"quay.io/calico/node:" + calicoRelease, "quay.io/calico/cni:" + calicoRelease},
		[]string{"/bin/calico-node"}, "", map[string]string{"bin/calico-node": "./test/cluster/cmd/calico-standin"},
		[2]string{"opt/cni/bin/calico-ipam", "/bin/calico-node"}, [2]string{"opt/cni/bin/install", "/bin/calico-node"})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func nodesNotReady(t *testing.T, c *Cluster) {
	cs, err := c.Kube.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		node, err := cs.CoreV1().Nodes().Get(t.Context(), n.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ready := NodeCondition(node, corev1.NodeReady)
		if ready == nil || ready.Status == corev1.ConditionTrue {
			t.Errorf("node %s Ready condition %+v; want not True (no CNI)", n.Name, ready)
			continue
		}
		t.Logf("node %s: Ready=%s %s: %s; kubelet %s, runtime %s", n.Name, ready.Status, ready.Reason, ready.Message,
			node.Status.NodeInfo.KubeletVersion, node.Status.NodeInfo.ContainerRuntimeVersion)
	}
}

// agentOverlay writes a kustomization over deploy/base that sets the agent's env block to
// calico-vxlan.yaml's values, as README step 1 says, and returns its directory.
func agentOverlay(t *testing.T, repo, work string) string {
	t.Helper()
	dir := filepath.Join(work, "agent")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(dir, filepath.Join(repo, "deploy/base"))
	if err != nil {
		t.Fatal(err)
	}
	var env strings.Builder
	for _, k := range []string{"CALICO_IPV4POOL_IPIP", "CALICO_IPV4POOL_VXLAN", "CALICO_NETWORKING_BACKEND"} {
		fmt.Fprintf(&env, "            - name: %s\n              value: %s\n", k, vxlanEnv[k])
	}
	files := map[string]string{
		"kustomization.yaml": "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - " + rel + "\npatches:\n  - path: env.yaml\n",
		"env.yaml":           "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: calico-prep\n  namespace: calico-prep\nspec:\n  template:\n    spec:\n      containers:\n        - name: agent\n          env:\n" + env.String(),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// holdUnprepared adds a route into Calico's pool on the node; the returned func removes it.
func holdUnprepared(t *testing.T, n *Node) {
	t.Helper()
	if _, err := n.Exec(t.Context(), "ip", "route", "add", collision, "via", n.Gateway.String(), "dev", n.Uplink); err != nil {
		t.Fatal(err)
	}
}

func release(t *testing.T, n *Node) {
	t.Helper()
	if _, err := n.Exec(t.Context(), "ip", "route", "del", collision); err != nil {
		t.Fatal(err)
	}
}

// agentPodAsManifestSays checks the agent's running container, as containerd runs it, against
// what deploy/base asks for.
func agentPodAsManifestSays(t *testing.T, c *Cluster, n *Node) {
	t.Helper()
	var pod corev1.Pod
	// Ready follows /readyz at the probe's next period.
	testkit.Eventually(t, time.Minute, func() string {
		pod = podsOn(t, c, "calico-prep", "app.kubernetes.io/name=calico-prep")[n.Name]
		if pod.Name == "" || pod.Status.Phase != corev1.PodRunning || !podReady(pod) {
			return fmt.Sprintf("agent pod on %s: %q %s, want Running and Ready", n.Name, pod.Name, pod.Status.Phase)
		}
		return ""
	})
	tk := containerOf(t, n, pod, "agent")
	s := specOf(t, n, tk.id)
	if !slices.Contains(s.Process.Env, "NODE_NAME="+n.Name) {
		t.Errorf("container env lacks NODE_NAME=%s (downward API): %q", n.Name, s.Process.Env)
	}
	if len(s.Process.Capabilities.Bounding)+len(s.Process.Capabilities.Effective)+len(s.Process.Capabilities.Permitted) != 0 {
		t.Errorf("container has capabilities %+v, want none", s.Process.Capabilities)
	}
	if !s.Root.Readonly || !s.Process.NoNewPrivileges || s.Process.User.UID != 0 {
		t.Errorf("container root read-only %v, no new privileges %v, uid %d; want true, true, 0", s.Root.Readonly, s.Process.NoNewPrivileges, s.Process.User.UID)
	}
	if s.Linux.Seccomp == nil || s.Linux.Seccomp.DefaultAction != "SCMP_ACT_ERRNO" {
		t.Errorf("container seccomp %+v, want containerd's RuntimeDefault profile", s.Linux.Seccomp)
	}
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == "network" && ns.Path == "" {
			t.Errorf("container has a network namespace of its own, want the node's (hostNetwork)")
		}
	}
	mounts := map[string]string{}
	for _, m := range s.Mounts {
		mounts[m.Destination] = m.Source
	}
	for dst, src := range map[string]string{
		"/run/dbus": "/run/dbus", "/etc/NetworkManager/conf.d": "/etc/NetworkManager/conf.d",
		"/var/lib/calico-prep": "/var/lib/calico-prep", "/host/proc": "/proc", "/host/sys": "/sys",
		"/host/lib/modules": "/lib/modules", "/host/boot": "/boot", "/host/var/lib/calico": "/var/lib/calico",
	} {
		if mounts[dst] != src {
			t.Errorf("mount %s from %q, want hostPath %s", dst, mounts[dst], src)
		}
	}
	if !strings.Contains(mounts["/var/run/secrets/kubernetes.io/serviceaccount"], "kube-api-access") {
		t.Errorf("no projected ServiceAccount token volume: %v", mounts)
	}
	if !strings.HasPrefix(s.Linux.CgroupsPath, n.CgroupRoot+"/kubepods") {
		t.Errorf("container cgroup %q, want under the node's %s", s.Linux.CgroupsPath, n.CgroupRoot)
	}
	t.Logf("agent container %s on %s: pid %d, cgroup %s", tk.id[:12], n.Name, tk.pid, s.Linux.CgroupsPath)
}

// preparedFromOutside checks what the agent did, through the node's own firewalld and its
// NetworkManager configuration directory.
func preparedFromOutside(t *testing.T, n *Node) {
	t.Helper()
	for _, scope := range [][]string{nil, {"--permanent"}} {
		out, err := n.Exec(t.Context(), "firewall-cmd", append(scope, "--list-all-zones")...)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), "4789/udp") {
			t.Errorf("node %s: firewalld %v has no 4789/udp (VXLAN):\n%s", n.Name, scope, out)
		}
	}
	drop, err := os.ReadFile(filepath.Join(n.NMConfDir, "calico-prep.conf"))
	if err != nil {
		t.Fatalf("node %s: no NetworkManager drop-in: %v", n.Name, err)
	}
	for _, pat := range []string{"interface-name:cali*", "interface-name:vxlan.calico", "interface-name:tunl*"} {
		if !strings.Contains(string(drop), pat) {
			t.Errorf("node %s: drop-in lacks %s:\n%s", n.Name, pat, drop)
		}
	}
}

// metrics scrapes the agent on node from inside the node, as the kubelet's probes do.
func metrics(t *testing.T, n *Node) string {
	t.Helper()
	resp, err := httpIn(n.NetNS, nil).Get("http://" + net.JoinHostPort(n.UplinkAddr.Addr().String(), "9476") + "/metrics")
	if err != nil {
		t.Fatalf("scrape the agent on %s: %v", n.Name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape the agent on %s: %s, %v", n.Name, resp.Status, err)
	}
	return string(body)
}

func checkStatus(t *testing.T, n *Node, check string) string {
	t.Helper()
	re := regexp.MustCompile(`(?m)^calico_prep_check_status\{check="` + regexp.QuoteMeta(check) + `",status="([a-z-]+)"\} 1$`)
	body := metrics(t, n)
	if m := re.FindStringSubmatch(body); m != nil {
		return m[1]
	}
	var lines []string
	for _, l := range strings.Split(body, "\n") {
		if strings.Contains(l, check) {
			lines = append(lines, l)
		}
	}
	return fmt.Sprintf("(no status 1 in %q)", lines)
}

// gateCalico applies calico-vxlan.yaml (Calico's own VXLAN manifest of the release) through
// deploy/gating/calico-manifest with the stand-in image, and follows calico-node onto the nodes.
func gateCalico(t *testing.T, c *Cluster, repo, work string) {
	a, b := c.Nodes[0], c.Nodes[1]
	upstream := filepath.Join(filepath.Dir(repo), "shared", "upstream", "calico-"+calicoRelease)
	if _, err := os.Stat(upstream); err != nil {
		upstream = "/work/shared/upstream/calico-" + calicoRelease
	}
	dir := filepath.Join(work, "calico-manifest")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for src, dst := range map[string]string{
		filepath.Join(repo, "deploy/gating/calico-manifest/kustomization.yaml"):        "kustomization.yaml",
		filepath.Join(repo, "deploy/gating/calico-manifest/calico-node-affinity.yaml"): "calico-node-affinity.yaml",
		filepath.Join(upstream, "calico-vxlan.yaml"):                                   "calico.yaml",
	} {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, dst), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, check := range []string{"links/vxlan.calico", "links/cali-veths"} {
		if got := checkStatus(t, a, check); got != "not-applicable" {
			t.Errorf("node %s before calico-node: %s is %q, want not-applicable", a.Name, check, got)
		}
	}
	c.Kube.Kubectl(t, "apply", "--server-side", "-k", dir)
	cs, err := c.Kube.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 3*time.Minute, func() string {
		ds, err := cs.AppsV1().DaemonSets("kube-system").Get(t.Context(), "calico-node", metav1.GetOptions{})
		if err != nil {
			return err.Error()
		}
		if ds.Status.ObservedGeneration != ds.Generation || ds.Status.DesiredNumberScheduled != 1 || ds.Status.NumberReady != 1 {
			return fmt.Sprintf("calico-node: %+v", ds.Status)
		}
		return ""
	})
	pods := podsOn(t, c, "kube-system", "k8s-app=calico-node")
	if _, ok := pods[b.Name]; ok || len(pods) != 1 {
		t.Fatalf("calico-node pods on %v; want one, on %s only (node %s is held unprepared)", keys(pods), a.Name, b.Name)
	}
	for _, check := range []string{"links/vxlan.calico", "links/cali-veths"} {
		testkit.Eventually(t, time.Minute, func() string {
			if got := checkStatus(t, a, check); got != "pass" {
				return fmt.Sprintf("node %s with calico-node running: %s is %q, want pass", a.Name, check, got)
			}
			return ""
		})
	}
	node := waitNode(t, c, a.Name, time.Minute, "annotated by calico-node", func(n *corev1.Node) bool {
		return n.Annotations["projectcalico.org/IPv4Address"] == a.UplinkAddr.String()
	})
	if !prepared(node) {
		t.Errorf("node %s no longer prepared with calico-node running: %v", a.Name, node.Labels)
	}
	if nodename, err := os.ReadFile(a.Root("/var/lib/calico/nodename")); err != nil || string(nodename) != a.Name {
		t.Errorf("node %s: /var/lib/calico/nodename %q, %v", a.Name, nodename, err)
	}

	// Fixed, node-b is prepared and gets its calico-node.
	began := time.Now()
	release(t, b)
	waitNode(t, c, b.Name, 2*time.Minute, "prepared", prepared)
	t.Logf("figure: collision removed → node %s prepared in %s", b.Name, time.Since(began).Round(100*time.Millisecond))
	testkit.Eventually(t, 3*time.Minute, func() string {
		pods := podsOn(t, c, "kube-system", "k8s-app=calico-node")
		if p, ok := pods[b.Name]; !ok || !podReady(p) {
			return fmt.Sprintf("no ready calico-node on %s yet: %v", b.Name, keys(pods))
		}
		return ""
	})
	waitNode(t, c, b.Name, 2*time.Minute, "prepared with calico-node running", func(n *corev1.Node) bool {
		return prepared(n) && n.Annotations["projectcalico.org/IPv4Address"] == b.UplinkAddr.String()
	})

	// The operator's Installation patch against the real Installation CRD, server-side.
	c.Kube.Kubectl(t, "apply", "--server-side", "-f", filepath.Join(upstream, "operator-crds.yaml"))
	c.Kube.Kubectl(t, "wait", "--for=condition=Established", "--timeout=60s", "crd/installations.operator.tigera.io")
	c.Kube.Kubectl(t, "apply", "--server-side", "--dry-run=server", "-f", filepath.Join(repo, "deploy/gating/tigera-operator/installation.yaml"))
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// agentMemory logs the agent container's memory as its cgroup counts it (cgroup v1
// memory.stat of the container's cgroup under the kubelet's cgroup root).
func agentMemory(t *testing.T, c *Cluster, n *Node) {
	t.Helper()
	pod := podsOn(t, c, "calico-prep", "app.kubernetes.io/name=calico-prep")[n.Name]
	tk := containerOf(t, n, pod, "agent")
	cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", tk.pid))
	if err != nil {
		t.Fatal(err)
	}
	var path string
	for _, l := range strings.Split(string(cg), "\n") {
		if f := strings.SplitN(l, ":", 3); len(f) == 3 && f[1] == "memory" {
			path = f[2]
		}
	}
	stat, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory", path, "memory.stat"))
	if err != nil {
		t.Fatal(err)
	}
	fields := map[string]string{}
	for _, l := range strings.Split(string(stat), "\n") {
		if k, v, ok := strings.Cut(l, " "); ok {
			fields[k] = v
		}
	}
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", tk.pid))
	rss := regexp.MustCompile(`VmRSS:\s+(\d+ kB)`).FindSubmatch(status)
	t.Logf("figure: agent container on %s: cgroup rss %s B, cache %s B, mapped_file %s B; process VmRSS %s",
		n.Name, fields["total_rss"], fields["total_cache"], fields["total_mapped_file"], rss[1])
}

// helmRelease runs the pinned helm against the cluster, with its own cache and configuration.
type helmRelease struct {
	bin, repo string
	env       []string
}

func (h helmRelease) run(t *testing.T, args ...string) {
	t.Helper()
	run(t, h.repo, h.env, h.bin, args...)
}

// helmInstall installs the chart with Calico's VXLAN settings and 9476/tcp opened, and waits
// for its pods to be ready (the agents' readiness is the node's: prepared).
func helmInstall(t *testing.T, c *Cluster, repo string) helmRelease {
	t.Helper()
	home := t.TempDir()
	h := helmRelease{
		bin: filepath.Join(c.kubeDir, "helm"), repo: repo,
		env: []string{"KUBECONFIG=" + c.Kube.Kubeconfig, "HELM_CACHE_HOME=" + home, "HELM_CONFIG_HOME=" + home, "HELM_DATA_HOME=" + home},
	}
	// Prometheus scrapes the agents from outside their nodes, so firewalld must let 9476/tcp in.
	cmd := exec.CommandContext(t.Context(), h.bin, "install", "calico-prep", "deploy/helm/calico-prep", "-n", "calico-prep", "--create-namespace",
		"--set-json", `firewalld.extraPorts=["9476/tcp"]`,
		"--set", "calico.CALICO_IPV4POOL_IPIP="+vxlanEnv["CALICO_IPV4POOL_IPIP"],
		"--set", "calico.CALICO_IPV4POOL_VXLAN="+vxlanEnv["CALICO_IPV4POOL_VXLAN"],
		"--set", "calico.CALICO_NETWORKING_BACKEND="+vxlanEnv["CALICO_NETWORKING_BACKEND"],
		"--wait", "--timeout=3m")
	cmd.Dir, cmd.Env = repo, append(os.Environ(), h.env...)
	began := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		pods, _ := c.Kube.TryKubectl(t, "-n", "calico-prep", "get", "daemonsets,pods", "-o", "wide")
		t.Errorf("helm install: %v\n%s\n%s", err, out, pods)
		agentsSay(t, c)
		t.FailNow()
	}
	t.Logf("helm install --wait: every agent ready in %s", time.Since(began).Round(100*time.Millisecond))
	return h
}

// scrapedByPrometheus scrapes the agents with upstream Prometheus through kubernetes_sd_configs
// (role pod) relabelled as the PodMonitor selects, and shows the PrometheusRule's alert for a
// node held unprepared.
func scrapedByPrometheus(t *testing.T, c *Cluster, repo string) {
	b := c.Nodes[1]
	for _, n := range c.Nodes {
		waitNode(t, c, n.Name, 2*time.Minute, "prepared", prepared)
	}

	prom := startPrometheus(t, c, repo)
	testkit.Eventually(t, 3*time.Minute, func() string {
		res, err := prom.query(t, `calico_prep_ready{job="calico-prep"}`)
		if err != nil {
			return err.Error()
		}
		got := map[string]string{}
		for _, r := range res {
			got[r.Metric["node"]] = r.Value[1].(string)
		}
		for _, n := range c.Nodes {
			if got[n.Name] != "1" {
				return fmt.Sprintf("calico_prep_ready by node %v; want 1 for every node", got)
			}
		}
		return ""
	})
	t.Logf("Prometheus discovered and scraped calico_prep_ready == 1 on %v", keys(map[string]bool{c.Nodes[0].Name: true, b.Name: true}))

	holdUnprepared(t, b)
	defer release(t, b)
	var alert promAlert
	testkit.Eventually(t, 3*time.Minute, func() string {
		alerts, err := prom.alerts(t)
		if err != nil {
			return err.Error()
		}
		for _, a := range alerts {
			if a.Labels["alertname"] == "CalicoPrepNodeNotPrepared" && a.Labels["node"] == b.Name {
				alert = a
				return ""
			}
		}
		return fmt.Sprintf("no CalicoPrepNodeNotPrepared alert for %s yet: %+v", b.Name, alerts)
	})
	if alert.State != "pending" {
		t.Errorf("alert state %q right after the node was held; want pending (for: 10m)", alert.State)
	}
	// The rule's for: 10m, in promtool's rule test with the series exactly as Prometheus scraped it.
	series, err := prom.query(t, `calico_prep_ready{node="`+b.Name+`"}`)
	if err != nil || len(series) != 1 {
		t.Fatalf("scraped series for %s: %v, %v", b.Name, series, err)
	}
	prom.ruleTest(t, repo, series[0].Metric, alert)
}

// agentsSay logs, for a failure, what the agents report: each Node's condition and the tail of
// each agent container's log, read from the node's /var/log/pods.
func agentsSay(t *testing.T, c *Cluster) {
	t.Helper()
	cs, err := c.Kube.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		if node, err := cs.CoreV1().Nodes().Get(t.Context(), n.Name, metav1.GetOptions{}); err == nil {
			t.Logf("node %s: labels %v, condition %+v", n.Name, node.Labels, NodeCondition(node, nodestatus.ConditionType))
		}
		logs, _ := filepath.Glob(filepath.Join(n.Root("/var/log/pods"), "calico-prep_*", "agent", "*.log"))
		for _, l := range logs {
			t.Logf("node %s: %s:\n%s", n.Name, strings.TrimPrefix(l, n.Dir), testkit.Tail(l, 15))
		}
	}
}
