package netnstest

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// threadsOutside fails unless every thread of the process is in the namespace with inode want.
func threadsOutside(t *testing.T, want uint64) {
	t.Helper()
	tasks, err := filepath.Glob("/proc/self/task/*/ns/net")
	if err != nil || len(tasks) == 0 {
		t.Fatalf("list threads: %v", err)
	}
	for _, task := range tasks {
		if got := inode(t, task); got != want {
			t.Errorf("thread %s is in network namespace %d, want %d", task, got, want)
		}
	}
}

func TestNewAndDoLeaveCallerInPlace(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig := inode(t, "/proc/thread-self/ns/net")

	n := New(t)
	if got := inode(t, "/proc/thread-self/ns/net"); got != orig {
		t.Fatalf("New moved the calling thread to namespace %d", got)
	}
	nsIno := inode(t, n.Path)
	if nsIno == orig {
		t.Fatalf("%s is the caller's own namespace", n.Path)
	}

	var inside uint64
	if err := n.Do(func() error {
		fi, err := os.Stat("/proc/thread-self/ns/net")
		if err != nil {
			return err
		}
		inside = fi.Sys().(*syscall.Stat_t).Ino
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if inside != nsIno {
		t.Fatalf("Do ran fn in namespace %d, want %d", inside, nsIno)
	}
	wantErr := errors.New("from fn")
	if err := n.Do(func() error { return wantErr }); !errors.Is(err, wantErr) {
		t.Fatalf("Do returned %v, want fn's error", err)
	}
	if got := inode(t, "/proc/thread-self/ns/net"); got != orig {
		t.Fatalf("Do moved the calling thread to namespace %d", got)
	}
	threadsOutside(t, orig)

	lo := n.Link(t, "lo")
	if lo.Attrs().Flags&1 == 0 {
		t.Fatalf("lo is down in %s", n.Name)
	}
}

func TestIPNetnsExecSeesIt(t *testing.T) {
	n := New(t)
	n.AddBridge(t, "br-test")
	out, err := exec.Command("ip", "netns", "exec", n.Name, "ip", "-o", "link", "show", "br-test").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns exec %s: %v: %s", n.Name, err, out)
	}
	if !strings.Contains(string(out), "br-test") {
		t.Fatalf("ip netns exec %s did not see br-test: %s", n.Name, out)
	}
}

func TestCleanupDestroysNamespace(t *testing.T) {
	a := New(t)
	var inner *NS
	t.Run("inner", func(t *testing.T) {
		b := New(t)
		inner = b
		b.AddVethTo(t, "inner0", a, "outer0")
		b.AddTun(t, "tun0")
	})
	// inner stays reachable so that a leaked socket is not closed by its finalizer.
	defer runtime.KeepAlive(inner)
	if _, err := os.Stat(inner.Path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s still exists after cleanup: %v", inner.Path, err)
	}
	// The kernel deletes a veth pair when either end's namespace is destroyed, and it only
	// destroys it once no handle, socket or mount holds it: outer0 vanishing proves cleanup
	// released everything. Destruction runs asynchronously in the kernel, hence the wait.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := a.Handle.LinkByName("outer0")
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("outer0 still in %s after the inner namespace was deleted (err %v)", a.Name, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestBuilders(t *testing.T) {
	a, b := New(t), New(t)
	a.AddVeth(t, "va", "vb")
	a.AddVethTo(t, "x0", b, "x1")
	a.AddBridge(t, "br0")
	a.AddVXLAN(t, "vx0", 4096, 4789, "va")
	a.AddTun(t, "tunl0")
	a.SetMTU(t, "va", 1400)
	a.SetDown(t, "br0")
	a.AddAddr(t, "va", "192.168.79.128/24")
	a.AddAddr(t, "va", "fd00::5/64")
	a.AddRoute(t, "default", "va", "192.168.79.1")
	a.AddBlackhole(t, "10.244.0.0/26")

	tests := []struct {
		ns       *NS
		name     string
		wantType string
		wantUp   bool
	}{
		{a, "va", "veth", true},
		{a, "vb", "veth", true},
		{a, "x0", "veth", true},
		{b, "x1", "veth", true},
		{a, "br0", "bridge", false},
		{a, "vx0", "vxlan", true},
		{a, "tunl0", "tuntap", true},
	}
	for _, tt := range tests {
		l := tt.ns.Link(t, tt.name)
		if l.Type() != tt.wantType || (l.Attrs().Flags&1 != 0) != tt.wantUp {
			t.Errorf("%s in %s: type %s up %v, want %s up %v", tt.name, tt.ns.Name, l.Type(), l.Attrs().Flags&1 != 0, tt.wantType, tt.wantUp)
		}
	}
	if mtu := a.Link(t, "va").Attrs().MTU; mtu != 1400 {
		t.Errorf("va MTU %d, want 1400", mtu)
	}
	vx := a.Link(t, "vx0").(*netlink.Vxlan)
	if vx.VxlanId != 4096 || vx.Port != 4789 || vx.VtepDevIndex != a.Link(t, "va").Attrs().Index {
		t.Errorf("vx0: VNI %d port %d parent %d", vx.VxlanId, vx.Port, vx.VtepDevIndex)
	}
	// The TUN device must be made inside the namespace, not on the host, and outlive its fd.
	if l, err := netlink.LinkByName("tunl0"); err == nil && l.Type() == "tuntap" {
		t.Errorf("AddTun created tunl0 on the host")
	}
	if tun := a.Link(t, "tunl0").(*netlink.Tuntap); tun.Mode != netlink.TUNTAP_MODE_TUN || tun.NonPersist {
		t.Errorf("tunl0: mode %v non-persistent %v", tun.Mode, tun.NonPersist)
	}

	out, err := exec.Command("ip", "netns", "exec", a.Name, "ip", "-o", "addr", "show", "dev", "va").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "192.168.79.128/24") || !strings.Contains(string(out), "fd00::5/64") {
		t.Errorf("addresses of va: %v: %s", err, out)
	}
	out, err = exec.Command("ip", "netns", "exec", a.Name, "ip", "route", "show").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "default via 192.168.79.1 dev va") || !strings.Contains(string(out), "blackhole 10.244.0.0/26") {
		t.Errorf("routes: %v: %s", err, out)
	}
}
