package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/calico-prep/calico-prep/pkg/nodestatus"
	"github.com/calico-prep/calico-prep/test/calicotest"
	"github.com/calico-prep/calico-prep/test/testbed"
	"github.com/calico-prep/calico-prep/test/testkit"
)

// ready bounds the waits for the agent; it reacts in milliseconds, a machine running other test
// binaries beside this one may take seconds.
const ready = 90 * time.Second

// envEdits are the edits of the env block this machine needs, as an operator makes them for
// their cluster: the test bed's uplink lies in 192.168.0.0/16 (the default pool), and the
// kernel has no ipip driver, so the pool uses VXLAN.
var envEdits = map[string]string{
	"CALICO_IPV4POOL_CIDR":      "10.244.0.0/16",
	"CALICO_IPV4POOL_IPIP":      "Never",
	"CALICO_IPV4POOL_VXLAN":     "Always",
	"CALICO_NETWORKING_BACKEND": "vxlan",
}

// testbedPaths maps the DaemonSet's hostPath volumes onto a test bed node. Paths the machine
// lacks (it has no /lib/modules) become empty directories, as a container runtime creates a
// missing bind-mount source; /var/lib/calico is empty because calico-node has not run.
func testbedPaths(t testing.TB, node *testbed.Node) map[string]string {
	t.Helper()
	orEmpty := func(p string) string {
		if _, err := os.Stat(p); err == nil {
			return p
		}
		return t.TempDir()
	}
	return map[string]string{
		"/run/dbus":                    filepath.Dir(strings.TrimPrefix(node.BusAddress, "unix:path=")),
		"/etc/NetworkManager/conf.d":   node.NMConfDir,
		"/etc/systemd":                 filepath.Dir(node.NetworkdConfDir),
		"/etc/systemd/network":         node.NetworkdConfDir,
		"/etc/systemd/networkd.conf.d": mkdir(t, filepath.Join(filepath.Dir(node.NetworkdConfDir), "networkd.conf.d")),
		"/run/systemd/network":         mkdir(t, filepath.Join(node.Dir, "run", "systemd", "network")),
		"/usr/lib/systemd":             "/usr/lib/systemd",
		"/var/lib/calico-prep":         node.StateDir,
		"/proc":                        "/proc",
		"/sys":                         "/sys",
		"/lib/modules":                 orEmpty("/lib/modules"),
		"/boot":                        orEmpty("/boot"),
		"/var/lib/calico":              t.TempDir(),
	}
}

