package firewalld_test

import (
	"context"
	"io/fs"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/calico-prep/calico-prep/pkg/check"
	"github.com/calico-prep/calico-prep/pkg/firewalld"
	"github.com/calico-prep/calico-prep/test/testbed"
)

// configFiles reads the node's /etc/firewalld: path → content, and apart from them the names of
// firewalld's backups. Each time firewalld rewrites or removes a file there it keeps the former
// version as <file>.old, which it never reads back; they are firewalld's, not configuration, and
// calico-prep deletes no file it does not own, so the comparisons leave them out.
func configFiles(t testing.TB, n *testbed.Node) (files map[string]string, backups []string) {
	t.Helper()
	files = map[string]string{}
	err := filepath.WalkDir(n.FirewalldDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(n.FirewalldDir, p)
		if strings.HasSuffix(rel, ".old") {
			backups = append(backups, rel)
			return nil
		}
		b, err := os.ReadFile(p)
		files[rel] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files, backups
}

func origin(t testing.TB, ctx context.Context, c *firewalld.Client, zone string) firewalld.ZoneOrigin {
	t.Helper()
	z, err := c.ConfigZone(ctx, zone)
	if err != nil {
		t.Fatal(err)
	}
	o, err := z.Origin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// A zone that was its packaged version when calico-prep first changed it is that again after
// cleanup: the copy firewalld wrote into /etc/firewalld goes, and /etc/firewalld is byte for
// byte as before the install (firewalld's *.old backups aside), the ruleset too.
func TestCleanupRestoresPackagedZone(t *testing.T) {
	ctx := testContext(t)
	n := testbed.Up(t, testbed.Options{Name: "packaged", Firewalld: true, Calico: true})
	c := dial(t, ctx, n)
	if o := origin(t, ctx, c, defaultZone); o != firewalld.ZonePackaged {
		t.Fatalf("zone %s of a fresh firewalld is %s, want packaged: the test shows nothing", defaultZone, o)
	}
	// Cleanup reloads firewalld, and with the iptables backend a reload lists iptables-nft's
	// chains in another order than firewalld's start did: the ruleset to compare with is a
	// reloaded one too.
	if err := c.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	before, _ := configFiles(t, n)
	rulesetBefore := nft(t, ctx, n)

	failIfNotReady(t, run(ctx, check.Reconcile, firewalld.Checks(c, options(n, netip.MustParsePrefix("10.65.128.0/24")))))
	zoneFile := filepath.Join(n.FirewalldDir, "zones", defaultZone+".xml")
	if _, err := os.Stat(zoneFile); err != nil {
		t.Fatalf("calico-prep's permanent rules wrote no copy of zone %s: %v", defaultZone, err)
	}
	if o := origin(t, ctx, c, defaultZone); o != firewalld.ZoneChanged {
		t.Errorf("zone %s after apply is %s, want changed", defaultZone, o)
	}
	if o := origin(t, ctx, c, firewalld.ForwardingZone); o != firewalld.ZoneCustom {
		t.Errorf("zone %s is %s, want custom", firewalld.ForwardingZone, o)
	}

	done, err := firewalld.Cleanup(ctx, c, n.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(done.Restored, []string{defaultZone}) || len(done.Kept) != 0 {
		t.Errorf("cleanup: %+v, want zone %s restored", done, defaultZone)
	}
	if o := origin(t, ctx, c, defaultZone); o != firewalld.ZonePackaged {
		t.Errorf("zone %s after cleanup is %s, want packaged", defaultZone, o)
	}
	after, backups := configFiles(t, n)
	if !maps.Equal(after, before) {
		t.Errorf("/etc/firewalld after cleanup:\n%v\nwant as before the install:\n%v", after, before)
	}
	t.Logf("firewalld's backups left in /etc/firewalld: %v", backups)
	if got := nft(t, ctx, n); got != rulesetBefore {
		t.Errorf("ruleset after cleanup differs:\n%s\n---- was ----\n%s", got, rulesetBefore)
	}
	if _, err := os.Stat(filepath.Join(n.StateDir, "firewalld.json")); !os.IsNotExist(err) {
		t.Errorf("state survived cleanup: %v", err)
	}
	// After a restart firewalld reads the packaged zone, with none of calico-prep's rules.
	if err := n.KillFirewalld(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n.StartFirewalld(ctx); err != nil {
		t.Fatal(err)
	}
	c = dial(t, ctx, n)
	if s, err := c.ZoneSettings(ctx, defaultZone); err != nil || len(s.Ports) != 0 || len(s.Protocols) != 0 {
		t.Errorf("zone %s after a restart: ports %v, protocols %v, err %v; want none (packaged)", defaultZone, s.Ports, s.Protocols, err)
	}
}

// An operator's permanent change to the zone after calico-prep's first change keeps the zone's
// copy in /etc/firewalld: cleanup removes calico-prep's rules from it, reports the zone kept, and
// the operator's rule stays, permanent and, after a reload, runtime.
func TestCleanupKeepsOperatorsChangedZone(t *testing.T) {
	ctx := testContext(t)
	n := testbed.Up(t, testbed.Options{Name: "changed", Firewalld: true, Calico: true})
	c := dial(t, ctx, n)
	failIfNotReady(t, run(ctx, check.Reconcile, firewalld.Checks(c, options(n, netip.MustParsePrefix("10.65.128.0/24")))))
	pz, err := c.ConfigZone(ctx, defaultZone)
	if err != nil {
		t.Fatal(err)
	}
	if err := pz.AddPort(ctx, "8443", "tcp"); err != nil {
		t.Fatal(err)
	}

	done, err := firewalld.Cleanup(ctx, c, n.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(done.Kept, []string{defaultZone}) || len(done.Restored) != 0 {
		t.Errorf("cleanup: %+v, want zone %s kept", done, defaultZone)
	}
	if o := origin(t, ctx, c, defaultZone); o != firewalld.ZoneChanged {
		t.Errorf("zone %s after cleanup is %s, want changed (the operator's copy)", defaultZone, o)
	}
	zoneFile := string(readFile(t, filepath.Join(n.FirewalldDir, "zones", defaultZone+".xml")))
	if !strings.Contains(zoneFile, `<port port="8443" protocol="tcp"/>`) || strings.Contains(zoneFile, `port="179"`) || strings.Contains(zoneFile, "ipencap") {
		t.Errorf("zone file after cleanup, want the operator's 8443/tcp and none of calico-prep's rules:\n%s", zoneFile)
	}
	if err := c.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if on, err := c.QueryPort(ctx, defaultZone, "8443", "tcp"); err != nil || !on {
		t.Errorf("the operator's 8443/tcp after a reload: %v, %v", on, err)
	}
	if _, err := os.Stat(filepath.Join(n.StateDir, "firewalld.json")); !os.IsNotExist(err) {
		t.Errorf("state survived cleanup: %v", err)
	}
}
