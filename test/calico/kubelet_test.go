//go:build calico

package calico

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/calico-prep/calico-prep/test/testbed"
	"github.com/calico-prep/calico-prep/test/testkit"
)

// launchScript runs as sh -c inside the node's network namespace and fresh mount, PID, UTS and
// IPC namespaces. Arguments: the node's netns inode, the host's netns and mount namespace inodes
// (space-separated), the node name, the root directory, the image's rootfs ("" to use the root
// directory itself: a process of the node, not of a container), the container's state
// directory, the pivotroot helper, then the bind mounts as "source|target|ro-or-rw" words up to
// "--" (a source "root:P" is P inside the new root), then argv. It refuses to mount anything
// outside a private mount namespace in the node's network namespace, and ends by making the
// root directory the namespace's root (pivotroot) and executing argv there.
const launchScript = `set -eu
want=$1 hostnet=$2 hostmnt=$3 node=$4 root=$5 lower=$6 state=$7 pivotroot=$8
shift 8
refuse() {
	echo "calico-launch: refusing: $1" >&2
	exit 97
}
check() {
	net=$(readlink /proc/self/ns/net)
	mnt=$(readlink /proc/self/ns/mnt)
	for i in $hostmnt; do
		[ "$mnt" != "mnt:[$i]" ] || refuse "it would share the host mount namespace $mnt"
	done
	for i in $hostnet; do
		[ "$net" != "net:[$i]" ] || refuse "it would run in the host network namespace $net"
	done
	[ "$net" = "net:[$want]" ] || refuse "it would run in network namespace $net, not the node's net:[$want]"
}
check
hostname "$node"
if [ -n "$lower" ]; then
	mkdir -p "$state/upper" "$state/work" "$root"
	mount -t overlay overlay -o "lowerdir=$lower,upperdir=$state/upper,workdir=$state/work" "$root"
fi
mount --bind "$root" "$root"
mkdir -p "$root/proc" "$root/sys" "$root/dev"
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount -t bpf bpffs "$root/sys/fs/bpf"
mount --rbind /dev "$root/dev"
while [ "$1" != "--" ]; do
	src=${1%%|*} rest=${1#*|}
	case $src in root:*) src=$root${src#root:} ;; esac
	dst=$root${rest%|*} mode=${rest##*|}
	shift
	if [ -d "$src" ]; then
		mkdir -p "$dst"
	else
		mkdir -p "$(dirname "$dst")"
		[ -e "$dst" ] || touch "$dst"
	fi
	mount --bind "$src" "$dst"
	[ "$mode" = rw ] || mount -o remount,bind,ro "$dst"
done
shift
check
exec "$pivotroot" "$root" "$@"
`

// bind is one bind mount into a container: Source on the host side, Target inside the root.
type bind struct {
	source, target string
	readOnly       bool
}

// containerSpec is a container resolved the way the kubelet resolves it.
type containerSpec struct {
	name   string
	image  image
	argv   []string
	env    []string
	mounts []bind
}

// calicoNode is one test-bed node that runs Calico's pod.
type calicoNode struct {
	t     *testing.T
	node  *testbed.Node
	name  string
	admin kubernetes.Interface
	// apiHost and apiPort reach the apiserver from inside the node (a relay on its loopback).
	apiHost, apiPort string
	// probes are the running containers' exec probes.
	probes []probe
}

// podEnv resolves a container's env as the kubelet does for a pod on this node: the image's
// env, the service env for the apiserver, envFrom, then env.
func (c *calicoNode) podEnv(ctx context.Context, ns string, ctr corev1.Container, img image) []string {
	t := c.t
	t.Helper()
	env := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := env[k]; !ok {
			order = append(order, k)
		}
		env[k] = v
	}
	for _, kv := range img.config.Env {
		k, v, _ := strings.Cut(kv, "=")
		set(k, v)
	}
	set("KUBERNETES_SERVICE_HOST", c.apiHost)
	set("KUBERNETES_SERVICE_PORT", c.apiPort)
	set("HOSTNAME", c.name)
	for _, from := range ctr.EnvFrom {
		if from.ConfigMapRef == nil {
			t.Fatalf("container %s: envFrom other than a ConfigMap: %+v", ctr.Name, from)
		}
		cm, err := c.admin.CoreV1().ConfigMaps(ns).Get(ctx, from.ConfigMapRef.Name, metav1.GetOptions{})
		if err != nil {
			if from.ConfigMapRef.Optional != nil && *from.ConfigMapRef.Optional {
				continue
			}
			t.Fatalf("container %s: envFrom ConfigMap %q: %v", ctr.Name, from.ConfigMapRef.Name, err)
		}
		for k, v := range cm.Data {
			set(from.Prefix+k, v)
		}
	}
	for _, e := range ctr.Env {
		switch {
		case e.ValueFrom == nil:
			set(e.Name, e.Value)
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			cm, err := c.admin.CoreV1().ConfigMaps(ns).Get(ctx, ref.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatalf("container %s: env %s from ConfigMap %q: %v", ctr.Name, e.Name, ref.Name, err)
			}
			v, ok := cm.Data[ref.Key]
			if !ok {
				t.Fatalf("container %s: env %s: ConfigMap %q has no key %q", ctr.Name, e.Name, ref.Name, ref.Key)
			}
			set(e.Name, v)
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName":
			set(e.Name, c.name)
		default:
			t.Fatalf("container %s: env %s: unsupported valueFrom %+v", ctr.Name, e.Name, e.ValueFrom)
		}
	}
	out := make([]string, 0, len(order))
	for _, k := range order {
		out = append(out, k+"="+env[k])
	}
	return out
}

