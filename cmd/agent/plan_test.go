package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/calico-prep/calico-prep/pkg/autodetect"
	"github.com/calico-prep/calico-prep/pkg/cidr"
	"github.com/calico-prep/calico-prep/pkg/host"
	"github.com/calico-prep/calico-prep/pkg/plan"
	"github.com/calico-prep/calico-prep/pkg/plan/plantest"
	"github.com/calico-prep/calico-prep/test/kubetest"
)

// planHosts is the synthetic cluster of the API tests: every layout of plantest, with the
// kubelet on every 20th multi-NIC host having registered the storage address as InternalIP.
func planHosts(n int) []plantest.Host {
	hosts := plantest.Cluster("plan", n)
	for i := range hosts {
		if hosts[i].Layout == plantest.MultiNIC && i%20 == 1 {
			eth1, _ := hosts[i].Snapshot.Interface("eth1")
			hosts[i].InternalIPs = []netip.Addr{eth1.Addrs[0].Addr(), hosts[i].Addr6.Addr()}
		}
	}
	return hosts
}

// createNodes creates the hosts' Nodes with their reports, InternalIPs and roles, in parallel;
// withReport false leaves the annotation out, as before the agent runs.
func createNodes(t testing.TB, c *kubetest.Cluster, hosts []plantest.Host, withReport bool) {
	t.Helper()
	cfg := c.Config()
	cfg.QPS, cfg.Burst = 1000, 1000
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	work := make(chan plantest.Host)
	errs := make(chan error, len(hosts))
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for h := range work {
				n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: h.Name, Labels: map[string]string{}, Annotations: map[string]string{}}}
				if h.ControlPlane {
					n.Labels["node-role.kubernetes.io/control-plane"] = ""
				}
				if withReport {
					n.Annotations["calico-prep.io/report"] = h.Annotation()
				}
				n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: h.Name}}
				for _, a := range h.InternalIPs {
					n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: a.String()})
				}
				if _, err := cs.CoreV1().Nodes().Create(context.Background(), n, metav1.CreateOptions{}); err != nil {
					errs <- fmt.Errorf("create node %s: %w", h.Name, err)
				}
			}
		})
	}
	for _, h := range hosts {
		work <- h
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// planLists counts the node lists calico-prep has made, to prove bad input stops before any.
func planLists(t *testing.T, c *kubetest.Cluster) int {
	n := 0
	for _, e := range c.AuditEvents(t, kubetest.AdminUser) {
		if e.UserAgent == "calico-prep" && e.Verb == "list" && e.Resource == "nodes" {
			n++
		}
	}
	return n
}

// kubectlIn runs kubectl with stdin.
func kubectlIn(t *testing.T, c *kubetest.Cluster, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), filepath.Join(c.BinDir, "kubectl"),
		append([]string{"--cache-dir=" + filepath.Join(t.TempDir(), "cache")}, args...)...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.Kubeconfig)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kubectl %s: %v: %s\nstdin:\n%s", strings.Join(args, " "), err, stderr.String(), stdin)
	}
	return stdout.String()
}

// verifyPlan checks a plan against the hosts themselves, with their full snapshots: no pool
// collides with anything, and each family's method picks intended(h) on every host with the
// agent's own autodetection code.
func verifyPlan(t *testing.T, hosts []plantest.Host, p plan.Plan, services []netip.Prefix, intended func(h plantest.Host, fam int) netip.Prefix) {
	t.Helper()
	for _, pool := range p.Pools {
		if !pool.CIDR.IsValid() {
			t.Fatalf("IPv%d: no pod CIDR: %s", pool.Family, pool.Note)
		}
		in := cidr.Input{Pools: []netip.Prefix{pool.CIDR}, ServiceCIDRs: services}
		if cs := cidr.Collisions(in, host.Snapshot{}); len(cs) > 0 {
			t.Errorf("IPv%d: %s", pool.Family, cs[0])
		}
		for _, h := range hosts {
			if cs := cidr.Collisions(in, h.Snapshot); len(cs) > 0 {
				t.Errorf("IPv%d on %s: %s", pool.Family, h.Name, cs[0])
			}
		}
	}
	for _, ad := range p.Autodetection {
		m, err := autodetect.ParseMethod(ad.Method)
		if err != nil {
			t.Fatalf("IPv%d method %q: %v", ad.Family, ad.Method, err)
		}
		wrong := 0
		for _, h := range hosts {
			res, err := autodetect.Detect(t.Context(), m, ad.Family, h.Snapshot.Interfaces, autodetect.Env{
				NodeInternalIPs: h.InternalIPs,
				CanReach: func(context.Context, string, int) (netip.Addr, error) {
					return netip.Addr{}, errors.New("no real route lookup for synthetic hosts")
				},
			})
			if want := intended(h, ad.Family); err != nil || res.CIDR != want {
				if wrong++; wrong <= 5 {
					t.Errorf("IPv%d %s on %s: %+v, %v; want %s", ad.Family, ad.Method, h.Name, res, err, want)
				}
			}
		}
	}
}

