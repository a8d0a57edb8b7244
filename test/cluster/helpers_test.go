package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/calico-prep/calico-prep/pkg/nodestatus"
	"github.com/calico-prep/calico-prep/test/kubetest"
	"github.com/calico-prep/calico-prep/test/testbed"
	"github.com/calico-prep/calico-prep/test/testkit"
)

// nodeView is what one observed version of a Node says about calico-prep.
type nodeView struct {
	at        time.Time
	node      string
	ready     string // the calico-prep.io/ready label, "" when absent
	prepared  string // the calico-prep.io/prepared label
	condition string // the CalicoPrepReady condition's status, "" when absent
	reason    string
}

// nodeWatcher records every version of every Node the apiserver sends, from its start on.
type nodeWatcher struct {
	mu    sync.Mutex
	views []nodeView
}

func watchNodes(t *testing.T, c *Cluster) *nodeWatcher {
	t.Helper()
	cs, err := c.Kube.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	w := &nodeWatcher{}
	ctx, cancel := context.WithCancel(context.Background())
	list, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range list.Items {
		w.add(&list.Items[i])
	}
	rv := list.ResourceVersion
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			wi, err := cs.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true})
			if err != nil {
				time.Sleep(200 * time.Millisecond)
				continue
			}
			for ev := range wi.ResultChan() {
				n, ok := ev.Object.(*corev1.Node)
				if !ok {
					continue
				}
				rv = n.ResourceVersion
				if ev.Type == watch.Added || ev.Type == watch.Modified {
					w.add(n)
				}
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return w
}

func (w *nodeWatcher) add(n *corev1.Node) {
	v := nodeView{at: time.Now(), node: n.Name, ready: n.Labels[nodestatus.LabelReady], prepared: n.Labels[nodestatus.LabelPrepared]}
	if cond := NodeCondition(n, nodestatus.ConditionType); cond != nil {
		v.condition, v.reason = string(cond.Status), cond.Reason
	}
	w.mu.Lock()
	w.views = append(w.views, v)
	w.mu.Unlock()
}

// mark is the position of the next view, for since.
func (w *nodeWatcher) mark() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.views)
}

// since returns node's views from mark on.
func (w *nodeWatcher) since(mark int, node string) []nodeView {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []nodeView
	for _, v := range w.views[mark:] {
		if v.node == node {
			out = append(out, v)
		}
	}
	return out
}

// steady fails the test when any view of node since mark has the condition other than True or
// the prepared label other than "true", and logs how many views it saw.
func (w *nodeWatcher) steady(t *testing.T, mark int, node, during string) {
	t.Helper()
	views := w.since(mark, node)
	for _, v := range views {
		if v.condition != "True" || v.prepared != "true" || v.ready != "true" {
			t.Errorf("%s: node %s at %s: condition %q (%s), ready %q, prepared %q; want True, true, true throughout",
				during, node, v.at.Format(time.RFC3339Nano), v.condition, v.reason, v.ready, v.prepared)
		}
	}
	t.Logf("%s: node %s: %d versions of the Node watched, none with the condition not True or a label missing", during, node, len(views))
}

// waitNode waits until cond holds for the Node named name.
func waitNode(t *testing.T, c *Cluster, name string, within time.Duration, what string, cond func(*corev1.Node) bool) *corev1.Node {
	t.Helper()
	cs, err := c.Kube.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	var last *corev1.Node
	testkit.Eventually(t, within, func() string {
		n, err := cs.CoreV1().Nodes().Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			return err.Error()
		}
		last = n
		if cond(n) {
			return ""
		}
		cond := NodeCondition(n, nodestatus.ConditionType)
		return fmt.Sprintf("node %s: not yet %s: labels %v, condition %+v", name, what, n.Labels, cond)
	})
	return last
}

func prepared(n *corev1.Node) bool {
	cond := NodeCondition(n, nodestatus.ConditionType)
	return n.Labels[nodestatus.LabelReady] == "true" && n.Labels[nodestatus.LabelPrepared] == "true" &&
		cond != nil && cond.Status == corev1.ConditionTrue
}

// podsOn returns the pods of namespace matching selector, by node name.
func podsOn(t *testing.T, c *Cluster, namespace, selector string) map[string]corev1.Pod {
	t.Helper()
	cs, err := c.Kube.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	pods, err := cs.CoreV1().Pods(namespace).List(t.Context(), metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]corev1.Pod{}
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			out[p.Spec.NodeName] = p
		}
	}
	return out
}

