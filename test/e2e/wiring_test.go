package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/calico-prep/calico-prep/test/testkit"
)

// The daemon-level wiring: the agent's reactions to firewalld and NetworkManager going away,
// coming back and being changed under it, with nothing else to wake it (its resync is an hour
// away). The packages' own tests cover the clients; these cover that the daemon listens.

// TestFirewalldReloadAndRestartReapplyRules: an operator drops Calico's BGP port from the
// permanent configuration and reloads, or firewalld crashes and comes back without it; each
// time the agent puts the rule back, at runtime and permanently, on firewalld's own signal.
func TestFirewalldReloadAndRestartReapplyRules(t *testing.T) {
	e := setup(t, kube.Cluster(t), "e2e-firewalld")
	fw := dialBus(t, e.node)
	zone := fw.defaultZone(t)
	w := e.watchNode()
	a := startAgent(t, e.node, e.agentArgs()...)
	w.waitFor(t, wait, "condition True", conditionIs(corev1.ConditionTrue, "Prepared", ""))
	testkit.Eventually(t, wait, func() string { return fw.missingPorts(zone) })
	bgp := calicoPorts[0]
	applied := func(t testing.TB) float64 {
		return a.metric(t, fmt.Sprintf(`calico_prep_apply_total{check="firewalld/port-%s-%s",result="success"}`, bgp.num, bgp.proto))
	}

	// Each case starts from a quiet agent, so the pass that follows is the event's.
	reapplied := func(t *testing.T, before float64) {
		t.Helper()
		testkit.Eventually(t, wait, func() string { return fw.missingPorts(zone) })
		testkit.Eventually(t, wait, func() string {
			if after := applied(t); after <= before {
				return fmt.Sprintf("apply_total for %s is %v, was %v: the agent did not add the rule again", bgp, after, before)
			}
			return ""
		})
		nftHasPort(t, e, bgp)
	}

	t.Run("reload", func(t *testing.T) {
		a.settle(t)
		before := applied(t)
		fw.removePermanentPort(t, zone, bgp)
		if perm, err := fw.permanentPort(zone, bgp); err != nil || perm {
			t.Fatalf("port %s still permanent after removing it (%v)", bgp, err)
		}
		fw.reloadFirewalld(t)
		reapplied(t, before)
	})

	t.Run("kill and restart", func(t *testing.T) {
		ctx := t.Context()
		a.settle(t)
		before, passes := applied(t), a.passes(t)
		if err := e.node.KillFirewalld(ctx); err != nil {
			t.Fatal(err)
		}
		// firewalld leaving the bus is an event of its own (no netlink change comes with it).
		a.waitPasses(t, passes)
		// While it is down, the rule leaves firewalld's permanent configuration.
		zoneFile := filepath.Join(e.node.FirewalldDir, "zones", zone+".xml")
		xml, err := os.ReadFile(zoneFile)
		if err != nil {
			t.Fatal(err)
		}
		line := fmt.Sprintf(`<port port="%s" protocol="%s"/>`, bgp.num, bgp.proto)
		if !strings.Contains(string(xml), line) {
			t.Fatalf("%s has no %s:\n%s", zoneFile, line, xml)
		}
		if err := os.WriteFile(zoneFile, []byte(strings.Replace(string(xml), line, "", 1)), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := e.node.StartFirewalld(ctx); err != nil {
			t.Fatal(err)
		}
		reapplied(t, before)
	})

	if a.Exited() {
		t.Fatalf("agent exited (%s):\n%s", a.State(), a.logTail(20))
	}
	a.waitHTTP("/readyz", 200)
}

// nftHasPort looks for the port's accept rule in the node's nftables ruleset, where firewalld
// puts what it is told: the kernel, not only firewalld's word. With firewalld's iptables backend
// the rule is read with iptables-save (iptables-nft keeps it in nftables too, in iptables' form).
func nftHasPort(t testing.TB, e *env, p port) {
	t.Helper()
	// A line that starts with the match and ends with the verdict: firewalld 0.9 puts
	// "ct state { new, untracked }" between them.
	argv := []string{"nft", "list", "ruleset"}
	match, verdict := fmt.Sprintf("%s dport %s ", p.proto, p.num), " accept"
	if e.node.FirewalldBackend == "iptables" {
		argv = []string{"iptables-save", "-t", "filter"}
		match, verdict = fmt.Sprintf("-p %s -m %s --dport %s ", p.proto, p.proto, p.num), " -j ACCEPT"
	}
	out, err := e.node.Exec(context.Background(), argv[0], argv[1:]...)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if l = strings.TrimSpace(l); strings.Contains(l, match) && strings.HasSuffix(l, verdict) {
			return
		}
	}
	t.Errorf("node's rules have no %q … %q:\n%s", match, verdict, out)
}