// byInternalIP is the default intent: the address of the interface holding the InternalIP.
func byInternalIP(h plantest.Host, fam int) netip.Prefix {
	for _, ip := range h.InternalIPs {
		if (fam == 4) != ip.Is4() {
			continue
		}
		for _, i := range h.Snapshot.Interfaces {
			for _, a := range i.Addrs {
				if a.Addr() == ip {
					return a
				}
			}
		}
	}
	return netip.Prefix{}
}

// byLayout is the layout's own intent: the node network, whatever the kubelet registered.
func byLayout(h plantest.Host, fam int) netip.Prefix {
	if fam == 6 {
		return h.Addr6
	}
	return h.Addr4
}

func decodeEnv(t *testing.T, ds appsv1.DaemonSet) (map[string]corev1.EnvVar, corev1.Container) {
	t.Helper()
	for _, c := range ds.Spec.Template.Spec.Containers {
		if c.Name == "calico-node" {
			env := map[string]corev1.EnvVar{}
			for _, e := range c.Env {
				if _, dup := env[e.Name]; dup {
					t.Errorf("env %s twice", e.Name)
				}
				env[e.Name] = e
			}
			return env, c
		}
	}
	t.Fatal("no calico-node container")
	return nil, corev1.Container{}
}

// TestPlanAgainstAPIServer runs `agent plan` against a real kube-apiserver holding 230 Nodes
// with reports from realistic layouts, checks the plan against the layouts and each output
// format with the tool that consumes it.
func TestPlanAgainstAPIServer(t *testing.T) {
	c := kubetest.Start(t)
	env := map[string]string{"KUBECONFIG": c.Kubeconfig}
	planArgs := func(args ...string) []string { return append([]string{"plan"}, args...) }

	t.Run("no nodes", func(t *testing.T) {
		_, stderr, code := runArgs(t, env, planArgs()...)
		if code != exitUsage || !strings.Contains(stderr, "agent: no node has a readable calico-prep.io/report annotation (0 nodes listed)") {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
	})

	t.Run("bad input stops before listing", func(t *testing.T) {
		tests := []struct {
			name string
			env  map[string]string
			args []string
			want string
		}{
			{"no kubeconfig", map[string]string{}, nil, "no kubeconfig: give --kubeconfig or set KUBECONFIG"},
			{"missing kubeconfig file", nil, []string{"--kubeconfig=/no/such/kubeconfig"}, `--kubeconfig: load kubeconfig "/no/such/kubeconfig": no such file`},
			{"IPv4 size longer than a block", nil, []string{"--pod-cidr-size=27"}, "--pod-cidr-size: impossible pod CIDR size: an IPv4 pool of /27 cannot hold one of Calico's /26 blocks"},
			{"IPv4 size larger than private space", nil, []string{"--pod-cidr-size=6"}, "--pod-cidr-size: impossible pod CIDR size: an IPv4 pool of /6 is larger than any private range"},
			{"IPv4 size out of range", nil, []string{"--pod-cidr-size=33"}, "--pod-cidr-size: invalid prefix length 33: want 1 to 32"},
			{"IPv6 size", nil, []string{"--pod-cidr-v6-size=124", "--ipv6"}, "--pod-cidr-v6-size: impossible pod CIDR size: an IPv6 pool of /124"},
			{"larger than kubeadm podSubnet", nil, []string{"--kubeadm-pod-subnet=10.244.0.0/16", "--pod-cidr-size=14"}, "--pod-cidr-size: impossible pod CIDR size: an IPv4 pool of /14 is larger than any kubeadm podSubnet (the largest is 10.244.0.0/16)"},
			{"bad CIDR", nil, []string{"--pod-cidr=172.16.0.0/33"}, `--pod-cidr: invalid CIDR "172.16.0.0/33"`},
			{"host bits", nil, []string{"--pod-cidr-v6=fd00::1/48"}, `--pod-cidr-v6: "fd00::1/48" has host bits set`},
			{"bad service CIDR", nil, []string{"--service-cidr=10.96.0.0/12,nope"}, `--service-cidr: invalid CIDR "nope"`},
			{"bad encapsulation", nil, []string{"--encapsulation=gre"}, `--encapsulation: unknown encapsulation "gre"`},
			{"ipip without BGP", nil, []string{"--bgp=false"}, "--bgp: false with --encapsulation ipip"},
			{"bad regex", nil, []string{"--intended-interface=eth[0"}, `--intended-interface: invalid regex "eth[0"`},
			{"bad output", nil, []string{"-o", "yaml"}, `-o: unknown output format "yaml"`},
			{"positional", nil, []string{"nodes"}, `unexpected argument "nodes"`},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				e := env
				if tt.env != nil {
					e = tt.env
				}
				before := planLists(t, c)
				_, stderr, code := runArgs(t, e, planArgs(tt.args...)...)
				if code != exitUsage || !strings.HasPrefix(lastLine(stderr), "agent: "+tt.want) {
					t.Errorf("exit %d, last line %q; want exit 2 and %q", code, lastLine(stderr), tt.want)
				}
				if after := planLists(t, c); after != before {
					t.Errorf("%d node lists made before rejecting the input", after-before)
				}
			})
		}
	})

	// A node whose agent has not run yet: still no report anywhere.
	createNodes(t, c, plantest.Cluster("fresh", 1), false)
	t.Run("no reports", func(t *testing.T) {
		_, stderr, code := runArgs(t, env, planArgs()...)
		if code != exitUsage || !strings.Contains(stderr, "(1 nodes listed)") {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
	})
	deleteNode(t, c, "fresh-0000")

	hosts := planHosts(230)
	createNodes(t, c, hosts, true)
	services := []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12"), netip.MustParsePrefix("fd00:96::/108")}
	serviceFlag := "--service-cidr=10.96.0.0/12,fd00:96::/108"

	jsonPlan := func(t *testing.T, args ...string) plan.Plan {
		t.Helper()
		out, stderr, code := runArgs(t, env, planArgs(append(args, "-o", "json", "--page-size=50")...)...)
		if code != exitOK {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		var p plan.Plan
		if err := json.Unmarshal([]byte(out), &p); err != nil {
			t.Fatalf("decode plan: %v\n%s", err, out)
		}
		return p
	}

	t.Run("json dual stack", func(t *testing.T) {
		p := jsonPlan(t, serviceFlag, "--ipv6")
		if p.Nodes != len(hosts) || p.Reported != len(hosts) || p.Partial {
			t.Fatalf("nodes %d, reported %d, partial %v: %q", p.Nodes, p.Reported, p.Partial, p.Problems)
		}
		if len(p.Pools) != 2 || len(p.Autodetection) != 2 {
			t.Fatalf("pools %+v, autodetection %+v", p.Pools, p.Autodetection)
		}
		verifyPlan(t, hosts, p, services, byInternalIP)
		if p.Pools[0].AskedCollisions == nil || p.Pools[0].AskedCollisions.Nodes == 0 {
			t.Errorf("192.168.0.0/16 collides with the seed hosts, but no collision is explained: %+v", p.Pools[0])
		}
		want := max(3, min(20, (len(hosts)+199)/200))
		if !p.Typha.Recommended || p.Typha.Replicas != want || p.Typha.Nodes != len(hosts) {
			t.Errorf("typha = %+v, want %d replicas", p.Typha, want)
		}
		var openings []string
		for _, o := range p.Firewall {
			openings = append(openings, o.String())
		}
		if !slices.Equal(openings, []string{"port 179/tcp", "protocol ipencap", "port 5473/tcp"}) {
			t.Errorf("firewall = %q", openings)
		}
	})

	t.Run("json intended interface", func(t *testing.T) {
		p := jsonPlan(t, serviceFlag, `--intended-interface=^(ens33|eth0|bond0\.100|eno1)$`)
		verifyPlan(t, hosts, p, services, byLayout)
		ad := p.Autodetection[0]
		k8s := ad.Candidates[0]
		var mistaken []string
		for _, h := range hosts {
			if byInternalIP(h, 4) != h.Addr4 {
				mistaken = append(mistaken, h.Name)
			}
		}
		if k8s.Method != "kubernetes-internal-ip" || k8s.Wrong != len(mistaken) || len(mistaken) == 0 {
			t.Errorf("kubernetes-internal-ip wrong on %d nodes, want the %d whose InternalIP is the storage address", k8s.Wrong, len(mistaken))
		}
		for _, m := range k8s.Misses {
			if !slices.Contains(mistaken, m.Node) {
				t.Errorf("miss on %s, whose InternalIP is right", m.Node)
			}
		}
		if ad.Method == "kubernetes-internal-ip" || ad.Method == "" {
			t.Errorf("method = %q", ad.Method)
		}
	})

	t.Run("human", func(t *testing.T) {
		out, stderr, code := runArgs(t, env, planArgs(serviceFlag)...)
		if code != exitOK {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		p := jsonPlan(t, serviceFlag)
		for _, want := range []string{
			fmt.Sprintf("Calico plan for %d nodes (%d reported;", len(hosts), len(hosts)),
			"Pod CIDR (IPv4): " + p.Pools[0].CIDR.String(),
			"the asked 192.168.0.0/16 cannot be used",
			"overlaps virbr0 address 192.168.122.1/24",
			"IP autodetection (IPv4): IP_AUTODETECTION_METHOD=" + p.Autodetection[0].Method,
			fmt.Sprintf("first-found is wrong on %d nodes", p.Autodetection[0].Candidates[len(p.Autodetection[0].Candidates)-1].Wrong),
			"(estimate from routes)",
			"Datastore: " + p.Typha.Advice,
			"port 179/tcp",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("human output lacks %q:\n%s", want, out)
			}
		}
		t.Logf("human output:\n%s", out)
	})

	t.Run("env through kubectl set env", func(t *testing.T) {
		out, stderr, code := runArgs(t, env, planArgs(serviceFlag, "-o", "env")...)
		if code != exitOK {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		p := jsonPlan(t, serviceFlag)
		set := kubectlIn(t, c, out, "set", "env", "--local", "-f", "testdata/calico-node/daemonset.yaml", "-c", "calico-node", "-e", "-", "-o", "json")
		var ds appsv1.DaemonSet
		if err := json.Unmarshal([]byte(set), &ds); err != nil {
			t.Fatal(err)
		}
		got, _ := decodeEnv(t, ds)
		for _, e := range p.Env() {
			if got[e.Name].Value != e.Value || got[e.Name].ValueFrom != nil {
				t.Errorf("%s = %+v, want %q", e.Name, got[e.Name], e.Value)
			}
		}
		if got["DATASTORE_TYPE"].Value != "kubernetes" {
			t.Errorf("unrelated variables changed: %+v", got["DATASTORE_TYPE"])
		}
	})

	for _, tt := range []struct {
		name string
		args []string
	}{
		{"kustomize ipip", nil},
		{"kustomize vxlan dual stack", []string{"--encapsulation=vxlan", "--ipv6"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{serviceFlag}, tt.args...)
			patch, stderr, code := runArgs(t, env, planArgs(append(args, "-o", "kustomize")...)...)
			if code != exitOK {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			t.Logf("patch:\n%s", patch)
			p := jsonPlan(t, args...)
			dir := t.TempDir()
			base, err := os.ReadFile("testdata/calico-node/daemonset.yaml")
			if err != nil {
				t.Fatal(err)
			}
			files := map[string]string{
				"calico-node.yaml":   string(base),
				"plan.yaml":          patch,
				"kustomization.yaml": "resources: [calico-node.yaml]\npatches:\n- path: plan.yaml\n",
			}
			for name, data := range files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			built := c.Kubectl(t, "kustomize", dir)
			// The API server validates the result (a value beside a valueFrom is rejected).
			created := kubectlIn(t, c, built, "create", "--dry-run=server", "-f", "-", "-o", "json")
			var ds appsv1.DaemonSet
			if err := json.Unmarshal([]byte(created), &ds); err != nil {
				t.Fatal(err)
			}
			got, container := decodeEnv(t, ds)
			for _, e := range p.Env() {
				if got[e.Name].Value != e.Value || got[e.Name].ValueFrom != nil {
					t.Errorf("%s = %+v, want %q", e.Name, got[e.Name], e.Value)
				}
			}
			if got["NODENAME"].ValueFrom == nil || got["CLUSTER_TYPE"].Value != "k8s,bgp" || len(ds.Spec.Template.Spec.InitContainers) != 1 {
				t.Errorf("the patch changed what it does not own: NODENAME %+v, CLUSTER_TYPE %+v", got["NODENAME"], got["CLUSTER_TYPE"])
			}
			live, ready := container.LivenessProbe.Exec.Command, container.ReadinessProbe.Exec.Command
			if p.BGP != slices.Contains(live, "-bird-live") || p.BGP != slices.Contains(ready, "-bird-ready") {
				t.Errorf("BGP %v, probes %q and %q", p.BGP, live, ready)
			}
		})
	}

	t.Run("operator Installation", func(t *testing.T) {
		out, stderr, code := runArgs(t, env, planArgs(serviceFlag, "--ipv6", "-o", "operator")...)
		if code != exitOK {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		t.Logf("operator output:\n%s", out)
		p := jsonPlan(t, serviceFlag, "--ipv6")
		in := decodeInstallation(t, out)
		if in.APIVersion != "operator.tigera.io/v1" || in.Kind != "Installation" || in.Metadata.Name != "default" {
			t.Errorf("object %s/%s %s", in.APIVersion, in.Kind, in.Metadata.Name)
		}
		n := in.Spec.CalicoNetwork
		if n == nil || n.BGP == nil || *n.BGP != "Enabled" || len(n.IPPools) != 2 {
			t.Fatalf("calicoNetwork = %+v", n)
		}
		for i, pool := range n.IPPools {
			if pool.CIDR != p.Pools[i].CIDR.String() || !slices.Contains([]string{"IPIP", "VXLAN", "IPIPCrossSubnet", "VXLANCrossSubnet", "None"}, pool.Encapsulation) ||
				!slices.Contains([]string{"Enabled", "Disabled"}, pool.NATOutgoing) {
				t.Errorf("pool %d = %+v, plan %s", i, pool, p.Pools[i].CIDR)
			}
		}
		for fam, nad := range map[int]*operatorAutodetection{4: n.NodeAddressAutodetectionV4, 6: n.NodeAddressAutodetectionV6} {
			if nad == nil || nad.set() != 1 {
				t.Errorf("IPv%d autodetection %+v: want exactly one method", fam, nad)
			}
		}
		if p.Autodetection[0].Method == "kubernetes-internal-ip" && (n.NodeAddressAutodetectionV4.Kubernetes == nil || *n.NodeAddressAutodetectionV4.Kubernetes != "NodeInternalIP") {
			t.Errorf("V4 = %+v, want kubernetes: NodeInternalIP", n.NodeAddressAutodetectionV4)
		}
	})

	t.Run("forbidden", func(t *testing.T) {
		kc := c.KubeconfigFor(t, c.Token(t, "plan-test", "nobody", ""), "")
		_, stderr, code := runArgs(t, map[string]string{}, planArgs("--kubeconfig", kc)...)
		if code != exitNotReady || !strings.Contains(stderr, "forbidden") {
			t.Errorf("exit %d, stderr %q; want 1 and the API server's refusal", code, stderr)
		}
	})

	// Two nodes the agent has not reached: the plan says it is partial.
	createNodes(t, c, plantest.Cluster("late", 2), false)
	t.Run("partial", func(t *testing.T) {
		out, stderr, code := runArgs(t, env, planArgs(serviceFlag)...)
		if code != exitNotReady {
			t.Fatalf("exit %d, want 1: %s", code, stderr)
		}
		if !strings.Contains(stderr, "agent: plan: 2 of 232 nodes have no report and are not covered") {
			t.Errorf("stderr %q", stderr)
		}
		for _, want := range []string{"Nodes without a report (2)", "late-0000: no calico-prep.io/report annotation", "The plan is PARTIAL"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		env, _, code := runArgs(t, env, planArgs(serviceFlag, "-o", "env")...)
		if code != exitNotReady || !strings.Contains(env, "# PARTIAL: 2 of 232 nodes have no report") {
			t.Errorf("env output does not say it is partial (exit %d):\n%s", code, env)
		}
	})
}

func deleteNode(t *testing.T, c *kubetest.Cluster, name string) {
	t.Helper()
	if err := c.Client(t).CoreV1().Nodes().Delete(t.Context(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

// operatorInstallation is the documented shape of operator.tigera.io/v1 Installation, as far
// as a plan may fill it (Tigera Operator API reference: InstallationSpec, CalicoNetworkSpec,
// IPPool, NodeAddressAutodetection, TyphaDeployment). Decoding rejects any other field.
type operatorInstallation struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		CalicoNetwork *struct {
			BGP     *string `json:"bgp"`
			IPPools []struct {
				Name             string `json:"name"`
				CIDR             string `json:"cidr"`
				Encapsulation    string `json:"encapsulation"`
				NATOutgoing      string `json:"natOutgoing"`
				NodeSelector     string `json:"nodeSelector"`
				BlockSize        *int32 `json:"blockSize"`
				DisableBGPExport *bool  `json:"disableBGPExport"`
			} `json:"ipPools"`
			MTU                        *int32                 `json:"mtu"`
			NodeAddressAutodetectionV4 *operatorAutodetection `json:"nodeAddressAutodetectionV4"`
			NodeAddressAutodetectionV6 *operatorAutodetection `json:"nodeAddressAutodetectionV6"`
		} `json:"calicoNetwork"`
		TyphaDeployment *struct {
			Spec *struct {
				MinReadySeconds *int32          `json:"minReadySeconds"`
				Template        json.RawMessage `json:"template"`
				Strategy        json.RawMessage `json:"strategy"`
			} `json:"spec"`
		} `json:"typhaDeployment"`
	} `json:"spec"`
}

type operatorAutodetection struct {
	FirstFound    *bool    `json:"firstFound"`
	Kubernetes    *string  `json:"kubernetes"`
	Interface     string   `json:"interface"`
	SkipInterface string   `json:"skipInterface"`
	CanReach      string   `json:"canReach"`
	CIDRs         []string `json:"cidrs"`
}

func (a *operatorAutodetection) set() int {
	n := 0
	for _, set := range []bool{a.FirstFound != nil, a.Kubernetes != nil, a.Interface != "", a.SkipInterface != "", a.CanReach != "", len(a.CIDRs) > 0} {
		if set {
			n++
		}
	}
	return n
}

func decodeInstallation(t *testing.T, out string) operatorInstallation {
	t.Helper()
	js, err := yaml.YAMLToJSON([]byte(out))
	if err != nil {
		t.Fatalf("operator output is not YAML: %v\n%s", err, out)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	var in operatorInstallation
	if err := dec.Decode(&in); err != nil {
		t.Fatalf("operator output does not have the documented shape: %v\n%s", err, out)
	}
	return in
}

// BenchmarkPlan5000 is `agent plan` against a real API server holding 5,000 Nodes with reports
// (goal: under 5 s and 200 MiB). The loop measures the plan in process (time and allocations per
// plan); before it, the built binary runs three times as an operator would run it, reported as
// s-wall/process and MiB-maxrss (peak resident set of the process, from rusage).
func BenchmarkPlan5000(b *testing.B) {
	c := kubetest.Start(b)
	hosts := planHosts(5000)
	start := time.Now()
	createNodes(b, c, hosts, true)
	b.Logf("created %d nodes in %s", len(hosts), time.Since(start).Round(time.Millisecond))

	bin := filepath.Join(b.TempDir(), "agent")
	build := exec.CommandContext(b.Context(), "go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build agent: %v\n%s", err, out)
	}
	args := []string{"plan", "--kubeconfig", c.Kubeconfig, "-o", "json"}
	const runs = 3
	var wall time.Duration
	var maxRSS int64
	for range runs {
		cmd := exec.CommandContext(b.Context(), bin, args...)
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = io.Discard, &stderr
		t0 := time.Now()
		err := cmd.Run()
		wall += time.Since(t0)
		if err != nil {
			b.Fatalf("agent plan: %v: %s", err, stderr.String())
		}
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			maxRSS = max(maxRSS, ru.Maxrss) // KiB on Linux
		}
	}

	b.ReportAllocs()
	for b.Loop() {
		var stderr bytes.Buffer
		if err := run(b.Context(), args, io.Discard, &stderr, func(string) string { return "" }); err != nil {
			b.Fatalf("agent plan: %v: %s", err, stderr.String())
		}
	}
	b.ReportMetric(wall.Seconds()/runs, "s-wall/process")
	b.ReportMetric(float64(maxRSS)/1024, "MiB-maxrss")
}