func podReady(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// task is a running container as containerd has it.
type task struct {
	id string
	// pid is the host's PID of the container's first process (containerd reports the node's).
	pid int
}

// containerOf finds the running container name of the pod on node through containerd, as an
// operator on the node would (ctr), by the labels the CRI plugin sets.
func containerOf(t *testing.T, n *Node, pod corev1.Pod, name string) task {
	t.Helper()
	// One filter, its terms joined with "," (and); separate filters would be or'ed.
	out, err := n.Ctr(t.Context(), "-n", "k8s.io", "containers", "ls", "-q",
		"labels.\"io.kubernetes.pod.uid\"=="+string(pod.UID)+",labels.\"io.kubernetes.container.name\"=="+name)
	if err != nil {
		t.Fatal(err)
	}
	tasks, err := n.Ctr(t.Context(), "-n", "k8s.io", "tasks", "ls")
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range strings.Fields(out) {
		for _, l := range strings.Split(tasks, "\n") {
			f := strings.Fields(l)
			if len(f) == 3 && f[0] == id && f[2] == "RUNNING" {
				var pid int
				fmt.Sscan(f[1], &pid)
				hostPID, err := n.HostPID(pid)
				if err != nil {
					t.Fatal(err)
				}
				return task{id: id, pid: hostPID}
			}
		}
	}
	t.Fatalf("no running container %q of pod %s on node %s (containers: %q)", name, pod.Name, n.Name, out)
	return task{}
}

// ociSpec is the part of a container's OCI runtime spec the tests read.
type ociSpec struct {
	Process struct {
		Env          []string `json:"env"`
		User         struct{ UID, GID uint32 }
		Capabilities struct {
			Bounding, Effective, Permitted []string
		} `json:"capabilities"`
		NoNewPrivileges bool `json:"noNewPrivileges"`
	} `json:"process"`
	Root struct {
		Readonly bool `json:"readonly"`
	} `json:"root"`
	Mounts []struct {
		Destination string   `json:"destination"`
		Source      string   `json:"source"`
		Options     []string `json:"options"`
	} `json:"mounts"`
	Linux struct {
		Seccomp *struct {
			DefaultAction string `json:"defaultAction"`
		} `json:"seccomp"`
		Namespaces []struct {
			Type string `json:"type"`
			Path string `json:"path"`
		} `json:"namespaces"`
		CgroupsPath string `json:"cgroupsPath"`
	} `json:"linux"`
}

func specOf(t *testing.T, n *Node, id string) ociSpec {
	t.Helper()
	out, err := n.Ctr(t.Context(), "-n", "k8s.io", "containers", "info", "--spec", id)
	if err != nil {
		t.Fatal(err)
	}
	var s ociSpec
	// ctr prints the spec as JSON.
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &s); err != nil {
		t.Fatalf("decode spec of %s: %v\n%s", id, err, out)
	}
	return s
}

// podClient talks to the apiserver the way a pod on node does: from the node's network
// namespace, to the "kubernetes" Service's ClusterIP, with the token and CA the pod's container
// sees (read through /proc/PID/root of its process).
type podClient struct {
	n     *Node
	token string
	http  *http.Client
}

func newPodClient(t *testing.T, n *Node, containerPID int) *podClient {
	t.Helper()
	sa := filepath.Join("/proc", fmt.Sprint(containerPID), "root", "var/run/secrets/kubernetes.io/serviceaccount")
	token, err := os.ReadFile(filepath.Join(sa, "token"))
	if err != nil {
		t.Fatalf("read the pod's token: %v", err)
	}
	ca, err := os.ReadFile(filepath.Join(sa, "ca.crt"))
	if err != nil {
		t.Fatalf("read the pod's CA: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		t.Fatal("the pod's ca.crt holds no certificate")
	}
	client := httpIn(n.NetNS, &tls.Config{RootCAs: pool})
	t.Cleanup(client.CloseIdleConnections)
	return &podClient{n: n, token: strings.TrimSpace(string(token)), http: client}
}

// httpIn is an HTTP client whose every connection is made inside the network namespace at
// netns. The Transport dials on goroutines of its own, so the socket must be created in the
// dial function, on the thread InNetNS has moved: a client merely called from inside InNetNS
// would connect from the host's namespace.
func httpIn(netns string, tlsConfig *tls.Config) *http.Client {
	tr := &http.Transport{
		TLSClientConfig:   tlsConfig,
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var conn net.Conn
			err := testbed.InNetNS(netns, func() error {
				var err error
				conn, err = (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		},
	}
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// patch sends a merge patch to path of the apiserver at the Service's ClusterIP and returns the
// status code and body.
func (p *podClient) patch(t *testing.T, path, body string) (int, string) {
	t.Helper()
	url := fmt.Sprintf("https://%s:443%s", kubetest.ServiceIP, path)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPatch, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+p.token)
	req.Header.Set("Content-Type", "application/merge-patch+json")
	resp, err := p.http.Do(req)
	if err != nil {
		t.Fatalf("PATCH %s from node %s: %v", url, p.n.Name, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}

// configFiles reads every file under the node's firewalld and NetworkManager configuration:
// path relative to the node's root → mode and content. firewalld's backups are left out and
// returned apart: each time firewalld rewrites or removes a file in /etc/firewalld (over D-Bus,
// or for firewall-cmd) it keeps the former version as <file>.old, which it never reads back.
// calico-prep does not delete them, since it deletes no file it does not own.
func configFiles(t *testing.T, n *Node) (files map[string]string, backups []string) {
	t.Helper()
	out := map[string]string{}
	for _, root := range []string{n.FirewalldDir, filepath.Dir(n.NMConfDir)} {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			rel := strings.TrimPrefix(p, n.Dir)
			if root == n.FirewalldDir && !d.IsDir() && strings.HasSuffix(p, ".old") {
				backups = append(backups, rel)
				return nil
			}
			if d.IsDir() {
				out[rel] = fi.Mode().String()
				return nil
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out[rel] = fi.Mode().String() + "\n" + string(data)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out, backups
}

func diffFiles(before, after map[string]string) string {
	var keys []string
	for k := range before {
		keys = append(keys, k)
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		bv, bok := before[k]
		av, aok := after[k]
		switch {
		case !aok:
			fmt.Fprintf(&b, "removed %s\n", k)
		case !bok:
			fmt.Fprintf(&b, "added %s:\n%s\n", k, av)
		case bv != av:
			fmt.Fprintf(&b, "changed %s:\n--- before\n%s\n--- after\n%s\n", k, bv, av)
		}
	}
	return b.String()
}

// run runs a command and fails the test when it fails.
func run(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