// mkdir creates a directory the way a DirectoryOrCreate volume (or the runtime, for a missing
// bind-mount source) does.
func mkdir(t testing.TB, dir string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// imageEntrypoint is the Dockerfile's ENTRYPOINT, the command the DaemonSet's args follow.
func imageEntrypoint(t testing.TB) []string { return parseDockerfile(t).entrypoint }

// TestDaemonSetRunsAgent runs the agent exactly as deploy/base's DaemonSet declares it (the
// image's entrypoint, the container's args, its env block with this machine's edits, its
// volumes mapped onto a sandboxed node with real firewalld and NetworkManager, its
// securityContext: root without any capability, no privilege escalation, read-only root) with a
// node-bound token of the DaemonSet's ServiceAccount under the deployed RBAC and admission
// policy. The node gets Ready; the probes answer; a real Prometheus scrapes calico_prep_ready 1
// and every alert and dashboard query evaluates; the agent's requests are exactly what its
// ClusterRole grants. Then removal as the README documents it: cleanup DaemonSet, Node fields.
func TestDaemonSetRunsAgent(t *testing.T) {
	c := kube.Cluster(t)
	applyBase(t, c)
	admin := c.Client(t)
	ds := daemonSet(t, kustomize(t, "deploy/base"), "calico-prep")
	ctr := agentContainer(t, ds)

	node := testbed.Up(t, testbed.Options{Name: "dsrun", Firewalld: true, NetworkManager: true})
	// Forwarding is on on every Kubernetes node (kubeadm's preflight requires it); a fresh
	// namespace has it off.
	if err := node.Do(func() error { return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644) }); err != nil {
		t.Fatal(err)
	}
	createNode(t, admin, node.Name, node.UplinkAddr.Addr().String())
	// Calico's CRDs, as once Calico is installed: the agent reads its configuration from them.
	calicotest.Install(t, c, calicotest.V1)
	calicotest.Install(t, c, calicotest.Operator, "installations.operator.tigera.io")
	// Stands in for the token kubelet projects into the pod: bound to the pod's Node, it
	// carries the node name the admission policy checks.
	token := c.Token(t, agentNamespace, agentServiceAccount, node.Name)
	relay, err := url.Parse(c.RelayInto(t, node.NetNS))
	if err != nil {
		t.Fatal(err)
	}
	image := buildAgentWithDockerfile(t)

	env := containerEnv(t, ctr, node.Name)
	for k, v := range envEdits {
		if _, ok := env[k]; !ok {
			t.Fatalf("env block has no %s to edit", k)
		}
		env[k] = v
	}
	p := &pod{node: node, hostPath: testbedPaths(t, node), volumes: ds.Spec.Template.Spec.Volumes,
		token: token, caFile: c.CAFile, apiHost: relay.Hostname(), apiPort: relay.Port()}
	started := time.Now()
	agent := p.start(t, ctr, imageEntrypoint(t), image, env)

	// The Node reports the node prepared.
	var n *corev1.Node
	testkit.Eventually(t, ready, func() string {
		if agent.Exited() {
			t.Fatalf("agent exited: %v\n%s", agent.Err(), agent.logTail(40))
		}
		n, err = admin.CoreV1().Nodes().Get(t.Context(), node.Name, metav1.GetOptions{})
		if err != nil {
			return err.Error()
		}
		cond := condition(n)
		if n.Labels[nodestatus.LabelReady] == "true" && cond != nil && cond.Status == corev1.ConditionTrue {
			return ""
		}
		return fmt.Sprintf("label %q, condition %+v", n.Labels[nodestatus.LabelReady], cond)
	})

	t.Run("README's kubectl wait", func(t *testing.T) {
		c.Kubectl(t, "wait", "node/"+node.Name, `--for=jsonpath={.metadata.labels.calico-prep\.io/ready}=true`, "--timeout=30s")
		c.Kubectl(t, "wait", "node/"+node.Name, "--for=condition="+nodestatus.ConditionType, "--timeout=30s")
	})

	t.Run("runs with the declared capabilities only, no escalation, a read-only root", func(t *testing.T) {
		st, err := agent.status()
		if err != nil {
			t.Fatal(err)
		}
		var added []string
		for _, c := range ctr.SecurityContext.Capabilities.Add {
			added = append(added, string(c))
		}
		want := map[string]string{"CapInh": capMask(nil), "CapAmb": capMask(nil),
			"CapPrm": capMask(added), "CapEff": capMask(added), "CapBnd": capMask(added)}
		for k, v := range want {
			if st[k] != v {
				t.Errorf("%s = %s, want %s (%v)", k, st[k], v, added)
			}
		}
		if st["NoNewPrivs"] != "1" || !strings.HasPrefix(st["Uid"], "0\t") {
			t.Errorf("NoNewPrivs %s, Uid %s: want 1 and root", st["NoNewPrivs"], st["Uid"])
		}
		if opts, err := agent.rootMountOptions(); err != nil || !strings.HasPrefix(opts, "ro") {
			t.Errorf("root mount options %q (%v), want read-only", opts, err)
		}
	})

	// Event-driven with exactly these privileges: an address in the pod CIDR on the uplink
	// makes the node not prepared within seconds (the resync is 10 minutes away), and its
	// removal makes it prepared again.
	t.Run("reacts to netlink events", func(t *testing.T) {
		waitReady := func(want string) {
			testkit.Eventually(t, ready, func() string {
				n, err := admin.CoreV1().Nodes().Get(t.Context(), node.Name, metav1.GetOptions{})
				if err != nil {
					return err.Error()
				}
				if got := n.Labels[nodestatus.LabelReady]; got != want {
					return fmt.Sprintf("label %s=%q, want %q", nodestatus.LabelReady, got, want)
				}
				return ""
			})
		}
		addr := "10.244.5.1/24" // inside envEdits' pool
		if _, err := node.Exec(t.Context(), "ip", "addr", "add", addr, "dev", node.Uplink); err != nil {
			t.Fatal(err)
		}
		waitReady("false")
		// Not prepared: the pod turns NotReady, but stays alive.
		for path, want := range map[string]int{ctr.ReadinessProbe.HTTPGet.Path: http.StatusServiceUnavailable, ctr.LivenessProbe.HTTPGet.Path: http.StatusOK} {
			resp, err := nodeHTTPClient(node).Get(fmt.Sprintf("http://127.0.0.1:%d%s", ctr.Ports[0].ContainerPort, path))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("not prepared: %s answers %d, want %d", path, resp.StatusCode, want)
			}
		}
		if _, err := node.Exec(t.Context(), "ip", "addr", "del", addr, "dev", node.Uplink); err != nil {
			t.Fatal(err)
		}
		waitReady("true")
		if log := agent.log(); strings.Contains(log, "operation not permitted") || strings.Contains(log, "permission denied") {
			t.Errorf("the agent lacked a privilege:\n%s", agent.logTail(40))
		}
	})

	port := ctr.Ports[0].ContainerPort
	t.Run("probes", func(t *testing.T) {
		client := nodeHTTPClient(node)
		for _, pr := range []*corev1.Probe{ctr.LivenessProbe, ctr.ReadinessProbe} {
			resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, pr.HTTPGet.Path))
			if err != nil {
				t.Fatalf("GET %s: %v", pr.HTTPGet.Path, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("%s: %d %s", pr.HTTPGet.Path, resp.StatusCode, body)
			}
		}
	})

	t.Run("Prometheus scrapes it", func(t *testing.T) {
		prom := startPrometheus(t, node, fmt.Sprintf("127.0.0.1:%d", port))
		testkit.Eventually(t, ready, func() string {
			res, err := prom.query("calico_prep_ready")
			if err != nil {
				return err.Error()
			}
			if len(res) == 1 && res[0].Value == "1" && res[0].Metric["node"] == node.Name && res[0].Metric["job"] == "calico-prep" {
				return ""
			}
			return fmt.Sprintf("calico_prep_ready: %+v", res)
		})
		// Every alert expression and dashboard query evaluates against the real series.
		queries := dashboardQueries(t)
		for i, e := range alertExprs(t) {
			queries[fmt.Sprintf("alert %d", i)] = e
		}
		for where, q := range queries {
			if _, err := prom.query(q); err != nil {
				t.Errorf("%s: %s: %v", where, q, err)
			}
		}
		// Queries that must find the agent's series.
		for _, q := range []string{`sum(calico_prep_ready{job="calico-prep"})`, `calico_prep_check_status{job="calico-prep", status="pass"} == 1`,
			`calico_prep_apply_total{job="calico-prep", result="success"}`, `up{job="calico-prep"} == 1`} {
			if res, err := prom.query(q); err != nil || len(res) == 0 {
				t.Errorf("%s: %v %v", q, res, err)
			}
		}
	})

	t.Run("requests are exactly what RBAC grants", func(t *testing.T) {
		granted := map[string]bool{}
		for _, o := range objects(t, kustomize(t, "deploy/base")) {
			if o.GetKind() != "ClusterRole" && o.GetKind() != "Role" {
				continue
			}
			rules, _, _ := unstructuredSlice(o.Object, "rules")
			for _, r := range rules {
				for _, res := range r["resources"] {
					for _, v := range r["verbs"] {
						granted[v+" "+res+" "+o.GetNamespace()] = true
					}
				}
			}
		}
		used := map[string]bool{}
		for _, ev := range c.AuditEvents(t, "system:serviceaccount:"+agentNamespace+":"+agentServiceAccount) {
			if ev.Time.Before(started) {
				continue
			}
			if ev.Code >= 400 {
				t.Errorf("refused: %s %s (%d)", ev.Verb, ev.RequestURI, ev.Code)
			}
			res := ev.Resource
			if ev.Subresource != "" {
				res += "/" + ev.Subresource
			}
			ns := ev.Namespace
			if res != "events" && res != "configmaps" {
				ns = "" // ClusterRole grants
			}
			used[ev.Verb+" "+res+" "+ns] = true
		}
		// Everything granted was used, except the node count: the agent counts nodes for the
		// Typha advice on its first resync, ten minutes in (TestAdmissionPolicyConfinesAgent
		// runs that count with the agent's client and token).
		for k := range used {
			if !granted[k] {
				t.Errorf("the agent did %s, which RBAC does not grant", k)
			}
		}
		var unused []string
		for _, k := range sortedKeys(granted) {
			if !used[k] {
				unused = append(unused, k)
			}
		}
		// Calico's resources are read with one watch each (watch-list); the lists are for API
		// servers without it (before Kubernetes 1.32), where each watch follows a list.
		want := []string{"list bgpconfigurations ", "list configmaps kube-system", "list customresourcedefinitions ",
			"list felixconfigurations ", "list installations ", "list ippools ", "list nodes ", "list services "}
		if !slices.Equal(unused, want) {
			t.Errorf("granted but not used: %q; want only the node count's list and the lists of Calico's resources", unused)
		}
	})

	// Removal, as the README documents it.
	if err := agent.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	if code, err := agent.Wait(time.Second); err != nil || code != 0 {
		t.Fatalf("agent exit %d, %v on SIGTERM\n%s", code, err, agent.logTail(20))
	}
	dropIns, _ := filepath.Glob(filepath.Join(node.NMConfDir, "*"))
	ports := firewalldPorts(t, node)
	if len(dropIns) == 0 || !strings.Contains(ports, "4789/udp") {
		t.Fatalf("before cleanup: drop-ins %q, firewalld ports %q: the agent prepared nothing", dropIns, ports)
	}

	t.Run("cleanup DaemonSet", func(t *testing.T) {
		cds := daemonSet(t, kustomize(t, "deploy/cleanup"), "calico-prep-cleanup")
		init := cds.Spec.Template.Spec.InitContainers[0]
		cp := &pod{node: node, hostPath: testbedPaths(t, node), volumes: cds.Spec.Template.Spec.Volumes}
		cl := cp.start(t, init, nil, image, containerEnv(t, init, node.Name))
		if code, err := cl.Wait(ready); err != nil || code != 0 {
			t.Fatalf("agent cleanup: exit %d, %v\n%s", code, err, cl.logTail(20))
		}
		if after, _ := filepath.Glob(filepath.Join(node.NMConfDir, "*")); len(after) != 0 {
			t.Errorf("drop-ins left after cleanup: %q", after)
		}
		if ports := firewalldPorts(t, node); strings.Contains(ports, "4789/udp") {
			t.Errorf("firewalld ports after cleanup: %q", ports)
		}
	})

	t.Run("Node fields removed", func(t *testing.T) {
		cmd := exec.CommandContext(t.Context(), "bash", "-euo", "pipefail", "-c", removeNodeFields)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+c.Kubeconfig, "HOME="+t.TempDir(),
			"PATH="+filepath.Dir(kubectlBin(t))+":"+os.Getenv("PATH"))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("README's removal of the Node fields: %v\n%s", err, out)
		}
		n, err := admin.CoreV1().Nodes().Get(t.Context(), node.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := n.Labels[nodestatus.LabelReady]; ok || n.Annotations[nodestatus.AnnotationReport] != "" || condition(n) != nil {
			t.Errorf("after removal: labels %v annotations %v conditions %+v", n.Labels, n.Annotations, n.Status.Conditions)
		}
		if n.Labels["team"] != "network" || len(n.Status.Conditions) != 1 || len(n.Status.Addresses) != 1 {
			t.Errorf("removal touched kubelet's fields: labels %v conditions %+v addresses %+v", n.Labels, n.Status.Conditions, n.Status.Addresses)
		}
	})
}