// TestNetworkManagerRestartAndNewVeth: the drop-in goes missing while NetworkManager runs
// (nothing tells the agent), then NetworkManager restarts: the agent hears it, writes the
// drop-in again and has it re-read. A cali veth made afterwards stays unmanaged and up, while
// a veth NetworkManager is free to take next to it gets managed.
func TestNetworkManagerRestartAndNewVeth(t *testing.T) {
	e := setup(t, kube.Cluster(t), "e2e-nm")
	nm := dialBus(t, e.node)
	ctx := t.Context()
	w := e.watchNode()
	a := startAgent(t, e.node, e.agentArgs()...)
	w.waitFor(t, wait, "condition True", conditionIs(corev1.ConditionTrue, "Prepared", ""))
	want, err := os.ReadFile(dropInPath(e.node))
	if err != nil {
		t.Fatalf("drop-in after the agent prepared the node: %v", err)
	}

	a.settle(t)
	passes := a.passes(t)
	if err := os.Remove(dropInPath(e.node)); err != nil {
		t.Fatal(err)
	}
	if err := e.node.StopNetworkManager(ctx); err != nil {
		t.Fatal(err)
	}
	// NetworkManager leaving the bus is an event of its own (no netlink change comes with it).
	a.waitPasses(t, passes)
	if err := e.node.StartNetworkManager(ctx); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, wait, func() string {
		got, err := os.ReadFile(dropInPath(e.node))
		if err != nil || string(got) != string(want) {
			return fmt.Sprintf("drop-in after NetworkManager restarted: %q, %v; want it written again as %q", got, err, want)
		}
		return ""
	})

	const veth = "cali1a2b3c4d5e6"
	if err := e.node.AddCaliVeth(ctx, veth); err != nil {
		t.Fatal(err)
	}
	if _, err := e.node.Exec(ctx, "ip", "link", "add", "ctl0", "type", "veth", "peer", "name", "ctl1"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.node.Exec(ctx, "ip", "link", "set", "ctl0", "up"); err != nil {
		t.Fatal(err)
	}
	// A device is unmanaged at first until NetworkManager decides; once it has taken the
	// control veth, made after the cali one, it has decided about both.
	testkit.Eventually(t, wait, func() string {
		d, err := nm.device("ctl0")
		if err != nil || !d.managed || d.state <= nmUnmanaged {
			return fmt.Sprintf("control veth ctl0: %+v, %v; want NetworkManager to manage it", d, err)
		}
		return ""
	})
	d, err := nm.device(veth)
	if err != nil || d.managed || d.state != nmUnmanaged {
		t.Errorf("%s: %+v, %v; want unmanaged (state %d, managed false)", veth, d, err, nmUnmanaged)
	}
	out, err := e.node.Exec(ctx, "ip", "-o", "link", "show", veth)
	if err != nil || !strings.Contains(string(out), ",UP") {
		t.Errorf("%s is not up: %s %v", veth, out, err)
	}
	testkit.Eventually(t, wait, func() string {
		if v := a.metric(t, `calico_prep_networkmanager_device_unmanaged{device="cali*"}`); v != 1 {
			return fmt.Sprintf("calico_prep_networkmanager_device_unmanaged{device=\"cali*\"} = %v, want 1", v)
		}
		return ""
	})
	a.waitHTTP("/readyz", 200)
}

// passes is how many reconcile passes the agent has finished.
func (a *agentProc) passes(t testing.TB) float64 {
	t.Helper()
	return max(a.metric(t, `calico_prep_reconcile_total{result="ready"}`), 0) +
		max(a.metric(t, `calico_prep_reconcile_total{result="not_ready"}`), 0)
}

// waitPasses waits until the agent has finished more than n passes.
func (a *agentProc) waitPasses(t testing.TB, n float64) {
	t.Helper()
	testkit.Eventually(t, wait, func() string {
		if got := a.passes(t); got <= n {
			return fmt.Sprintf("the agent ran no pass: %v passes, as before", got)
		}
		return ""
	})
}

// settle waits until the agent has run no pass for a while (the node's own start-up, such as
// IPv6 duplicate address detection finishing, wakes it too), so that the passes after it are
// the test's doing. It looks at /metrics a few times a second: each look costs the agent a
// scrape, and the footprint benchmark measures after it.
func (a *agentProc) settle(t testing.TB) {
	t.Helper()
	const quiet = 2 * time.Second
	deadline := time.Now().Add(wait)
	last, since := a.passes(t), time.Now()
	for time.Since(since) < quiet {
		if time.Now().After(deadline) {
			t.Fatalf("the agent kept running passes for %s (%v passes)", wait, last)
		}
		time.Sleep(250 * time.Millisecond)
		if n := a.passes(t); n != last {
			last, since = n, time.Now()
		}
	}
}

// metric returns the value of one series of the agent's /metrics, or -1 when it is absent.
func (a *agentProc) metric(t testing.TB, series string) float64 {
	t.Helper()
	_, body, err := a.get(context.Background(), "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for l := range strings.SplitSeq(body, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", series, err)
			}
			return f
		}
	}
	return -1
}
