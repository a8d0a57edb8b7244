package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/calico-prep/calico-prep/test/testbed"
	"github.com/calico-prep/calico-prep/test/testkit"
)

// Node is one cluster node: a test-bed node with containerd, kubelet and kube-proxy.
type Node struct {
	*testbed.Node
	// CgroupRoot is the node's cgroup, the kubelet's cgroupRoot, e.g. /calico-prep-node-ab12cd.
	CgroupRoot string
	// ContainerdSocket is containerd's socket as the host reaches it (the node's /run is its
	// directory's run/).
	ContainerdSocket string

	c          *Cluster
	launcher   *nodeLauncher
	containerd *testkit.Proc
	kubelet    *testkit.Proc
	kubeProxy  *testkit.Proc
}

// Root is the node's own view of a path that it keeps private (see the package doc): where the
// host finds what the node wrote at path, e.g. Root("/var/lib/calico").
func (n *Node) Root(path string) string { return filepath.Join(n.Dir, path) }

// OverlayRoot is where the host finds a file the node wrote under one of the overlays (/etc,
// /var, /opt) outside its private paths, e.g. OverlayRoot("/var/run/nodeagent").
func (n *Node) OverlayRoot(path string) string {
	for _, o := range overlays {
		if rel, ok := strings.CutPrefix(path, o+"/"); ok {
			return filepath.Join(n.Dir, "overlay", o, "upper", rel)
		}
	}
	return ""
}

// LogPath is the log of one of the node's processes: holder, containerd, kubelet, kube-proxy, and
// the test bed's dbus, firewalld, NetworkManager.
func (n *Node) LogPath(name string) string { return filepath.Join(n.LogDir, name+".log") }

func (n *Node) up(ctx context.Context, c *Cluster, images []string) error {
	n.c = c
	id := filepath.Base(n.NetNS) // cpt-<name>-<id>
	n.CgroupRoot = "/calico-prep-" + strings.TrimPrefix(id, "cpt-")
	n.ContainerdSocket = filepath.Join(n.Dir, "run", "containerd", "containerd.sock")
	if len(n.ContainerdSocket) > 107 {
		return fmt.Errorf("containerd socket path %q is longer than 107 bytes: set TMPDIR to a shorter directory", n.ContainerdSocket)
	}
	for _, o := range overlays {
		if n.Dir == o || strings.HasPrefix(n.Dir, o+"/") {
			return fmt.Errorf("node directory %q is under %s, which the node overlays: set TMPDIR elsewhere", n.Dir, o)
		}
	}
	hierarchies, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	if err := n.writeFiles(c); err != nil {
		return err
	}
	if err := makeCgroupRoot(hierarchies, n.CgroupRoot); err != nil {
		return err
	}
	// A Kubernetes node forwards (kubeadm's preflight requires it); a fresh namespace does not.
	if err := testbed.InNetNS(n.NetNS, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
	}); err != nil {
		return fmt.Errorf("node %s: turn on forwarding: %w", n.Name, err)
	}
	n.launcher = &nodeLauncher{tb: n.Node, dir: n.Dir, cgroup: n.CgroupRoot, hierarchies: hierarchies, logDir: n.LogDir}
	if err := n.launcher.startRoot(nodeInit); err != nil {
		return err
	}
	if n.containerd, err = n.launcher.run("containerd", c.kubeDir,
		filepath.Join(c.kubeDir, "containerd"), "--config=/etc/containerd/config.toml", "--log-level=info"); err != nil {
		return err
	}
	if err := waitFor(ctx, n.containerd, n.LogPath("containerd"), "containerd's socket", func() bool {
		_, err := n.ctr(ctx, "version")
		return err == nil
	}); err != nil {
		return err
	}
	for _, img := range images {
		if out, err := n.ctr(ctx, "-n", "k8s.io", "images", "import", "--platform", "linux/amd64", img); err != nil {
			return fmt.Errorf("node %s: import %s: %w: %s", n.Name, filepath.Base(img), err, out)
		}
	}
	if n.kubelet, err = n.launcher.run("kubelet", "", filepath.Join(c.kubeDir, "kubelet"),
		"--config=/etc/kubernetes/kubelet.yaml", "--kubeconfig=/etc/kubernetes/kubelet.kubeconfig",
		"--hostname-override="+n.Name, "--node-ip="+n.UplinkAddr.Addr().String(), "--v=2"); err != nil {
		return err
	}
	if n.kubeProxy, err = n.launcher.run("kube-proxy", "", filepath.Join(c.kubeDir, "kube-proxy"),
		"--config=/etc/kubernetes/kube-proxy.yaml", "--v=2"); err != nil {
		return err
	}
	return nil
}