// removeNodeFields is step 4 of README's "Remove", verbatim: an empty server-side apply as the
// agent's field manager drops the fields only it owns.
const removeNodeFields = `for n in $(kubectl get nodes -o jsonpath='{.items[*].metadata.name}'); do
  node="{\"apiVersion\":\"v1\",\"kind\":\"Node\",\"metadata\":{\"name\":\"$n\"}}"
  echo "$node" | kubectl apply --server-side --field-manager=calico-prep -f -
  echo "$node" | kubectl apply --server-side --field-manager=calico-prep --subresource=status -f -
done`

func condition(n *corev1.Node) *corev1.NodeCondition {
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == nodestatus.ConditionType {
			return &n.Status.Conditions[i]
		}
	}
	return nil
}

// firewalldPorts lists the ports of every firewalld zone in the node, permanent and runtime.
func firewalldPorts(t testing.TB, node *testbed.Node) string {
	t.Helper()
	var out []string
	for _, args := range [][]string{{"--list-all-zones"}, {"--permanent", "--list-all-zones"}} {
		b, err := node.Exec(t.Context(), "firewall-cmd", args...)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && k == "ports" && strings.TrimSpace(v) != "" {
				out = append(out, strings.TrimSpace(v))
			}
		}
	}
	return strings.Join(out, " ")
}

