package deploy

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"

	"github.com/calico-prep/calico-prep/test/testbed"
	"github.com/calico-prep/calico-prep/test/testkit"
)

// This file runs a container of a DaemonSet's pod the way kubelet and a container runtime would,
// without a container engine: a root filesystem holding only the image's /agent, the pod's
// volumes bind-mounted at their mount paths (read-only where the manifest says so), the
// ServiceAccount token where in-cluster clients look for it, the root filesystem read-only,
// every capability gone and no privilege escalation, in the node's network namespace (host
// network). The test binary itself sets the mounts up and execs the container's command: it is
// started as `nsenter --net=NODE -- unshare --mount --propagation private -- TESTBINARY` with
// containerSpecEnv holding the spec, and TestMain hands over to containerInit.

// containerSpecEnv carries the container spec to the re-executed test binary.
const containerSpecEnv = "CALICO_PREP_TEST_CONTAINER"

// containerSpec is what containerInit needs; all paths are absolute host paths except Target.
type containerSpec struct {
	Root   string       // the root filesystem, a test directory
	Mounts []mountSpec  // in order
	Argv   []string     // the container's command, inside Root
	Caps   []string     // capabilities the container keeps (securityContext.capabilities.add)
	Env    []string     // its environment
	NetNS  uint64       // the inode of the node's network namespace the container must be in
	Host   hostNSInodes // namespaces the container must not share
}

type mountSpec struct {
	Source   string // a host path; empty for a tmpfs
	Target   string // inside Root
	ReadOnly bool
}

type hostNSInodes struct{ Net, Mnt []uint64 }

// containerInit is the re-executed test binary: it checks that it runs in the node's network
// namespace and a private mount namespace, builds the container's mounts under Root, makes the
// root read-only, enters it, drops every capability from the bounding, inheritable and ambient
// sets, forbids privilege escalation and execs the command. It never returns.
func containerInit(specJSON string) {
	fail := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "container init: "+format+"\n", args...)
		os.Exit(97)
	}
	// Capability sets and no_new_privs belong to a thread, and exec keeps the calling thread's.
	runtime.LockOSThread()
	var spec containerSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		fail("decode spec: %v", err)
	}
	net, err := nsInode("/proc/thread-self/ns/net")
	if err != nil || net != spec.NetNS {
		fail("in network namespace %d (%v), want the node's %d", net, err, spec.NetNS)
	}
	mnt, err := nsInode("/proc/thread-self/ns/mnt")
	if err != nil {
		fail("own mount namespace: %v", err)
	}
	for _, h := range spec.Host.Mnt {
		if mnt == h {
			fail("refusing to mount: this is the host's mount namespace %d", mnt)
		}
	}
	for _, h := range spec.Host.Net {
		if net == h {
			fail("refusing to run: this is the host's network namespace %d", net)
		}
	}
	if err := unix.Mount(spec.Root, spec.Root, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		fail("bind root: %v", err)
	}
	for _, m := range spec.Mounts {
		target := filepath.Join(spec.Root, m.Target)
		if err := mountOne(m, target); err != nil {
			fail("mount %s at %s: %v", m.Source, m.Target, err)
		}
	}
	if err := unix.Mount("", spec.Root, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		fail("make root read-only: %v", err)
	}
	if err := unix.Chroot(spec.Root); err != nil {
		fail("chroot: %v", err)
	}
	if err := os.Chdir("/"); err != nil {
		fail("chdir: %v", err)
	}
	keep := map[uintptr]bool{}
	for _, name := range spec.Caps {
		c, ok := capabilities[name]
		if !ok {
			fail("unknown capability %q", name)
		}
		keep[c] = true
	}
	for c := uintptr(0); c < 64; c++ {
		if keep[c] {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, c, 0, 0, 0); errors.Is(err, unix.EINVAL) {
			break // past the kernel's last capability
		} else if err != nil {
			fail("drop capability %d from the bounding set: %v", c, err)
		}
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		fail("clear ambient capabilities: %v", err)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		fail("capget: %v", err)
	}
	data[0].Inheritable, data[1].Inheritable = 0, 0
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		fail("clear inheritable capabilities: %v", err)
	}
	// allowPrivilegeEscalation: false.
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		fail("set no_new_privs: %v", err)
	}
	// Without inheritable or ambient capabilities, root's exec leaves it exactly its bounding
	// set: the capabilities the container adds, and no others.
	err = syscall.Exec(spec.Argv[0], spec.Argv, spec.Env)
	fail("exec %q: %v", spec.Argv, err)
}