// ctr runs containerd's client against the node's containerd from the host: its socket is a
// file in the node's directory.
func (n *Node) ctr(ctx context.Context, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(n.c.kubeDir, "ctr"), append([]string{"--address", n.ContainerdSocket}, args...)...)
	// Standard output only: ctr warns on standard error that cgroup v1 is deprecated.
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		out = append(out, stderr.String()...)
	}
	return out, err
}

// Ctr runs ctr against the node's containerd and returns its output.
func (n *Node) Ctr(ctx context.Context, args ...string) (string, error) {
	out, err := n.ctr(ctx, args...)
	if err != nil {
		return string(out), fmt.Errorf("ctr %s on node %s: %w: %s", strings.Join(args, " "), n.Name, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// writeFiles lays out the node's own directories and configuration before its mount namespace
// is made.
func (n *Node) writeFiles(c *Cluster) error {
	for _, p := range privatePaths {
		if _, err := os.Stat(n.Root(p)); err == nil {
			continue
		}
		if err := os.MkdirAll(n.Root(p), 0o755); err != nil {
			return err
		}
	}
	for _, d := range []string{"tmp", "sysctl", "run"} {
		if err := os.MkdirAll(filepath.Join(n.Dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(n.Dir, "tmp"), 0o1777); err != nil {
		return err
	}
	for k, v := range kubeletSysctls {
		p := filepath.Join(n.Dir, "sysctl", k)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(v+"\n"), 0o444); err != nil {
			return err
		}
	}
	etc := n.Root("/etc/kubernetes")
	if err := os.WriteFile(filepath.Join(etc, "ca.crt"), c.Kube.CAPEM(), 0o644); err != nil {
		return err
	}
	if err := c.Kube.ClientKubeconfig(filepath.Join(etc, "kubelet.kubeconfig"), "system:node:"+n.Name,
		[]string{"system:nodes"}, c.APIServer); err != nil {
		return err
	}
	if err := c.Kube.ClientKubeconfig(filepath.Join(etc, "kube-proxy.kubeconfig"), "system:kube-proxy", nil, c.APIServer); err != nil {
		return err
	}
	files := map[string]string{
		n.Root("/etc/containerd/config.toml"): containerdConfig,
		filepath.Join(etc, "kubelet.yaml"):    fmt.Sprintf(kubeletConfig, n.CgroupRoot, n.UplinkAddr.Addr()),
		filepath.Join(etc, "kube-proxy.yaml"): fmt.Sprintf(kubeProxyConfig, n.Name),
	}
	for p, content := range files {
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return err
		}
	}
	// The node's init, in the upper layer of the node's /opt.
	init, err := os.ReadFile(c.nodeInit)
	if err != nil {
		return err
	}
	dst := filepath.Join(n.Dir, "overlay/opt/upper", strings.TrimPrefix(nodeInit, "/opt/"))
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, init, 0o755)
}

// nodeInit is where the node's init (the pause program, which reaps the orphans its PID
// namespace hands it) is in the node.
const nodeInit = "/opt/calico-prep-cluster/node-init"

// HostPID translates a PID of the node's PID namespace, as containerd reports it for a
// container's task, into the host's PID for it, for reading /proc/PID from the host.
func (n *Node) HostPID(nodePID int) (int, error) {
	initNS, err := nsPIDs(n.launcher.initPID)
	if err != nil {
		return 0, err
	}
	level := len(initNS) - 1 // the node's PID namespace among the host's process's NSpid entries
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ns, err := nsPIDs(pid)
		if err != nil || len(ns) <= level || ns[level] != nodePID {
			continue
		}
		// Every node has a PID nodePID: the process must be in this node's cgroup tree.
		cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		if err == nil && strings.Contains(string(cg), ":"+n.CgroupRoot+"/") {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("node %s: no process has PID %d in the node's PID namespace", n.Name, nodePID)
}

// nsPIDs is the NSpid line of /proc/PID/status: the process's PID in each PID namespace from
// the host's down to its own.
func nsPIDs(pid int) ([]int, error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	for _, l := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(l, "NSpid:"); ok {
			var out []int
			for _, f := range strings.Fields(rest) {
				v, err := strconv.Atoi(f)
				if err != nil {
					return nil, fmt.Errorf("parse NSpid of %d: %q", pid, l)
				}
				out = append(out, v)
			}
			return out, nil
		}
	}
	return nil, fmt.Errorf("no NSpid in /proc/%d/status", pid)
}

// containerdConfig: containerd's state in the node's /var/lib/containerd and /run/containerd,
// Debian's runc with the cgroupfs driver, the locally built pause image as the sandbox, no
// AppArmor profile ever loaded into the (machine-wide) kernel, and the CNI paths, which stay
// empty. restrict_oom_score_adj: this machine's processes lack CAP_SYS_RESOURCE, so none may
// lower an OOM score; runc would fail on the kubelet's -998 for sandboxes and -997 for critical
// pods, and containerd's option for such hosts keeps scores at or above its own (0).
const containerdConfig = `version = 3
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = [
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.blockfile",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "` + PauseImage + `"

[plugins.'io.containerd.cri.v1.runtime']
  enable_selinux = false
  disable_apparmor = true
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/opt/cni/bin"]
    conf_dir = "/etc/cni/net.d"
`

// kubeletConfig: cgroup v1 allowed (failCgroupV1), the node's own cgroup root, kernel defaults
// verified and never written (protectKernelDefaults; see the package doc), client certificates
// and webhook authorization as in a kubeadm cluster. Eviction thresholds are low because the
// machine's disk is shared with other work. Arguments: cgroup root, node address.
const kubeletConfig = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: %[1]s
kubeletCgroups: %[1]s/kubelet
cgroupsPerQOS: true
enforceNodeAllocatable: [pods]
protectKernelDefaults: true
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
address: %[2]s
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: /etc/kubernetes/ca.crt
authorization:
  mode: Webhook
resolvConf: /etc/resolv.conf
failSwapOn: false
evictionHard:
  memory.available: 100Mi
  nodefs.available: 2%%
  imagefs.available: 2%%
  nodefs.inodesFree: 2%%
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
serializeImagePulls: false
nodeStatusUpdateFrequency: 10s
`

// kubeProxyConfig: nftables mode in the node's namespace; conntrack sysctls left as they are
// (0 means "do not set"), since not all of them are per namespace. Argument: node name.
const kubeProxyConfig = `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
hostnameOverride: %s
clientConnection:
  kubeconfig: /etc/kubernetes/kube-proxy.kubeconfig
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`

// down stops the node's processes (kubelet first, then every container, containerd, kube-proxy),
// kills whatever is left in the node's cgroup tree and removes it. The test bed's Down follows.
func (n *Node) down(ctx context.Context) error {
	var errs []error
	if n.kubelet != nil {
		errs = append(errs, stop(n.kubelet))
	}
	if n.containerd != nil && !n.containerd.Exited() {
		// Containers first, so that their shims exit with them.
		if out, err := n.ctr(ctx, "-n", "k8s.io", "tasks", "ls", "-q"); err == nil {
			for _, id := range strings.Fields(string(out)) {
				_, _ = n.ctr(ctx, "-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", "-a", id)
			}
			for _, id := range strings.Fields(string(out)) {
				_, _ = n.ctr(ctx, "-n", "k8s.io", "tasks", "delete", "-f", id)
			}
		}
		errs = append(errs, stop(n.containerd))
	}
	if n.kubeProxy != nil {
		errs = append(errs, stop(n.kubeProxy))
	}
	if n.launcher != nil && n.launcher.holder != nil {
		errs = append(errs, stop(n.launcher.holder))
	}
	if n.CgroupRoot != "" {
		errs = append(errs, removeCgroupRoot(ctx, n.CgroupRoot))
	}
	return errors.Join(errs...)
}

func stop(p *testkit.Proc) error {
	if p.Exited() {
		return nil
	}
	err := p.Stop(20 * time.Second)
	if err != nil && strings.Contains(err.Error(), "killed") {
		return nil // the test is over; a slow stop is not its failure
	}
	return err
}

// cgroupHierarchies are the mount points of the host's cgroup hierarchies (v1 and v2).
func cgroupHierarchies() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		i := slices.Index(fields, "-")
		if i < 0 || i+1 >= len(fields) || len(fields) < 5 {
			continue
		}
		if fs := fields[i+1]; (fs == "cgroup" || fs == "cgroup2") && strings.HasPrefix(fields[4], "/sys/fs/cgroup") {
			out = append(out, fields[4])
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no cgroup hierarchy mounted under /sys/fs/cgroup")
	}
	return out, s.Err()
}

// makeCgroupRoot creates root in every hierarchy. In cpuset's, children copy the parent's CPUs
// and memory nodes (clone_children), or no process could join them.
func makeCgroupRoot(hierarchies []string, root string) error {
	for _, h := range hierarchies {
		dir := filepath.Join(h, root)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return fmt.Errorf("create cgroup %q: %w", dir, err)
		}
		if _, err := os.Stat(filepath.Join(h, "cpuset.cpus")); err != nil {
			continue
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			v, err := os.ReadFile(filepath.Join(h, f))
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil {
				return fmt.Errorf("set %s of %q: %w", f, dir, err)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup.clone_children"), []byte("1"), 0o644); err != nil {
			return fmt.Errorf("set clone_children of %q: %w", dir, err)
		}
	}
	return nil
}

// removeCgroupRoot kills every process left under root (only the node's processes and
// containers are ever there), then removes the tree, deepest first, in every hierarchy.
func removeCgroupRoot(ctx context.Context, root string) error {
	hierarchies, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	for {
		var pids []int
		for _, h := range hierarchies {
			_ = filepath.WalkDir(filepath.Join(h, root), func(p string, d os.DirEntry, err error) error {
				if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
					return nil
				}
				data, _ := os.ReadFile(p)
				for _, f := range strings.Fields(string(data)) {
					if pid, err := strconv.Atoi(f); err == nil && !slices.Contains(pids, pid) {
						pids = append(pids, pid)
					}
				}
				return nil
			})
		}
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("processes %v outlive SIGKILL in cgroup %s: %w", pids, root, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	var errs []error
	for _, h := range hierarchies {
		var dirs []string
		_ = filepath.WalkDir(filepath.Join(h, root), func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := os.Remove(dirs[i]); err != nil && !os.IsNotExist(err) {
				errs = append(errs, fmt.Errorf("remove cgroup %q: %w", dirs[i], err))
			}
		}
	}
	return errors.Join(errs...)
}

// waitFor polls cond until it holds, the process ends or ctx is done.
func waitFor(ctx context.Context, p *testkit.Proc, log, what string, cond func() bool) error {
	for !cond() {
		if p.Exited() {
			return fmt.Errorf("wait for %s: %s; tail of %s:\n%s", what, p.State(), log, testkit.Tail(log, 30))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w; tail of %s:\n%s", what, ctx.Err(), log, testkit.Tail(log, 30))
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}
