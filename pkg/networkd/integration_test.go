package networkd

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/calico-prep/calico-prep/pkg/check"
	"github.com/calico-prep/calico-prep/pkg/config"
	"github.com/calico-prep/calico-prep/test/testbed"
	"github.com/calico-prep/calico-prep/test/testkit"
)

// These tests run against real systemd-networkd (Debian's, 252 on this machine) on a private
// bus in a sandboxed node (see test/testbed). They fail, never skip, when the node cannot start.

func testContext(t testing.TB) context.Context { return testkit.Context(t, 3*time.Minute) }

// nodeOptions point the checks at the node's private /etc/systemd and /run.
func nodeOptions(n *testbed.Node) Options {
	return Options{Mode: config.ModeOn, ConfDir: n.NetworkdConfDir, Root: n.Dir, KeepForeignRoutes: true}
}

func dial(t testing.TB, ctx context.Context, n *testbed.Node) *Client {
	t.Helper()
	c, err := Dial(ctx, n.BusAddress)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func run(ctx context.Context, mode check.Mode, checks []check.Check) check.Report {
	r := check.Runner{Mode: mode}
	return r.Run(ctx, checks)
}

func write(t testing.TB, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// calicoLinks are the Calico links a node with Options.Calico has.
var calicoLinks = []string{testbed.CaliVeth, "tunl0", "vxlan.calico"}

// flatcarDefault is Flatcar's zz-default.network: every link is managed with DHCP.
const flatcarDefault = "[Match]\nName=*\n\n[Network]\nDHCP=yes\n"

// states reads, through the test bed's own bus connection, the AdministrativeState of links.
func states(t testing.TB, ctx context.Context, n *testbed.Node, links ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, l := range links {
		s, err := n.NetworkdLinkState(ctx, l)
		if err != nil {
			t.Fatal(err)
		}
		out[l] = s
	}
	return out
}

// waitStates waits until every link reads want.
func waitStates(t testing.TB, ctx context.Context, n *testbed.Node, want string, links ...string) {
	t.Helper()
	testkit.Eventually(t, 30*time.Second, func() string {
		for l, s := range states(t, ctx, n, links...) {
			if s != want {
				return l + " is " + s + ", want " + want
			}
		}
		return ""
	})
}

// TestApplyLive starts networkd with Flatcar's catch-all file, which makes it manage Calico's
// links, and shows that one pass writes the .network file, reloads networkd and leaves every
// Calico link unmanaged while the uplink stays managed; a second pass changes nothing.
func TestApplyLive(t *testing.T) {
	ctx := testContext(t)
	n := testbed.Up(t, testbed.Options{Name: "nd-live", Calico: true})
	write(t, filepath.Join(n.NetworkdConfDir, "zz-default.network"), flatcarDefault)
	if err := n.StartNetworkd(ctx); err != nil {
		t.Fatal(err)
	}
	for l, s := range states(t, ctx, n, append(calicoLinks, n.Uplink)...) {
		if s == StateUnmanaged {
			t.Fatalf("before calico-prep, networkd leaves %s unmanaged: the catch-all file did not take", l)
		}
	}
	c := dial(t, ctx, n)
	opts := nodeOptions(n)
	opts.KeepForeignRoutes = false
	checks := Checks(c, opts)
	before := run(ctx, check.DryRun, checks)
	if e, _ := before.Entry(CheckUnmanaged); e.Status != check.Fail || e.Reason != "LinkManaged" {
		t.Fatalf("before: %s = %s %s %q, want fail LinkManaged", e.Name, e.Status, e.Reason, e.Message)
	}
	rep := run(ctx, check.Reconcile, checks)
	for _, e := range rep.Entries {
		if e.Name != CheckForeignRoutes && e.Status != check.Pass {
			t.Errorf("after apply: %s = %s %s %q (apply error %q)", e.Name, e.Status, e.Reason, e.Message, e.ApplyError)
		}
	}
	got := states(t, ctx, n, append(calicoLinks, n.Uplink)...)
	for _, l := range calicoLinks {
		if got[l] != StateUnmanaged {
			t.Errorf("networkd reads %s as %q, want unmanaged", l, got[l])
		}
	}
	if got[n.Uplink] == StateUnmanaged {
		t.Errorf("the uplink %s became unmanaged", n.Uplink)
	}
	m := n.MonitorCalls(t, c.conn)
	rep = run(ctx, check.Reconcile, checks)
	if !rep.Ready {
		t.Errorf("second pass not ready: %+v", rep.Entries)
	}
	for _, call := range m.Take(t, ctx) {
		if call == managerIface+".Reload" || call == managerIface+".ReconfigureLink" {
			t.Errorf("a settled pass called %s, which can change networkd's state", call)
		}
	}
}

// TestConflictAgreesWithNetworkd puts an operator's catch-all file before calico-prep's: the
// check names it by file and line, and networkd, reloaded with calico-prep's file in place,
// indeed keeps managing Calico's links. A catch-all sorted after calico-prep's file is no
// conflict, and networkd then leaves the links alone.
func TestConflictAgreesWithNetworkd(t *testing.T) {
	ctx := testContext(t)
	n := testbed.Up(t, testbed.Options{Name: "nd-conflict", Calico: true})
	early := filepath.Join(n.NetworkdConfDir, "0-all.network")
	write(t, early, "# an operator's file\n[Match]\nType=ether\n\n[Network]\nDHCP=no\n")
	if err := n.StartNetworkd(ctx); err != nil {
		t.Fatal(err)
	}
	c := dial(t, ctx, n)
	opts := nodeOptions(n)
	opts.KeepForeignRoutes = false
	checks := Checks(c, opts)
	rep := run(ctx, check.Reconcile, checks)
	e, _ := rep.Entry(CheckDropIn)
	want := early + " line 3 (Type=ether) matches cali* before " + OwnNetwork
	if e.Status != check.Fail || e.Reason != "OperatorConfigConflict" || !strings.Contains(e.Message, want) {
		t.Fatalf("%s = %s %s %q, want OperatorConfigConflict naming %q", e.Name, e.Status, e.Reason, e.Message, want)
	}
	// Type=ether matches the veth and vxlan.calico (networkd without udev, as here and in
	// containers, types it by its ARP type), not tunl0 (a TUN stand-in here, type none; ipip
	// is "tunnel"). The check names exactly those globs, and networkd agrees.
	for _, g := range []string{"cali*", "vxlan.calico"} {
		if !strings.Contains(e.Message, "matches "+g+" before") {
			t.Errorf("message does not name %s: %q", g, e.Message)
		}
	}
	if strings.Contains(e.Message, "matches tunl*") {
		t.Errorf("message names tunl*, which Type=ether does not match: %q", e.Message)
	}
	waitStates(t, ctx, n, StateUnmanaged, "tunl0")
	for l, s := range states(t, ctx, n, testbed.CaliVeth, "vxlan.calico") {
		if s == StateUnmanaged {
			t.Errorf("networkd leaves %s unmanaged although %s matches it first", l, early)
		}
	}

	if err := os.Rename(early, filepath.Join(n.NetworkdConfDir, "zz-all.network")); err != nil {
		t.Fatal(err)
	}
	rep = run(ctx, check.Reconcile, checks)
	if e, _ := rep.Entry(CheckDropIn); e.Status != check.Pass {
		t.Fatalf("with the catch-all after calico-prep's file: %s = %s %s %q", e.Name, e.Status, e.Reason, e.Message)
	}
	if err := c.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	waitStates(t, ctx, n, StateUnmanaged, calicoLinks...)
}

// hasRoute reports whether the node has a route to dst.
func hasRoute(t testing.TB, ctx context.Context, n *testbed.Node, dst string) bool {
	t.Helper()
	out, err := n.Exec(ctx, "ip", "-4", "route", "show", dst)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out)) != ""
}

