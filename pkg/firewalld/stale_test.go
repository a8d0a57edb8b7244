package firewalld_test

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/calico-prep/calico-prep/pkg/calico"
	"github.com/calico-prep/calico-prep/pkg/check"
	"github.com/calico-prep/calico-prep/pkg/firewalld"
	"github.com/calico-prep/calico-prep/test/testbed"
)

// TestStaleRulesFollowTheConfiguration changes the configuration under a node, as Calico's
// resources do live: a port calico-prep opened and the configuration no longer needs is
// closed, runtime and permanent; the new one is opened; a rule someone else added, even the
// very port calico-prep needs now, is never touched; nothing reloads firewalld (a runtime-only
// rule of another tool survives).
func TestStaleRulesFollowTheConfiguration(t *testing.T) {
	ctx := testContext(t)
	n := testbed.Up(t, testbed.Options{Name: "stale", Firewalld: true})
	c := dial(t, ctx, n)
	pz, err := c.ConfigZone(ctx, defaultZone)
	if err != nil {
		t.Fatal(err)
	}
	// The operator's: 8472/udp runtime and permanent, 1234/tcp at runtime only.
	if err := errors.Join(c.AddPort(ctx, defaultZone, "8472", "udp"), pz.AddPort(ctx, "8472", "udp"), c.AddPort(ctx, defaultZone, "1234", "tcp")); err != nil {
		t.Fatal(err)
	}
	state := func(port, proto string) string {
		rt, err1 := c.QueryPort(ctx, defaultZone, port, proto)
		pz, err2 := c.ConfigZone(ctx, defaultZone)
		var perm bool
		var err3 error
		if err2 == nil {
			perm, err3 = pz.QueryPort(ctx, port, proto)
		}
		if err := errors.Join(err1, err2, err3); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%s/%s runtime %t permanent %t", port, proto, rt, perm)
	}
	expect := func(port, proto string, open bool) {
		t.Helper()
		want := fmt.Sprintf("%s/%s runtime %t permanent %t", port, proto, open, open)
		if got := state(port, proto); got != want {
			t.Errorf("%s, want %s", got, want)
		}
	}
	reconcile := func(in firewalld.RuleInput, removeStale bool) check.Report {
		t.Helper()
		opts := options(n, netip.MustParsePrefix("10.65.0.0/16"))
		opts.Forwarding = false
		opts.Rules = firewalld.Rules(in)
		opts.RemoveStale = removeStale
		rep := run(ctx, check.Reconcile, firewalld.Checks(c, opts))
		failIfNotReady(t, rep)
		return rep
	}

	reconcile(firewalld.RuleInput{BGP: true, Encapsulation: calico.EncapVXLAN}, true)
	expect("179", "tcp", true)
	expect("4789", "udp", true)

	// Felix's vxlanPort becomes 8472: 4789 closes; 8472 is open already, and the operator's.
	rep := reconcile(firewalld.RuleInput{BGP: true, Encapsulation: calico.EncapVXLAN, Ports: calico.Ports{VXLAN: 8472}}, true)
	e, _ := rep.Entry(firewalld.StaleCheckName)
	if !e.Applied || e.Status != check.Pass {
		t.Errorf("%s: applied %t, %s %q; want applied and passing", e.Name, e.Applied, e.Status, e.Message)
	}
	expect("4789", "udp", false)
	expect("179", "tcp", true)
	expect("8472", "udp", true)

	// Back to 4789 without BGP: 4789 opens again and 179 closes; the operator's 8472 stays,
	// though calico-prep no longer needs it.
	reconcile(firewalld.RuleInput{Encapsulation: calico.EncapVXLAN}, true)
	expect("4789", "udp", true)
	expect("179", "tcp", false)
	expect("8472", "udp", true)
	if rt, err := c.QueryPort(ctx, defaultZone, "1234", "tcp"); err != nil || !rt {
		t.Errorf("the other tool's runtime-only 1234/tcp: %t, %v; firewalld was reloaded", rt, err)
	}

	// Without RemoveStale (agent check, or Calico's resources not read yet) nothing closes.
	rep = reconcile(firewalld.RuleInput{BGP: true, Encapsulation: calico.EncapIPIP}, false)
	if _, ok := rep.Entry(firewalld.StaleCheckName); ok {
		t.Errorf("%s ran without RemoveStale", firewalld.StaleCheckName)
	}
	expect("4789", "udp", true)

	// Verify-only reports what it would close and changes nothing.
	opts := options(n, netip.MustParsePrefix("10.65.0.0/16"))
	opts.Forwarding, opts.RemoveStale = false, true
	opts.Rules = firewalld.Rules(firewalld.RuleInput{BGP: true, Encapsulation: calico.EncapIPIP})
	rep = run(ctx, check.VerifyOnly, firewalld.Checks(c, opts))
	e, _ = rep.Entry(firewalld.StaleCheckName)
	if want := "4789/udp in firewalld zone public: added by calico-prep and no longer needed by the configuration: would remove it"; e.Status != check.Fail || e.Message != want {
		t.Errorf("%s: %s %q, want fail %q", e.Name, e.Status, e.Message, want)
	}
	expect("4789", "udp", true)

	// cleanup still finds exactly what calico-prep added and is left: 179/tcp, ipencap, 4789/udp.
	if _, err := firewalld.Cleanup(ctx, c, n.StateDir); err != nil {
		t.Fatal(err)
	}
	expect("4789", "udp", false)
	expect("179", "tcp", false)
	expect("8472", "udp", true)
	if ok, err := c.QueryProtocol(ctx, defaultZone, "ipencap"); err != nil || ok {
		t.Errorf("ipencap after cleanup: %t, %v", ok, err)
	}
	if s := state("1234", "tcp"); !strings.Contains(s, "runtime true") {
		t.Errorf("%s after cleanup, want the other tool's runtime rule kept", s)
	}
}