// capabilities are the capabilities a container may add, by their Kubernetes names.
var capabilities = map[string]uintptr{
	"NET_ADMIN": unix.CAP_NET_ADMIN, "NET_RAW": unix.CAP_NET_RAW, "SYS_ADMIN": unix.CAP_SYS_ADMIN,
	"DAC_OVERRIDE": unix.CAP_DAC_OVERRIDE, "SYS_MODULE": unix.CAP_SYS_MODULE, "SYS_PTRACE": unix.CAP_SYS_PTRACE,
}

// capMask is the /proc/PID/status form of a capability set.
func capMask(names []string) string {
	var m uint64
	for _, n := range names {
		m |= 1 << capabilities[n]
	}
	return fmt.Sprintf("%016x", m)
}

func mountOne(m mountSpec, target string) error {
	if m.Source == "" {
		if err := os.MkdirAll(target, 0o755); err != nil {
			return err
		}
		return unix.Mount("tmpfs", target, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=755")
	}
	st, err := os.Stat(m.Source)
	if err != nil {
		return err
	}
	if st.IsDir() {
		err = os.MkdirAll(target, 0o755)
	} else {
		if err = os.MkdirAll(filepath.Dir(target), 0o755); err == nil {
			var f *os.File
			if f, err = os.OpenFile(target, os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
				err = f.Close()
			}
		}
	}
	if err != nil {
		return err
	}
	if err := unix.Mount(m.Source, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return err
	}
	if !m.ReadOnly {
		return nil
	}
	// A read-only bind keeps the flags of the mount it copies (nosuid, nodev, noexec of /proc).
	var sfs unix.Statfs_t
	if err := unix.Statfs(target, &sfs); err != nil {
		return err
	}
	flags := uintptr(unix.MS_BIND | unix.MS_REMOUNT | unix.MS_RDONLY)
	for _, f := range []struct{ st, ms uintptr }{
		{unix.ST_NOSUID, unix.MS_NOSUID}, {unix.ST_NODEV, unix.MS_NODEV}, {unix.ST_NOEXEC, unix.MS_NOEXEC},
		{unix.ST_NOATIME, unix.MS_NOATIME}, {unix.ST_NODIRATIME, unix.MS_NODIRATIME}, {unix.ST_RELATIME, unix.MS_RELATIME},
	} {
		if uintptr(sfs.Flags)&f.st != 0 {
			flags |= f.ms
		}
	}
	return unix.Mount("", target, "", flags, "")
}

func nsInode(path string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// hostNamespaces are the inodes of the namespaces of PID 1, this process and its parent: a
// container must share none of them.
func hostNamespaces(kind string) []uint64 {
	var out []uint64
	for _, p := range []string{"/proc/1/ns/", "/proc/self/ns/", fmt.Sprintf("/proc/%d/ns/", os.Getppid())} {
		if ino, err := nsInode(p + kind); err == nil {
			out = append(out, ino)
		}
	}
	return out
}

// pod is what a container of a DaemonSet's pod needs from the test: where each hostPath
// volume's path is on the test bed, and the token kubelet would project.
type pod struct {
	node     *testbed.Node
	hostPath map[string]string // DaemonSet hostPath → test bed path
	volumes  []corev1.Volume
	token    string // ServiceAccount token; empty when the pod mounts none
	caFile   string
	apiHost  string // KUBERNETES_SERVICE_HOST and _PORT, as kubelet sets them
	apiPort  string
}

// container is one running container.
type container struct {
	*testkit.Proc
	t       testing.TB
	logPath string
}

// start runs ctr with image entrypoint entry (empty when ctr has a command) from binary image
// (the file the image puts at /agent) with the pod's volumes, and stops it at cleanup.
func (p *pod) start(t testing.TB, ctr corev1.Container, entry []string, image string, env map[string]string) *container {
	t.Helper()
	root := t.TempDir()
	if err := copyFile(image, filepath.Join(root, "agent"), 0o755); err != nil {
		t.Fatal(err)
	}
	// What every container has: its own /proc and /sys (here the host's, as for a host-network,
	// host-PID-less pod they show the same kernel), /dev with the usual devices.
	mounts := []mountSpec{
		{Source: "/proc", Target: "/proc"},
		{Source: "/sys", Target: "/sys", ReadOnly: true},
		{Target: "/dev"},
	}
	for _, d := range []string{"null", "zero", "random", "urandom"} {
		mounts = append(mounts, mountSpec{Source: "/dev/" + d, Target: "/dev/" + d})
	}
	vols := map[string]corev1.Volume{}
	for _, v := range p.volumes {
		vols[v.Name] = v
	}
	for _, vm := range ctr.VolumeMounts {
		v, ok := vols[vm.Name]
		if !ok || v.HostPath == nil {
			t.Fatalf("volume %q: the test maps only hostPath volumes", vm.Name)
		}
		src, ok := p.hostPath[v.HostPath.Path]
		if !ok {
			t.Fatalf("hostPath %s has no place on the test bed: map it", v.HostPath.Path)
		}
		mounts = append(mounts, mountSpec{Source: src, Target: vm.MountPath, ReadOnly: vm.ReadOnly})
	}
	if p.token != "" {
		sa := t.TempDir()
		for name, data := range map[string]string{"token": p.token, "ca.crt": readAbs(t, p.caFile), "namespace": agentNamespace} {
			if err := os.WriteFile(filepath.Join(sa, name), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		mounts = append(mounts, mountSpec{Source: sa, Target: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true})
	}

	argv := append(slices.Clone(entry), ctr.Args...)
	if len(ctr.Command) > 0 {
		argv = append(slices.Clone(ctr.Command), ctr.Args...)
	}
	envList := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOSTNAME=" + p.node.Name}
	if p.token != "" {
		envList = append(envList, "KUBERNETES_SERVICE_HOST="+p.apiHost, "KUBERNETES_SERVICE_PORT="+p.apiPort)
	}
	for k, v := range env {
		envList = append(envList, k+"="+v)
	}
	netIno, err := nsInode(p.node.NetNS)
	if err != nil {
		t.Fatal(err)
	}
	var caps []string
	sc := ctr.SecurityContext
	if sc == nil || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Fatalf("container %s keeps the runtime's default capabilities: the test emulates only drop: [ALL]", ctr.Name)
	}
	for _, c := range sc.Capabilities.Add {
		caps = append(caps, string(c))
	}
	spec, err := json.Marshal(containerSpec{Root: root, Mounts: mounts, Argv: argv, Caps: caps, Env: envList, NetNS: netIno,
		Host: hostNSInodes{Net: hostNamespaces("net"), Mnt: hostNamespaces("mnt")}})
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	logf, err := os.CreateTemp(t.TempDir(), ctr.Name+"-*.log")
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command("nsenter", "--net="+p.node.NetNS, "--", "unshare", "--mount", "--propagation", "private", "--", self)
	cmd.Env = []string{containerSpecEnv + "=" + string(spec)}
	cmd.Stdout, cmd.Stderr = logf, logf
	c := &container{t: t, logPath: logf.Name()}
	if c.Proc, err = testkit.Start(cmd); err != nil {
		t.Fatalf("start container %s: %v", ctr.Name, err)
	}
	t.Cleanup(func() {
		if err := c.Stop(10 * time.Second); err != nil {
			t.Errorf("stop container %s: %v", ctr.Name, err)
		}
		if t.Failed() {
			t.Logf("container %s log:\n%s", ctr.Name, c.logTail(60))
		}
	})
	return c
}

func (c *container) log() string {
	data, _ := os.ReadFile(c.logPath)
	return string(data)
}

func (c *container) logTail(n int) string { return testkit.LastLines(c.log(), n) }

// status returns the fields of /proc/PID/status, e.g. CapEff and NoNewPrivs.
func (c *container) status() (map[string]string, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", c.Pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		out[k] = strings.TrimSpace(v)
	}
	return out, sc.Err()
}

// rootMountOptions returns the mount options of the container's / as it sees it.
func (c *container) rootMountOptions() (string, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", c.Pid))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 5 && f[4] == "/" {
			return f[5], nil
		}
	}
	return "", errors.New("no / in mountinfo")
}

func copyFile(src, dst string, mode os.FileMode) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, data, mode)
}

func readAbs(t testing.TB, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