func alertExprs(t testing.TB) []string {
	t.Helper()
	var groups struct {
		Groups []struct {
			Rules []struct {
				Expr string `json:"expr"`
			} `json:"rules"`
		} `json:"groups"`
	}
	rule := find(t, objects(t, kustomize(t, "deploy/monitoring")), "PrometheusRule", "calico-prep")
	data, err := json.Marshal(rule.Object["spec"])
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &groups); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			out = append(out, r.Expr)
		}
	}
	return out
}

// unstructuredSlice reads a list of string-list maps, e.g. a Role's rules.
func unstructuredSlice(obj map[string]any, field string) ([]map[string][]string, bool, error) {
	raw, ok := obj[field].([]any)
	if !ok {
		return nil, false, nil
	}
	var out []map[string][]string
	for _, r := range raw {
		m := map[string][]string{}
		for k, v := range r.(map[string]any) {
			for _, s := range v.([]any) {
				m[k] = append(m[k], s.(string))
			}
		}
		out = append(out, m)
	}
	return out, true, nil
}

func sortedKeys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// prometheus is a real Prometheus (Debian's package) running in a node's network namespace
// with a private data directory.
type prometheus struct {
	t    testing.TB
	node *testbed.Node
	addr string
}

type sample struct {
	Metric map[string]string
	Value  string
}