// TestForeignRoutes shows the breakage on real networkd (a BIRD route on the uplink is gone
// after networkd reconfigures the uplink), then that the check reports it, writes the drop-in,
// says it waits for networkd's restart, and passes after the restart, when the route survives.
func TestForeignRoutes(t *testing.T) {
	ctx := testContext(t)
	n := testbed.Up(t, testbed.Options{Name: "nd-routes", Calico: true})
	write(t, filepath.Join(n.NetworkdConfDir, "50-uplink.network"),
		"[Match]\nName="+n.Uplink+"\n\n[Network]\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n")
	if err := n.StartNetworkd(ctx); err != nil {
		t.Fatal(err)
	}
	c := dial(t, ctx, n)
	waitStates(t, ctx, n, "configured", n.Uplink)
	uplink, err := c.GetLinkByName(ctx, n.Uplink)
	if err != nil {
		t.Fatal(err)
	}
	// Without a gateway: networkd also drops the uplink's address, which its file leaves out.
	const dst = "10.70.0.0/24"
	bird := func() {
		t.Helper()
		if _, err := n.Exec(ctx, "ip", "route", "replace", dst, "dev", n.Uplink, "proto", "bird"); err != nil {
			t.Fatal(err)
		}
	}
	reconfigure := func() {
		t.Helper()
		if err := c.ReconfigureLink(ctx, uplink.Index); err != nil {
			t.Fatal(err)
		}
		waitStates(t, ctx, n, "configured", n.Uplink)
	}
	bird()
	reconfigure()
	testkit.Eventually(t, 10*time.Second, func() string {
		if hasRoute(t, ctx, n, dst) {
			return "networkd with its default ManageForeignRoutes=yes kept the BIRD route"
		}
		return ""
	})

	checks := Checks(c, nodeOptions(n))
	e, _ := run(ctx, check.DryRun, checks).Entry(CheckForeignRoutes)
	if e.Status != check.Fail || e.Reason != "ForeignRoutesManaged" || !strings.Contains(e.Message, "ManageForeignRoutes=yes (networkd's default)") {
		t.Fatalf("before: %s = %s %s %q, want ForeignRoutesManaged naming the default", e.Name, e.Status, e.Reason, e.Message)
	}
	e, _ = run(ctx, check.Reconcile, checks).Entry(CheckForeignRoutes)
	if e.Status != check.Fail || e.Reason != "ForeignRoutesRestartPending" || !strings.Contains(e.Message, "next restart") {
		t.Fatalf("after apply: %s = %s %s %q, want ForeignRoutesRestartPending", e.Name, e.Status, e.Reason, e.Message)
	}
	dropIn := filepath.Join(filepath.Dir(n.NetworkdConfDir), "networkd.conf.d", OwnConf)
	if _, err := os.Stat(dropIn); err != nil {
		t.Fatal(err)
	}
	if err := n.StopNetworkd(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n.StartNetworkd(ctx); err != nil {
		t.Fatal(err)
	}
	waitStates(t, ctx, n, "configured", n.Uplink)
	if e, _ := run(ctx, check.Reconcile, checks).Entry(CheckForeignRoutes); e.Status != check.Pass {
		t.Fatalf("after networkd's restart: %s = %s %s %q", e.Name, e.Status, e.Reason, e.Message)
	}
	bird()
	reconfigure()
	time.Sleep(time.Second) // the removal above took effect within this time
	if !hasRoute(t, ctx, n, dst) {
		t.Error("networkd removed the BIRD route although calico-prep's drop-in turns ManageForeignRoutes off")
	}
}

// TestWatchAndCleanup: a restart of networkd and a new Calico link each arrive as events;
// cleanup removes calico-prep's two files and nothing else, and networkd manages the links
// again as the operator's file says.
func TestWatchAndCleanup(t *testing.T) {
	ctx := testContext(t)
	n := testbed.Up(t, testbed.Options{Name: "nd-watch", Calico: true})
	operator := filepath.Join(n.NetworkdConfDir, "zz-default.network")
	write(t, operator, flatcarDefault)
	if err := n.StartNetworkd(ctx); err != nil {
		t.Fatal(err)
	}
	c := dial(t, ctx, n)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events, err := c.Watch(wctx)
	if err != nil {
		t.Fatal(err)
	}
	next := func(want func(Event) bool, what string) {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for {
			select {
			case ev := <-events:
				if want(ev) {
					return
				}
			case <-deadline:
				t.Fatalf("no %s event within 30s", what)
			}
		}
	}
	if rep := run(ctx, check.Reconcile, Checks(c, nodeOptions(n))); rep.Entries[0].Status != check.Pass || rep.Entries[1].Status != check.Pass {
		t.Fatalf("apply: %+v", rep.Entries)
	}
	if err := n.StopNetworkd(ctx); err != nil {
		t.Fatal(err)
	}
	next(func(e Event) bool { return e.Kind == EventStopped }, "stopped")
	if err := n.StartNetworkd(ctx); err != nil {
		t.Fatal(err)
	}
	next(func(e Event) bool { return e.Kind == EventStarted }, "started")
	if err := n.AddCaliVeth(ctx, "cali00000000001"); err != nil {
		t.Fatal(err)
	}
	next(func(e Event) bool { return e.Kind == EventLinkState && e.State == StateUnmanaged }, "link-state unmanaged")
	waitStates(t, ctx, n, StateUnmanaged, "cali00000000001")

	if err := Cleanup(ctx, c, nodeOptions(n)); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(n.NetworkdConfDir, OwnNetwork), filepath.Join(filepath.Dir(n.NetworkdConfDir), "networkd.conf.d", OwnConf)} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s after cleanup: %v", p, err)
		}
	}
	if b, err := os.ReadFile(operator); err != nil || string(b) != flatcarDefault {
		t.Errorf("the operator's file changed: %q, %v", b, err)
	}
	testkit.Eventually(t, 30*time.Second, func() string {
		if s := states(t, ctx, n, "tunl0")["tunl0"]; s == StateUnmanaged {
			return "tunl0 still unmanaged after cleanup and reload"
		}
		return ""
	})
}
