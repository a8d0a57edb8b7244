package networkd

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/calico-prep/calico-prep/pkg/check"
	"github.com/calico-prep/calico-prep/pkg/config"
	"github.com/calico-prep/calico-prep/test/testbed"
	"github.com/calico-prep/calico-prep/test/testkit"
)

// These tests run against real systemd-networkd (Debian's, 252 on this machine) on a private
// bus in a sandboxed node (see test/testbed). They fail, never skip, when the node cannot start.

func testContext(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

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
	calls := c.StateChangingCalls()
	rep = run(ctx, check.Reconcile, checks)
	if !rep.Ready {
		t.Errorf("second pass not ready: %+v", rep.Entries)
	}
	if d := c.StateChangingCalls() - calls; d != 0 {
		t.Errorf("a settled pass made %d state-changing calls, want 0", d)
	}
}