// resolve turns one container of the pod into what the launcher runs: the image's root
// filesystem, its command, its env and its volumes.
func (c *calicoNode) resolve(ctx context.Context, pod *corev1.PodSpec, ns string, ctr corev1.Container, saDir string) containerSpec {
	t := c.t
	t.Helper()
	img, ok := build.images[ctr.Image]
	if !ok {
		t.Fatalf("container %s: image %q was not built (built: %v)", ctr.Name, ctr.Image, imageNames())
	}
	argv := img.config.Entrypoint
	if len(ctr.Command) > 0 {
		argv = ctr.Command
	}
	args := img.config.Cmd
	if len(ctr.Command) > 0 || len(ctr.Args) > 0 {
		args = ctr.Args
	}
	spec := containerSpec{
		name:  ctr.Name,
		image: img,
		argv:  append(slices.Clone(argv), args...),
		env:   c.podEnv(ctx, ns, ctr, img),
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	for _, m := range ctr.VolumeMounts {
		v, ok := volumes[m.Name]
		if !ok || v.HostPath == nil {
			t.Fatalf("container %s: volume %q is not a hostPath volume", ctr.Name, m.Name)
		}
		if src, ok := c.hostPath(v.HostPath); ok {
			spec.mounts = append(spec.mounts, bind{source: src, target: m.MountPath, readOnly: m.ReadOnly})
			continue
		}
		if v.HostPath.Path == "/proc" {
			// The node's /proc would be this machine's: PID 1 is the host's init, and mountns
			// enters its mount namespace through /nodeproc/1/ns/mnt. The container's own /proc
			// keeps it inside the container.
			spec.mounts = append(spec.mounts, bind{source: "root:/proc", target: m.MountPath, readOnly: m.ReadOnly})
		}
		// /sys/fs and /sys/fs/bpf: the container's own sysfs and bpffs are mounted there.
	}
	// What the kubelet gives every container: the ServiceAccount token and, for a hostNetwork
	// pod, the node's hosts, resolv.conf and hostname.
	spec.mounts = append(spec.mounts, bind{source: saDir, target: "/var/run/secrets/kubernetes.io/serviceaccount", readOnly: true})
	for _, f := range []string{"/etc/hosts", "/etc/resolv.conf", "/etc/hostname"} {
		spec.mounts = append(spec.mounts, bind{source: filepath.Join(c.node.Dir, f), target: f, readOnly: true})
	}
	return spec
}

// hostPath maps a hostPath volume to the node's own copy under its Dir, creating it as the
// volume's type asks. It reports false for the paths the launcher gives every container itself.
func (c *calicoNode) hostPath(hp *corev1.HostPathVolumeSource) (string, bool) {
	t := c.t
	t.Helper()
	p := filepath.Clean(hp.Path)
	if p == "/proc" || p == "/sys/fs" || strings.HasPrefix(p, "/sys/") {
		return "", false
	}
	src := filepath.Join(c.node.Dir, p)
	typ := corev1.HostPathUnset
	if hp.Type != nil {
		typ = *hp.Type
	}
	switch typ {
	case corev1.HostPathFileOrCreate:
		if err := os.MkdirAll(filepath.Dir(src), 0o755); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(src, os.O_CREATE|os.O_RDONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	default:
		// DirectoryOrCreate, and unset types: on a real node these exist (or the runtime makes
		// them); here the node's directory starts empty.
		if err := os.MkdirAll(src, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return src, true
}

func imageNames() []string {
	var names []string
	for n := range build.images {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// nodeRoot prepares the node's Dir as the root its own processes see: /var/run is /run.
func (c *calicoNode) nodeRoot() {
	c.t.Helper()
	for _, d := range []string{"run", "var", "tmp"} {
		if err := os.MkdirAll(filepath.Join(c.node.Dir, d), 0o755); err != nil {
			c.t.Fatal(err)
		}
	}
	if err := os.Symlink("../run", filepath.Join(c.node.Dir, "var", "run")); err != nil && !os.IsExist(err) {
		c.t.Fatal(err)
	}
	// Names resolve from files only: the node has no name server (test bed's resolv.conf).
	hosts := "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n"
	if err := os.WriteFile(filepath.Join(c.node.Dir, "etc", "hosts"), []byte(hosts), 0o644); err != nil {
		c.t.Fatal(err)
	}
}

// command is the launcher's command line for spec: in the node's network namespace, fresh
// mount, PID, UTS and IPC namespaces, chrooted into the image (or, with no image, the node's Dir).
func (c *calicoNode) command(ctx context.Context, spec containerSpec, state string) (*exec.Cmd, error) {
	hostNet, err := testbed.HostNamespaces("net")
	if err != nil {
		return nil, err
	}
	hostMnt, err := testbed.HostNamespaces("mnt")
	if err != nil {
		return nil, err
	}
	want := c.node.NetNSInode()
	if want == 0 || hostNet[want] {
		return nil, fmt.Errorf("container %s: %w", spec.name, testbed.ErrHostNetNS)
	}
	root, lower := c.node.Dir, ""
	if spec.image.rootfs != "" {
		root, lower = filepath.Join(state, "root"), spec.image.rootfs
	}
	args := []string{"--net=" + c.node.NetNS, "--", "unshare", "--mount", "--propagation", "private",
		"--uts", "--ipc", "--pid", "--fork", "--kill-child", "--",
		"/bin/sh", "-c", launchScript, "calico-launch",
		strconv.FormatUint(want, 10), joinInodes(hostNet), joinInodes(hostMnt), c.name, root, lower, state, pivotRoot}
	for _, m := range spec.mounts {
		mode := "rw"
		if m.readOnly {
			mode = "ro"
		}
		args = append(args, m.source+"|"+m.target+"|"+mode)
	}
	args = append(args, "--")
	args = append(args, spec.argv...)
	cmd := exec.CommandContext(ctx, "nsenter", args...)
	cmd.Env = spec.env
	cmd.Dir = "/"
	return cmd, nil
}

func joinInodes(set map[uint64]bool) string {
	var s []string
	for ino := range set {
		s = append(s, strconv.FormatUint(ino, 10))
	}
	slices.Sort(s)
	return strings.Join(s, " ")
}

// stateDir is where a container's writable layer and log live.
func (c *calicoNode) stateDir(name string) string {
	dir := filepath.Join(c.node.Dir, "containers", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		c.t.Fatal(err)
	}
	return dir
}

// runToCompletion runs an init container (or a node process) and fails the test unless it
// exits 0 within the timeout. It returns its standard output and standard error.
func (c *calicoNode) runToCompletion(spec containerSpec, stdin string, timeout time.Duration) (string, string) {
	t := c.t
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	cmd, err := c.command(ctx, spec, c.stateDir(spec.name))
	if err != nil {
		t.Fatal(err)
	}
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node %s: %s (%s) failed: %v\n%s\n%s", c.name, spec.name, strings.Join(spec.argv, " "), err,
			testkit.LastLines(stdout.String(), 20), testkit.LastLines(stderr.String(), 40))
	}
	return stdout.String(), stderr.String()
}

// start starts a long-running container; it is killed at cleanup (with its PID namespace).
func (c *calicoNode) start(spec containerSpec) (*testkit.Proc, string) {
	t := c.t
	t.Helper()
	state := c.stateDir(spec.name)
	logPath := filepath.Join(state, "log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd, err := c.command(context.Background(), spec, state)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	p, err := testkit.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("node %s: tail of %s's log:\n%s", c.name, spec.name, testkit.Tail(logPath, 60))
			if dir := os.Getenv("CALICO_E2E_LOGS"); dir != "" {
				if b, err := os.ReadFile(logPath); err == nil {
					_ = os.WriteFile(filepath.Join(dir, c.name+"-"+spec.name+".log"), b, 0o644)
				}
			}
		}
		if err := p.Kill(); err != nil {
			t.Errorf("node %s: kill %s: %v", c.name, spec.name, err)
		}
	})
	return p, logPath
}

// execIn runs argv in a running container's namespaces and root, as the kubelet runs an exec
// probe, and returns its exit code and output.
func (c *calicoNode) execIn(p *testkit.Proc, spec containerSpec, argv ...string) (int, string) {
	t := c.t
	t.Helper()
	// The launcher is nsenter turned unshare; the container's PID 1 is its only child.
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", p.Pid, p.Pid))
	if err != nil || len(strings.Fields(string(raw))) != 1 {
		t.Fatalf("node %s: find the PID 1 of container %s: %q %v", c.name, spec.name, raw, err)
	}
	pid := strings.Fields(string(raw))[0]
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--target=" + pid, "--mount", "--pid", "--net", "--uts", "--ipc", "--"}, argv...)...)
	cmd.Env = spec.env
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() >= 0 {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatalf("node %s: exec %v in %s: %v", c.name, argv, spec.name, err)
	}
	return 0, string(out)
}