// startPrometheus runs Prometheus in the node, scraping target every second as job
// calico-prep with the node label the PodMonitor adds, and stops it at cleanup.
func startPrometheus(t testing.TB, node *testbed.Node, target string) *prometheus {
	t.Helper()
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: calico-prep
    static_configs:
      - targets: [%q]
        labels:
          node: %q
`, target, node.Name)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := freePortIn(node)
	if err != nil {
		t.Fatal(err)
	}
	p := &prometheus{t: t, node: node, addr: ln}
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command("nsenter", "--net="+node.NetNS, "--", "prometheus",
		"--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+p.addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	proc, err := testkit.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := proc.Stop(20 * time.Second); err != nil {
			t.Logf("prometheus: %v", err)
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
			t.Logf("prometheus log:\n%s", b)
		}
	})
	return p
}

// nodeHTTPClient is an HTTP client whose connections are opened inside the node's network
// namespace: the transport dials on goroutines of its own, so the dial itself switches.
func nodeHTTPClient(node *testbed.Node) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var conn net.Conn
			err := node.Do(func() (err error) {
				conn, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		},
	}}
}

// freePortIn returns a loopback address with a port that was free in the node a moment ago.
func freePortIn(node *testbed.Node) (string, error) {
	var addr string
	err := node.Do(func() error {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		addr = ln.Addr().String()
		return ln.Close()
	})
	return addr, err
}

// query runs an instant query through Prometheus's HTTP API inside the node.
func (p *prometheus) query(q string) ([]sample, error) {
	var out []sample
	var qerr error
	err := func() error {
		resp, err := nodeHTTPClient(p.node).Get("http://" + p.addr + "/api/v1/query?query=" + url.QueryEscape(q))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var body struct {
			Status string `json:"status"`
			Error  string `json:"error"`
			Data   struct {
				ResultType string            `json:"resultType"`
				Result     []json.RawMessage `json:"result"`
			} `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			return err
		}
		if body.Status != "success" {
			qerr = fmt.Errorf("query %q: %s", q, body.Error)
			return nil
		}
		for _, r := range body.Data.Result {
			var v struct {
				Metric map[string]string `json:"metric"`
				Value  []any             `json:"value"`
			}
			if err := json.Unmarshal(r, &v); err != nil {
				return err
			}
			s := sample{Metric: v.Metric}
			if len(v.Value) == 2 {
				s.Value, _ = v.Value[1].(string)
			}
			out = append(out, s)
		}
		return nil
	}()
	if err != nil {
		return nil, err
	}
	return out, qerr
}
