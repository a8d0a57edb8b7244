package firewalld_test

// Integration tests against real firewalld on a private bus inside a test-bed node. They need
// root and fail, not skip, when the test bed cannot start.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/calico-prep/calico-prep/pkg/calico"

	"github.com/calico-prep/calico-prep/pkg/check"
	"github.com/calico-prep/calico-prep/pkg/config"
	"github.com/calico-prep/calico-prep/pkg/firewalld"
	"github.com/calico-prep/calico-prep/test/testbed"
	"github.com/calico-prep/calico-prep/test/testkit"
)

const defaultZone = "public" // Debian's firewalld.conf

func testContext(t testing.TB) context.Context { return testkit.Context(t, 2*time.Minute) }

func dial(t testing.TB, ctx context.Context, n *testbed.Node) *firewalld.Client {
	t.Helper()
	c, err := firewalld.Dial(ctx, n.BusAddress)
	if err != nil {
		t.Fatalf("dial node %s: %v", n.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// passes is what run starts a pass of, as the agent does before each of its runs. Tests share
// it: a pass started by another test only makes a cache read again.
var passes check.Passes

// options are the default configuration's: BGP with IPIP, forwarding on, the node's pod CIDR.
func options(n *testbed.Node, podCIDR netip.Prefix) firewalld.Options {
	return firewalld.Options{
		Mode:          config.ModeOn,
		NodeInterface: func(context.Context) (string, error) { return n.Uplink, nil },
		Rules:         firewalld.Rules(firewalld.RuleInput{BGP: true, Encapsulation: calico.EncapIPIP}),
		Forwarding:    true,
		PodCIDRs:      []netip.Prefix{podCIDR},
		StateDir:      n.StateDir,
		Passes:        &passes,
	}
}

// run is one pass of checks.
func run(ctx context.Context, mode check.Mode, checks []check.Check) check.Report {
	passes.Start()
	r := check.Runner{Mode: mode}
	return r.Run(ctx, checks)
}

// counters are the packet counters iptables-nft puts on every rule of the iptables backend: they
// move with traffic, not with configuration.
var counters = regexp.MustCompile(`counter packets [0-9]+ bytes [0-9]+`)

// nft is the node's whole ruleset, as nftables holds it for either firewalld backend (Debian's
// iptables is iptables-nft), without packet counters.
func nft(t testing.TB, ctx context.Context, n *testbed.Node) string {
	t.Helper()
	out, err := n.Exec(ctx, "nft", "list", "ruleset")
	if err != nil {
		t.Fatalf("nft list ruleset: %v", err)
	}
	return counters.ReplaceAllString(string(out), "counter")
}

// chain returns the body of one chain of firewalld's table in nft's listing.
func chain(ruleset, name string) string {
	_, rest, ok := strings.Cut(ruleset, "\tchain "+name+" {")
	if !ok {
		return ""
	}
	body, _, _ := strings.Cut(rest, "\n\t}")
	return body
}

// ruleView reads back what firewalld wrote in the form of its backend: nft's listing of its own
// table for nftables, iptables-save's filter table for iptables.
type ruleView struct {
	iptables bool
	// allow is the zone's allow chain, dispatch the forward-policy dispatch chain, all the
	// whole listing.
	allow, dispatch, all string
}

func readRules(t testing.TB, ctx context.Context, n *testbed.Node, zone string) ruleView {
	t.Helper()
	if n.FirewalldBackend != "iptables" {
		rs := nft(t, ctx, n)
		// The chain that dispatches to policies is named differently across versions (2.x has
		// no filter_FORWARD_POLICIES_pre): the whole ruleset is searched for the jump.
		return ruleView{allow: chain(rs, "filter_IN_"+zone+"_allow"), dispatch: rs, all: rs}
	}
	out, err := n.Exec(ctx, "iptables-save", "-t", "filter")
	if err != nil {
		t.Fatalf("iptables-save: %v", err)
	}
	v := ruleView{iptables: true, all: string(out)}
	for _, l := range strings.Split(v.all, "\n") {
		if strings.HasPrefix(l, "-A IN_"+zone+"_allow ") {
			v.allow += l + "\n"
		}
		if strings.HasPrefix(l, "-A FORWARD_POLICIES_pre ") {
			v.dispatch += l + "\n"
		}
	}
	return v
}

// rule is one accept rule as the backend lists it: a line that holds match and ends with the
// verdict. Between them firewalld versions differ (0.9 adds "ct state { new,
// untracked }").
type rule struct{ match, verdict string }

func (r rule) String() string { return r.match + " … " + r.verdict }

// in reports whether a line of listing is the rule.
func (r rule) in(listing string) bool {
	for _, l := range strings.Split(listing, "\n") {
		l = strings.TrimSpace(l)
		if strings.Contains(l, r.match+" ") && strings.HasSuffix(l, " "+r.verdict) {
			return true
		}
	}
	return false
}

// port is how the backend writes an accepted port or range ("30000-32767").
func (v ruleView) port(proto, port string) rule {
	if v.iptables {
		return rule{fmt.Sprintf("-A IN_%s_allow -p %s -m %s --dport %s", defaultZone, proto, proto, strings.ReplaceAll(port, "-", ":")), "-j ACCEPT"}
	}
	return rule{fmt.Sprintf("%s dport %s", proto, port), "accept"}
}

func (v ruleView) protocol(name string) rule {
	if v.iptables {
		return rule{"-A IN_" + defaultZone + "_allow -p " + name, "-j ACCEPT"}
	}
	return rule{"meta l4proto " + name, "accept"}
}

// dispatches reports whether forwarded traffic to cali* goes to the policy.
func (v ruleView) dispatches(policy string) bool {
	if v.iptables {
		return strings.Contains(v.dispatch, "-o cali+ -j FWD_"+policy)
	}
	for _, l := range strings.Split(v.dispatch, "\n") {
		// One interface ("oifname "cali*" jump …") or a set of them ("oifname { "cali*", … }").
		if strings.Contains(l, policy) && strings.Contains(l, "oifname ") && strings.Contains(l, `"cali*"`) {
			return true
		}
	}
	// firewalld 2.x: traffic to cali* goes to a chain per zone pair ("filter_FWD_public_to_
	// calico-prep"), which jumps to the policy.
	pair := chain(v.all, "filter_FWD_"+defaultZone+"_to_"+firewalld.ForwardingZone)
	return strings.Contains(v.all, `oifname "cali*" jump filter_FWD_`+defaultZone+"_to_"+firewalld.ForwardingZone) &&
		strings.Contains(pair, "jump filter_FWD_policy_"+policy)
}

func (v ruleView) source(cidr string) rule {
	if v.iptables {
		return rule{"-s " + cidr, "-j ACCEPT"}
	}
	return rule{"ip saddr " + cidr, "accept"}
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func failIfNotReady(t testing.TB, rep check.Report) {
	t.Helper()
	if !rep.Ready {
		for _, e := range rep.Entries {
			t.Logf("%s: %s %s: %s %s", e.Name, e.Status, e.Reason, e.Message, e.ApplyError)
		}
		t.Fatal("not ready")
	}
}

// The test-bed uplink is bound to no zone, so the rules land in the default zone.
func TestApplyReadBack(t *testing.T) {
	ctx := testContext(t)
	n := testbed.Up(t, testbed.Options{Name: "apply", Firewalld: true, Calico: true})
	c := dial(t, ctx, n)
	opts := options(n, netip.MustParsePrefix("10.65.128.0/24"))
	opts.Rules = firewalld.Rules(firewalld.RuleInput{BGP: true, Typha: true, WireGuard: true, IPv6: true,
		Encapsulation: calico.EncapIPIP, Extra: []config.Port{{From: 30000, To: 32767, Protocol: "tcp"}}})
	checks := firewalld.Checks(c, opts)

	before := nft(t, ctx, n)
	plan := run(ctx, check.DryRun, checks)
	for _, e := range plan.Entries[1:] {
		if e.Status != check.Fail || !e.WouldApply || !strings.Contains(e.Message, "would ") {
			t.Errorf("dry run %s: %s %s %q, want a failing entry with a plan", e.Name, e.Status, e.Reason, e.Message)
		}
	}
	if e, _ := plan.Entry("firewalld/port-179-tcp"); e.Facts["zone"] != defaultZone || e.Facts["runtime"] != "false" {
		t.Errorf("dry run port-179-tcp facts = %v, want zone %s, runtime false", e.Facts, defaultZone)
	}
	if after := nft(t, ctx, n); after != before {
		t.Error("the dry run changed the ruleset")
	}
	if _, err := os.Stat(filepath.Join(n.StateDir, "firewalld.json")); !os.IsNotExist(err) {
		t.Errorf("the dry run wrote state: %v", err)
	}

	failIfNotReady(t, run(ctx, check.Reconcile, checks))

	// Read back over D-Bus: runtime and permanent.
	pz, err := c.ConfigZone(ctx, defaultZone)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct{ Port, Protocol string }{{"179", "tcp"}, {"5473", "tcp"}, {"51820", "udp"}, {"51821", "udp"}, {"30000-32767", "tcp"}} {
		rt, err1 := c.QueryPort(ctx, defaultZone, p.Port, p.Protocol)
		perm, err2 := pz.QueryPort(ctx, p.Port, p.Protocol)
		if err := errors.Join(err1, err2); err != nil || !rt || !perm {
			t.Errorf("port %s/%s: runtime %t, permanent %t, err %v; want both", p.Port, p.Protocol, rt, perm, err)
		}
	}
	rt, err1 := c.QueryProtocol(ctx, defaultZone, "ipencap")
	perm, err2 := pz.QueryProtocol(ctx, "ipencap")
	if err := errors.Join(err1, err2); err != nil || !rt || !perm {
		t.Errorf("protocol ipencap: runtime %t, permanent %t, err %v; want both", rt, perm, err)
	}
	for _, bad := range []string{"ipip", "94"} {
		if on, _ := c.QueryProtocol(ctx, defaultZone, bad); on {
			t.Errorf("protocol %s (94) is open; IPIP is protocol 4", bad)
		}
	}

	// Read back in the node's namespace, as the backend (nftables or iptables) wrote it.
	v := readRules(t, ctx, n, defaultZone)
	for _, want := range []rule{v.port("tcp", "179"), v.port("tcp", "5473"), v.port("udp", "51820"),
		v.port("udp", "51821"), v.port("tcp", "30000-32767"), v.protocol("ipencap")} {
		if !want.in(v.allow) {
			t.Errorf("zone %s's allow chain lacks %q:\n%s", defaultZone, want, v.allow)
		}
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n.FirewalldVersion != testbed.Debian && info.Version != n.FirewalldVersion {
		t.Fatalf("firewalld reports version %s, the test bed was asked for %s", info.Version, n.FirewalldVersion)
	}
	switch {
	case strings.HasPrefix(info.Version, "0.") && !v.iptables:
		// firewalld 0.9's nftables backend puts the egress zone's interfaces into an nft set
		// without turning "cali+" into "cali*", so the policy never sees traffic to workload
		// veths (it still sees tunl0 and the other fixed names). Known gap; README says so.
		if !strings.Contains(v.dispatch, `"cali+"`) || v.dispatches(firewalld.ForwardingPolicy) {
			t.Errorf("firewalld %s's forward policy dispatch changed; revisit the known gap", info.Version)
		}
	case !v.dispatches(firewalld.ForwardingPolicy):
		t.Errorf("no rule sends forwarded traffic to cali* through %s", firewalld.ForwardingPolicy)
	}
	if !v.source("10.65.128.0/24").in(v.all) {
		t.Errorf("ruleset lacks the pod CIDR rule of %s", firewalld.PodCIDRPolicy)
	}
	zoneFile := string(readFile(t, filepath.Join(n.FirewalldDir, "zones", defaultZone+".xml")))
	for _, want := range []string{`<port port="179" protocol="tcp"/>`, `<protocol value="ipencap"/>`} {
		if !strings.Contains(zoneFile, want) {
			t.Errorf("permanent zone file lacks %s:\n%s", want, zoneFile)
		}
	}
	for _, f := range []string{"zones/" + firewalld.ForwardingZone + ".xml", "policies/" + firewalld.ForwardingPolicy + ".xml", "policies/" + firewalld.PodCIDRPolicy + ".xml"} {
		if _, err := os.Stat(filepath.Join(n.FirewalldDir, f)); err != nil {
			t.Errorf("permanent configuration lacks %s: %v", f, err)
		}
	}

	// A second run changes nothing: no apply, same ruleset, same files, same state.
	files := func() string {
		return string(readFile(t, filepath.Join(n.FirewalldDir, "zones", defaultZone+".xml"))) +
			string(readFile(t, filepath.Join(n.StateDir, "firewalld.json")))
	}
	rs1, f1 := nft(t, ctx, n), files()
	again := run(ctx, check.Reconcile, checks)
	failIfNotReady(t, again)
	for _, e := range again.Entries {
		if e.Applied {
			t.Errorf("second run applied %s", e.Name)
		}
	}
	if rs2 := nft(t, ctx, n); rs2 != rs1 {
		t.Error("second run changed the ruleset")
	}
	if f2 := files(); f2 != f1 {
		t.Errorf("second run changed the zone file or the state:\n%s\n----\n%s", f1, f2)
	}
}

// The zone is the node interface's when firewalld binds it to one.
func TestZoneOfNodeInterface(t *testing.T) {
	ctx := testContext(t)
	n := testbed.Up(t, testbed.Options{Name: "zone", Firewalld: true})
	c := dial(t, ctx, n)
	if err := c.AddInterface(ctx, "internal", n.Uplink); err != nil {
		t.Fatal(err)
	}
	opts := options(n, netip.MustParsePrefix("10.65.0.0/16"))
	opts.Forwarding = false
	failIfNotReady(t, run(ctx, check.Reconcile, firewalld.Checks(c, opts)))
	for zone, want := range map[string]bool{"internal": true, defaultZone: false} {
		if on, err := c.QueryPort(ctx, zone, "179", "tcp"); err != nil || on != want {
			t.Errorf("179/tcp in zone %s: %t, %v; want %t", zone, on, err, want)
		}
	}
	// An explicit zone wins.
	opts.Zone = "work"
	rep := run(ctx, check.Reconcile, firewalld.Checks(c, opts))
	failIfNotReady(t, rep)
	if e, _ := rep.Entry("firewalld/port-179-tcp"); e.Facts["zone"] != "work" {
		t.Errorf("facts %v, want zone work", e.Facts)
	}
}

// Before the agent, a TCP connect to 179 from a second node is rejected; after, accepted.
func TestTrafficBGPPort(t *testing.T) {
	ctx := testContext(t)
	a := testbed.Up(t, testbed.Options{Name: "bgpa", Firewalld: true, UplinkAddr: netip.MustParsePrefix("192.168.79.11/24")})
	b := testbed.Up(t, testbed.Options{Name: "bgpb", UplinkAddr: netip.MustParsePrefix("192.168.79.12/24")})
	aAddr, bAddr := netip.MustParsePrefix("10.0.0.1/24"), netip.MustParsePrefix("10.0.0.2/24")
	testbed.Connect(t, a, b, aAddr, bAddr)

	var ln net.Listener
	if err := a.Do(func() (err error) { ln, err = net.Listen("tcp", ":179"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conn.Close()
		}
	}()
	connect := func() error {
		return b.Do(func() error {
			conn, err := net.DialTimeout("tcp", netip.AddrPortFrom(aAddr.Addr(), 179).String(), 2*time.Second)
			if err == nil {
				conn.Close()
			}
			return err
		})
	}
	if err := connect(); err == nil {
		t.Fatal("TCP 179 reached node a before calico-prep opened it: the test shows nothing")
	}
	c := dial(t, ctx, a)
	opts := options(a, netip.MustParsePrefix("10.65.0.0/16"))
	opts.NodeInterface = func(context.Context) (string, error) { return "peer0", nil }
	opts.Forwarding = false
	failIfNotReady(t, run(ctx, check.Reconcile, firewalld.Checks(c, opts)))
	if err := connect(); err != nil {
		t.Fatalf("TCP 179 after calico-prep: %v", err)
	}
	if _, err := firewalld.Cleanup(ctx, c, a.StateDir); err != nil {
		t.Fatal(err)
	}
	if err := connect(); err == nil {
		t.Error("TCP 179 still reaches node a after cleanup")
	}
}

// listen serves "ok\n" on addr inside the namespace at path until the test ends.
func listen(t testing.TB, path, addr string) {
	t.Helper()
	var ln net.Listener
	if err := testbed.InNetNS(path, func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = conn.Write([]byte("ok\n"))
			conn.Close()
		}
	}()
}

// dialFrom connects from the namespace at path and reads listen's greeting.
func dialFrom(path string, to netip.AddrPort) error {
	return testbed.InNetNS(path, func() error {
		conn, err := net.DialTimeout("tcp", to.String(), 2*time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		buf := make([]byte, 3)
		if err := conn.SetReadDeadline(time.Now().Add(2 * time.Second)); err != nil {
			return err
		}
		if _, err := io.ReadFull(conn, buf); err != nil {
			return fmt.Errorf("read greeting: %w", err)
		}
		if string(buf) != "ok\n" {
			return fmt.Errorf("greeting %q, want \"ok\\n\"", buf)
		}
		return nil
	})
}

// Connections forwarded through node a to a pod behind a cali veth, from that pod to another
// node, and from the pod to node a itself work only with the forwarding zone and policies.
func TestTrafficForwarding(t *testing.T) {
	ctx := testContext(t)
	a := testbed.Up(t, testbed.Options{Name: "fwda", Firewalld: true, Calico: true, UplinkAddr: netip.MustParsePrefix("192.168.79.21/24")})
	b := testbed.Up(t, testbed.Options{Name: "fwdb", UplinkAddr: netip.MustParsePrefix("192.168.79.22/24")})
	aAddr, bAddr := netip.MustParsePrefix("10.0.1.1/24"), netip.MustParsePrefix("10.0.1.2/24")
	testbed.Connect(t, a, b, aAddr, bAddr)
	podNS, podAddr := testbed.Pod(a)
	if !podAddr.IsValid() {
		t.Fatal("node a has no pod")
	}
	if _, err := a.Exec(ctx, "sysctl", "-w", "net.ipv4.ip_forward=1"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Exec(ctx, "ip", "route", "add", podAddr.String()+"/32", "via", aAddr.Addr().String()); err != nil {
		t.Fatal(err)
	}
	listen(t, podNS, ":8080")
	listen(t, b.NetNS, ":8081")
	listen(t, a.NetNS, ":8082")
	toPod := func() error { return dialFrom(b.NetNS, netip.AddrPortFrom(podAddr, 8080)) }
	fromPod := func() error { return dialFrom(podNS, netip.AddrPortFrom(bAddr.Addr(), 8081)) }
	// Input from the pod, accepted by the zone's target alone.
	podToHost := func() error { return dialFrom(podNS, netip.AddrPortFrom(aAddr.Addr(), 8082)) }
	blocked := func(when string) {
		t.Helper()
		if toPod() == nil {
			t.Errorf("%s: node b reached the pod through node a", when)
		}
		if fromPod() == nil {
			t.Errorf("%s: the pod reached node b through node a", when)
		}
		if podToHost() == nil {
			t.Errorf("%s: the pod reached node a", when)
		}
	}
	blocked("before calico-prep")
	if t.Failed() {
		t.Fatal("firewalld let the traffic through by itself: the test shows nothing")
	}
	c := dial(t, ctx, a)
	opts := options(a, netip.PrefixFrom(podAddr, 24).Masked())
	opts.Forwarding = false
	failIfNotReady(t, run(ctx, check.Reconcile, firewalld.Checks(c, opts)))
	blocked("with the ports open but without forwarding")
	opts.Forwarding = true
	failIfNotReady(t, run(ctx, check.Reconcile, firewalld.Checks(c, opts)))
	if err := toPod(); err != nil {
		t.Errorf("node b to the pod with forwarding applied: %v", err)
	}
	if err := fromPod(); err != nil {
		t.Errorf("the pod to node b with forwarding applied: %v", err)
	}
	if err := podToHost(); err != nil {
		t.Errorf("the pod to node a with forwarding applied: %v", err)
	}
	if _, err := firewalld.Cleanup(ctx, c, a.StateDir); err != nil {
		t.Fatal(err)
	}
	blocked("after cleanup")
}

// daemon is the agent's loop in miniature: a pass on every firewalld event.
func daemon(ctx context.Context, t testing.TB, c *firewalld.Client, checks []check.Check) <-chan check.Report {
	events, err := c.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan check.Report, 16)
	go func() {
		defer close(out)
		for range events {
			out <- run(ctx, check.Reconcile, checks)
		}
	}()
	return out
}

// waitReady waits for a ready pass and returns it.
func waitReady(t testing.TB, reports <-chan check.Report, what string) check.Report {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case rep, ok := <-reports:
			if !ok {
				t.Fatalf("%s: watch ended", what)
			}
			if rep.Ready {
				return rep
			}
		case <-timeout:
			t.Fatalf("%s: no ready pass within 30s", what)
		}
	}
}

// drain discards the reports of passes that are over.
func drain(reports <-chan check.Report) {
	for {
		select {
		case <-reports:
		case <-time.After(500 * time.Millisecond):
			return
		}
	}
}

// Rules come back after a reload and after firewalld is killed and restarted, with nothing but
// the watch to trigger the agent. An operator removes calico-prep's permanent rule before the
// reload, so the rule comes back only if the agent re-applies it.
func TestStaysApplied(t *testing.T) {
	ctx := testContext(t)
	n := testbed.Up(t, testbed.Options{Name: "stay", Firewalld: true, Calico: true})
	c := dial(t, ctx, n)
	checks := firewalld.Checks(c, options(n, netip.MustParsePrefix("10.65.128.0/24")))
	failIfNotReady(t, run(ctx, check.Reconcile, checks))
	reports := daemon(ctx, t, c, checks)

	other := dial(t, ctx, n)
	pz, err := other.ConfigZone(ctx, defaultZone)
	if err != nil {
		t.Fatal(err)
	}
	if err := pz.RemovePort(ctx, "179", "tcp"); err != nil {
		t.Fatal(err)
	}
	if err := other.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	rep := waitReady(t, reports, "after reload")
	if e, _ := rep.Entry("firewalld/port-179-tcp"); !e.Applied {
		t.Errorf("the pass after the reload did not re-apply 179/tcp: %+v", e)
	}
	if on, err := other.QueryPort(ctx, defaultZone, "179", "tcp"); err != nil || !on {
		t.Fatalf("179/tcp after reload: %t, %v", on, err)
	}

	drain(reports)
	if err := n.KillFirewalld(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n.StartFirewalld(ctx); err != nil {
		t.Fatal(err)
	}
	waitReady(t, reports, "after restart")
	if v := readRules(t, ctx, n, defaultZone); !v.port("tcp", "179").in(v.allow) {
		t.Error("ruleset lacks 179/tcp after the restart")
	}
}

// Objects of calico-prep's names that calico-prep did not create are refused and left alone;
// its own, recognised by their description, are adopted when the state was lost.
func TestOwnership(t *testing.T) {
	ctx := testContext(t)
	n := testbed.Up(t, testbed.Options{Name: "own", Firewalld: true, Calico: true})
	c := dial(t, ctx, n)
	opts := options(n, netip.MustParsePrefix("10.65.128.0/24"))

	if _, err := c.AddConfigZone(ctx, firewalld.ForwardingZone, firewalld.ZoneSettings{Short: "someone else's", Target: "DROP"}); err != nil {
		t.Fatal(err)
	}
	zoneFile := filepath.Join(n.FirewalldDir, "zones", firewalld.ForwardingZone+".xml")
	original := readFile(t, zoneFile)
	rep := run(ctx, check.Reconcile, firewalld.Checks(c, opts))
	e, _ := rep.Entry("firewalld/forwarding-zone")
	if e.Reason != "ZoneNotOwned" || !strings.Contains(e.ApplyError, "not created by calico-prep") {
		t.Errorf("forwarding-zone with a foreign zone: %s %q, apply error %q", e.Reason, e.Message, e.ApplyError)
	}
	if after := readFile(t, zoneFile); !bytes.Equal(after, original) {
		t.Errorf("the foreign zone changed:\n%s", after)
	}
	if e, _ := rep.Entry("firewalld/forwarding-policy"); !strings.Contains(e.ApplyError, "not created by calico-prep") {
		t.Errorf("forwarding-policy with a foreign zone: apply error %q", e.ApplyError)
	}
	if _, err := os.Stat(filepath.Join(n.FirewalldDir, "policies", firewalld.ForwardingPolicy+".xml")); !os.IsNotExist(err) {
		t.Errorf("a policy into the foreign zone was created: %v", err)
	}
	// Looked up afresh: the reloads since have renumbered firewalld's zone objects.
	theirs, err := c.ConfigZone(ctx, firewalld.ForwardingZone)
	if err == nil {
		err = theirs.Remove(ctx)
	}
	if err != nil {
		t.Fatal(err)
	}

	failIfNotReady(t, run(ctx, check.Reconcile, firewalld.Checks(c, opts)))
	if err := os.Remove(filepath.Join(n.StateDir, "firewalld.json")); err != nil {
		t.Fatal(err)
	}
	// With the record gone the rules in the public zone look like the operator's, but the zone
	// and policies carry calico-prep's mark.
	failIfNotReady(t, run(ctx, check.Reconcile, firewalld.Checks(c, opts)))
	if _, err := firewalld.Cleanup(ctx, c, n.StateDir); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ZoneSettings(ctx, firewalld.ForwardingZone); !errors.Is(err, firewalld.ErrInvalidZone) {
		t.Errorf("the adopted zone survived cleanup: %v", err)
	}
	if on, _ := c.QueryPort(ctx, defaultZone, "179", "tcp"); !on {
		t.Error("cleanup removed 179/tcp, which after the lost record counts as the operator's")
	}
	if _, err := firewalld.Cleanup(ctx, c, n.StateDir); err != nil {
		t.Errorf("a second cleanup: %v", err)
	}
}

// An operator's permanent rules, one of them a rule calico-prep also needs, survive apply and
// cleanup byte for byte.
func TestOperatorRulesSurvive(t *testing.T) {
	ctx := testContext(t)
	n := testbed.Up(t, testbed.Options{Name: "keep", Firewalld: true, Calico: true})
	c := dial(t, ctx, n)
	pz, err := c.ConfigZone(ctx, defaultZone)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"8443", "179"} {
		if err := pz.AddPort(ctx, p, "tcp"); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	zoneFile := filepath.Join(n.FirewalldDir, "zones", defaultZone+".xml")
	original := readFile(t, zoneFile)
	rulesetBefore := nft(t, ctx, n)

	failIfNotReady(t, run(ctx, check.Reconcile, firewalld.Checks(c, options(n, netip.MustParsePrefix("10.65.128.0/24")))))
	if applied := readFile(t, zoneFile); !bytes.Contains(applied, []byte(`<port port="8443" protocol="tcp"/>`)) ||
		!bytes.Contains(applied, []byte(`<protocol value="ipencap"/>`)) {
		t.Errorf("zone file after apply:\n%s", applied)
	}
	if _, err := firewalld.Cleanup(ctx, c, n.StateDir); err != nil {
		t.Fatal(err)
	}
	if after := readFile(t, zoneFile); !bytes.Equal(after, original) {
		t.Errorf("zone file after cleanup differs:\n%s\n---- was ----\n%s", after, original)
	}
	if after := nft(t, ctx, n); after != rulesetBefore {
		t.Errorf("ruleset after cleanup differs:\n%s\n---- was ----\n%s", after, rulesetBefore)
	}
	for _, f := range []string{"zones/" + firewalld.ForwardingZone + ".xml", "policies/" + firewalld.ForwardingPolicy + ".xml"} {
		if _, err := os.Stat(filepath.Join(n.FirewalldDir, f)); !os.IsNotExist(err) {
			t.Errorf("%s survived cleanup: %v", f, err)
		}
	}
	if _, err := os.Stat(filepath.Join(n.StateDir, "firewalld.json")); !os.IsNotExist(err) {
		t.Errorf("state survived cleanup: %v", err)
	}
}

// A rule the operator already opened in another form is seen as open and left alone: BGP by
// its service name, WireGuard inside a range written backwards (firewalld stores both as
// numbers). And a verifying pass reads the zone once, however many rules there are.
func TestOperatorFormsAndCallsPerPass(t *testing.T) {
	ctx := testContext(t)
	n := testbed.Up(t, testbed.Options{Name: "forms", Firewalld: true, Calico: true})
	c := dial(t, ctx, n)
	zoneFile := filepath.Join(n.FirewalldDir, "zones", defaultZone+".xml")
	if err := os.WriteFile(zoneFile, []byte(`<?xml version="1.0" encoding="utf-8"?>
<zone>
  <short>Public</short>
  <port port="bgp" protocol="tcp"/>
  <port port="51830-51820" protocol="udp"/>
</zone>
`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := c.Reload(ctx); err != nil {
		t.Fatal(err)
	}

	opts := options(n, netip.MustParsePrefix("10.65.128.0/24"))
	opts.Rules = firewalld.Rules(firewalld.RuleInput{BGP: true, WireGuard: true, IPv6: true, Encapsulation: calico.EncapIPIP})
	rep := run(ctx, check.Reconcile, firewalld.Checks(c, opts))
	failIfNotReady(t, rep)
	for _, name := range []string{"firewalld/port-179-tcp", "firewalld/port-51820-udp", "firewalld/port-51821-udp"} {
		if e, _ := rep.Entry(name); e.Applied || e.Status != check.Pass {
			t.Errorf("%s: %s, applied %v; want a pass without an apply (the operator's rule covers it)", name, e.Status, e.Applied)
		}
	}
	if e, _ := rep.Entry("firewalld/protocol-ipencap"); !e.Applied {
		t.Error("ipencap was not applied; the test needs one rule of calico-prep's own")
	}
	// Cleanup removes ipencap and keeps the operator's ports: they were never calico-prep's.
	if _, err := firewalld.Cleanup(ctx, c, n.StateDir); err != nil {
		t.Fatal(err)
	}
	for _, s := range []func(context.Context, string) (firewalld.ZoneSettings, error){c.ZoneSettings, permanentSettings(c)} {
		got, err := s(ctx, defaultZone)
		want := []firewalld.PortEntry{{Port: "179", Protocol: "tcp"}, {Port: "51820-51830", Protocol: "udp"}}
		if err != nil || !slices.Equal(got.Ports, want) || len(got.Protocols) != 0 {
			t.Errorf("zone after cleanup: ports %v, protocols %v, err %v; want ports %v only", got.Ports, got.Protocols, err, want)
		}
	}

	m := n.MonitorCalls(t, c.Conn())
	calls := func(rules []firewalld.Rule) int {
		o := opts
		o.Rules = rules
		checks := firewalld.Checks(c, o)
		failIfNotReady(t, run(ctx, check.Reconcile, checks))
		m.Take(t, ctx)
		failIfNotReady(t, run(ctx, check.VerifyOnly, checks))
		return len(m.Take(t, ctx))
	}
	few := calls(firewalld.Rules(firewalld.RuleInput{BGP: true}))
	many := calls(firewalld.Rules(firewalld.RuleInput{BGP: true, Typha: true, Encapsulation: calico.EncapVXLAN,
		Extra: []config.Port{{From: 2379, To: 2380, Protocol: "tcp"}, {From: 6443, To: 6443, Protocol: "tcp"}}}))
	t.Logf("D-Bus calls of a verifying pass: %d with one rule, %d with five", few, many)
	if many != few {
		t.Errorf("a verifying pass makes %d D-Bus calls with five rules and %d with one; want the same", many, few)
	}
}

// While a Watch runs, a pass reuses what the last one read until firewalld signals a change:
// a quiet firewalld is asked nothing but whether it is on the bus; an operator's change at
// runtime, or to the permanent configuration, is read (and repaired) by the next pass.
func TestReadsLastUntilFirewalldSignals(t *testing.T) {
	ctx := testContext(t)
	n := testbed.Up(t, testbed.Options{Name: "quiet", Firewalld: true, Calico: true})
	c := dial(t, ctx, n)
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	if _, err := c.Watch(wctx); err != nil {
		t.Fatal(err)
	}
	checks := firewalld.Checks(c, options(n, netip.MustParsePrefix("10.65.128.0/24")))
	failIfNotReady(t, run(ctx, check.Reconcile, checks))
	settle := func() { // until firewalld's signals of the last changes have arrived
		t.Helper()
		for last, quiet := c.Changes(), 0; quiet < 10; quiet++ {
			time.Sleep(20 * time.Millisecond)
			if now := c.Changes(); now != last {
				last, quiet = now, 0
			}
		}
	}
	settle()
	failIfNotReady(t, run(ctx, check.VerifyOnly, checks)) // reads afresh after the apply's signals
	m := n.MonitorCalls(t, c.Conn())
	failIfNotReady(t, run(ctx, check.VerifyOnly, checks))
	if calls := m.Take(t, ctx); len(calls) != 1 {
		t.Errorf("a pass over a quiet firewalld made D-Bus calls %q, want 1 (is firewalld on the bus)", calls)
	}

	operator := dial(t, ctx, n)
	pz, err := operator.ConfigZone(ctx, defaultZone)
	if err != nil {
		t.Fatal(err)
	}
	for _, change := range []struct {
		name   string
		check  string
		do     func() error
		layers string
	}{
		{"runtime port removed", "firewalld/port-179-tcp", func() error { return operator.RemovePort(ctx, defaultZone, "179", "tcp") }, "runtime"},
		{"permanent protocol removed", "firewalld/protocol-ipencap", func() error { return pz.RemoveProtocol(ctx, "ipencap") }, "permanent"},
	} {
		was := c.Changes()
		if err := change.do(); err != nil {
			t.Fatalf("%s: %v", change.name, err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for c.Changes() == was && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		rep := run(ctx, check.VerifyOnly, checks)
		if e, _ := rep.Entry(change.check); e.Status != check.Fail || !strings.Contains(e.Message, "to "+change.layers+" configuration") {
			t.Errorf("%s: %s = %s %q, want it missing from the %s configuration", change.name, change.check, e.Status, e.Message, change.layers)
		}
		failIfNotReady(t, run(ctx, check.Reconcile, checks))
	}
}

func permanentSettings(c *firewalld.Client) func(context.Context, string) (firewalld.ZoneSettings, error) {
	return func(ctx context.Context, zone string) (firewalld.ZoneSettings, error) {
		pz, err := c.ConfigZone(ctx, zone)
		if err != nil {
			return firewalld.ZoneSettings{}, err
		}
		return pz.Settings(ctx)
	}
}

// Wrong input is a clear error and changes nothing.
func TestWrongInput(t *testing.T) {
	ctx := testContext(t)
	n := testbed.Up(t, testbed.Options{Name: "wrong", Firewalld: true, Calico: true})
	c := dial(t, ctx, n)
	tests := []struct {
		name    string
		edit    func(*firewalld.Options)
		wantErr string
	}{
		{"unknown protocol", func(o *firewalld.Options) { o.Rules = append(o.Rules, firewalld.Rule{IPProtocol: "foo"}) }, `"foo": unknown IP protocol`},
		{"ipip instead of ipencap", func(o *firewalld.Options) { o.Rules = append(o.Rules, firewalld.Rule{IPProtocol: "ipip"}) }, "protocol 94"},
		{"port out of range", func(o *firewalld.Options) {
			o.Rules = append(o.Rules, firewalld.Rule{Port: config.Port{From: 0, To: 0, Protocol: "tcp"}})
		}, "port out of range"},
		{"zone that does not exist", func(o *firewalld.Options) { o.Zone = "nosuch" }, `firewalld zone "nosuch" does not exist`},
	}
	zoneFile := filepath.Join(n.FirewalldDir, "zones", defaultZone+".xml")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := nft(t, ctx, n)
			fileBefore, _ := os.ReadFile(zoneFile)
			opts := options(n, netip.MustParsePrefix("10.65.128.0/24"))
			tt.edit(&opts)
			rep := run(ctx, check.Reconcile, firewalld.Checks(c, opts))
			applyErrs := 0
			for _, e := range rep.Entries {
				if e.Applied {
					t.Errorf("%s was applied", e.Name)
				}
				if e.ApplyError != "" {
					applyErrs++
					if !strings.Contains(e.ApplyError, tt.wantErr) {
						t.Errorf("%s: apply error %q, want it to contain %q", e.Name, e.ApplyError, tt.wantErr)
					}
				}
			}
			if applyErrs == 0 {
				t.Error("no apply failed")
			}
			if after := nft(t, ctx, n); after != before {
				t.Error("the ruleset changed")
			}
			if fileAfter, _ := os.ReadFile(zoneFile); !bytes.Equal(fileAfter, fileBefore) {
				t.Errorf("the permanent zone file changed:\n%s", fileAfter)
			}
			if _, err := os.Stat(filepath.Join(n.FirewalldDir, "zones", firewalld.ForwardingZone+".xml")); !os.IsNotExist(err) {
				t.Errorf("the forwarding zone was created: %v", err)
			}
			if _, err := os.Stat(filepath.Join(n.StateDir, "firewalld.json")); !os.IsNotExist(err) {
				t.Errorf("state was written: %v", err)
			}
		})
	}
	opts := options(n, netip.MustParsePrefix("10.65.128.0/24"))
	opts.Zone = "nosuch"
	rep := run(ctx, check.VerifyOnly, firewalld.Checks(c, opts))
	if e, _ := rep.Entry("firewalld/port-179-tcp"); e.Reason != "ZoneNotFound" || !strings.Contains(e.Message, `"nosuch"`) {
		t.Errorf("verify with a missing zone: %s %q", e.Reason, e.Message)
	}
}

// A rule calico-prep cannot record as its own is not added: cleanup, which removes exactly
// what the record lists, would leave it behind. Each layer is recorded before it is added, so
// an agent killed between the two leaves a record of a rule, never a rule without one.
func TestApplyRecordsBeforeItAdds(t *testing.T) {
	ctx := testContext(t)
	n := testbed.Up(t, testbed.Options{Name: "record", Firewalld: true, Calico: true})
	c := dial(t, ctx, n)
	opts := options(n, netip.MustParsePrefix("10.65.128.0/24"))
	opts.Forwarding = false
	// A state directory that can be read (it holds no record) but not written, not even by
	// root: procfs makes no files.
	opts.StateDir = "/proc/self"
	rep := run(ctx, check.Reconcile, firewalld.Checks(c, opts))
	e, _ := rep.Entry("firewalld/port-179-tcp")
	if e.Applied || !strings.Contains(e.ApplyError, "record 179/tcp") {
		t.Errorf("with no state directory: %+v, want an apply error about recording the rule", e)
	}
	if on, err := c.QueryPort(ctx, defaultZone, "179", "tcp"); err != nil || on {
		t.Errorf("179/tcp added at runtime (%v, %v) though it could not be recorded", on, err)
	}
	// With the directory, the same pass records and adds.
	opts.StateDir = n.StateDir
	rep = run(ctx, check.Reconcile, firewalld.Checks(c, opts))
	failIfNotReady(t, rep)
	if got := string(readFile(t, filepath.Join(n.StateDir, "firewalld.json"))); !strings.Contains(got, `"port": "179"`) {
		t.Errorf("state after the apply:\n%s", got)
	}
}

// Without firewalld on the bus every check is not applicable in auto mode and fails in on mode.
func TestNotRunning(t *testing.T) {
	ctx := testContext(t)
	n := testbed.Up(t, testbed.Options{Name: "absent"}) // a bus, no firewalld
	c := dial(t, ctx, n)
	for _, tt := range []struct {
		mode   config.Mode
		client *firewalld.Client
		want   check.Status
	}{
		{config.ModeAuto, c, check.NotApplicable},
		{config.ModeOn, c, check.Fail},
		{config.ModeAuto, nil, check.NotApplicable},
		{config.ModeOn, nil, check.Fail},
	} {
		opts := options(n, netip.MustParsePrefix("10.65.128.0/24"))
		opts.Mode = tt.mode
		rep := run(ctx, check.Reconcile, firewalld.Checks(tt.client, opts))
		if len(rep.Entries) != 5 {
			t.Errorf("mode %s: %d checks, want 5", tt.mode, len(rep.Entries))
		}
		for _, e := range rep.Entries {
			if e.Status != tt.want || e.Reason != "FirewalldNotRunning" {
				t.Errorf("mode %s, client %t: %s = %s %s, want %s FirewalldNotRunning", tt.mode, tt.client != nil, e.Name, e.Status, e.Reason, tt.want)
			}
			// firewalld may be restarting: the daemon waits a while before it judges that.
			if !e.Settling || e.Applied || e.ApplyError != "" {
				t.Errorf("mode %s, client %t: %s settling %v, applied %v %q; want settling and nothing applied", tt.mode, tt.client != nil, e.Name, e.Settling, e.Applied, e.ApplyError)
			}
		}
	}
	opts := options(n, netip.MustParsePrefix("10.65.128.0/24"))
	opts.Mode = config.ModeOff
	if checks := firewalld.Checks(c, opts); len(checks) != 0 {
		t.Errorf("mode off: %d checks, want none", len(checks))
	}
	for _, client := range []*firewalld.Client{c, nil} {
		if _, err := firewalld.Cleanup(ctx, client, n.StateDir); err != nil {
			t.Errorf("cleanup with nothing recorded, client %t: %v", client != nil, err)
		}
	}
}

// Cleanup while firewalld is down removes nothing, keeps the record and says why; once
// firewalld is back it finishes the job.
func TestCleanupWaitsForFirewalld(t *testing.T) {
	ctx := testContext(t)
	n := testbed.Up(t, testbed.Options{Name: "later", Firewalld: true, Calico: true})
	c := dial(t, ctx, n)
	failIfNotReady(t, run(ctx, check.Reconcile, firewalld.Checks(c, options(n, netip.MustParsePrefix("10.65.128.0/24")))))
	stateFile := filepath.Join(n.StateDir, "firewalld.json")
	recorded := readFile(t, stateFile)
	if err := n.StopFirewalld(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := firewalld.Cleanup(ctx, c, n.StateDir); !errors.Is(err, firewalld.ErrNotRunning) {
		t.Errorf("cleanup without firewalld = %v, want ErrNotRunning", err)
	}
	if got := readFile(t, stateFile); !bytes.Equal(got, recorded) {
		t.Errorf("cleanup without firewalld changed the record:\n%s", got)
	}
	if err := n.StartFirewalld(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := firewalld.Cleanup(ctx, c, n.StateDir); err != nil {
		t.Fatal(err)
	}
	if on, err := c.QueryPort(ctx, defaultZone, "179", "tcp"); err != nil || on {
		t.Errorf("179/tcp after cleanup: %t, %v", on, err)
	}
	if _, err := os.Stat(stateFile); !os.IsNotExist(err) {
		t.Errorf("state survived cleanup: %v", err)
	}
}

// Watch delivers one event per reload (not firewalld's config.* signals), Stopped when
// firewalld dies and Started once it runs again, and closes with its context.
func TestWatch(t *testing.T) {
	ctx := testContext(t)
	n := testbed.Up(t, testbed.Options{Name: "watch", Firewalld: true})
	c := dial(t, ctx, n)
	wctx, stop := context.WithCancel(ctx)
	events, err := c.Watch(wctx)
	if err != nil {
		t.Fatal(err)
	}
	next := func(want firewalld.EventKind) {
		t.Helper()
		select {
		case ev := <-events:
			if ev.Kind != want || ev.Received.IsZero() {
				t.Errorf("event %+v, want %s", ev, want)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("no %s event", want)
		}
	}
	for range 2 {
		if err := c.Reload(ctx); err != nil {
			t.Fatal(err)
		}
	}
	next(firewalld.Reloaded)
	next(firewalld.Reloaded)
	select {
	case ev := <-events:
		t.Errorf("two reloads gave a third event %+v", ev)
	case <-time.After(300 * time.Millisecond):
	}
	if err := n.KillFirewalld(ctx); err != nil {
		t.Fatal(err)
	}
	next(firewalld.Stopped)
	if err := n.StartFirewalld(ctx); err != nil {
		t.Fatal(err)
	}
	next(firewalld.Started)
	if info, err := c.Info(ctx); err != nil || info.State != "RUNNING" {
		t.Errorf("after Started: %+v, %v; want RUNNING", info, err)
	}
	stop()
	select {
	case _, ok := <-events:
		if ok {
			t.Error("an event after the context ended")
		}
	case <-time.After(5 * time.Second):
		t.Error("the channel stayed open after the context ended")
	}

	// A connection that goes away ends the watch too; the caller dials again.
	events, err = c.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	select {
	case _, ok := <-events:
		if ok {
			t.Error("an event after Close")
		}
	case <-time.After(5 * time.Second):
		t.Error("the channel stayed open after Close")
	}
	if _, err := c.Info(ctx); !errors.Is(err, firewalld.ErrDisconnected) {
		t.Errorf("a call after Close = %v, want ErrDisconnected", err)
	}
}
