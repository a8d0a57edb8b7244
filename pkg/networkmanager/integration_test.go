package networkmanager

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/calico-prep/calico-prep/pkg/calico"

	"github.com/calico-prep/calico-prep/pkg/check"
	"github.com/calico-prep/calico-prep/pkg/config"
	"github.com/calico-prep/calico-prep/test/testbed"
	"github.com/calico-prep/calico-prep/test/testkit"
)

// These tests run against real NetworkManager (1.42 on this machine) on a private bus in a
// sandboxed node (see test/testbed). They fail, never skip, when the node cannot start.

func testContext(t testing.TB) context.Context { return testkit.Context(t, 3*time.Minute) }

// nodeOptions points the checks at the node's configuration: the node's conf.d, its
// NetworkManager.conf next to it, the host's /usr/lib conf.d (NetworkManager in the node
// reads that one) and the node's private /run conf.d.
func nodeOptions(n *testbed.Node) Options {
	return Options{
		Mode:           config.ModeOn,
		ConfDir:        n.NMConfDir,
		SystemConfDirs: []string{"/usr/lib/NetworkManager/conf.d", filepath.Join(n.Dir, "run", "NetworkManager", "conf.d")},
		Protected:      func() []string { return []string{n.Uplink} },
	}
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

// statuses reads every real device NetworkManager knows, by interface name.
func statuses(t testing.TB, ctx context.Context, c *Client) map[string]DeviceStatus {
	t.Helper()
	devs, err := c.GetAllDevices(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]DeviceStatus{}
	for _, d := range devs {
		st, err := d.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Real {
			out[st.Interface] = st
		}
	}
	return out
}

// calicoLinks are the Calico links a node with Options.Calico has.
var calicoLinks = []string{testbed.CaliVeth, "tunl0", "vxlan.calico"}

// changing are the calls among calls that can change NetworkManager's state.
func changing(calls []string) []string {
	var out []string
	for _, call := range calls {
		if call == managerIface+".Reload" || call == deviceIface+".SetManaged" || call == propertiesIface+".Set" {
			out = append(out, call)
		}
	}
	return out
}

func entryOf(t testing.TB, rep check.Report, name string) check.Entry {
	t.Helper()
	e, ok := rep.Entry(name)
	if !ok {
		t.Fatalf("no entry %s in %+v", name, rep)
	}
	return e
}

// TestApplyLive is the first scenario: Calico's links managed before; one pass writes
// the drop-in and applies it live; every Calico device unmanaged, the uplink still managed;
// a second pass writes nothing and makes no state-changing call; the operator's own drop-in
// is byte-identical after apply and cleanup. The operator's file also holds a [device]
// section with managed=1 for cali*, which NetworkManager ranks below unmanaged-devices.
func TestApplyLive(t *testing.T) {
	ctx := testContext(t)
	n := testbed.Up(t, testbed.Options{Name: "nm-live", NetworkManager: true, Calico: true})
	c := dial(t, ctx, n)
	operator := filepath.Join(n.NMConfDir, "50-operator.conf")
	operatorText := []byte("# the operator's own drop-in\n[keyfile]\nunmanaged-devices=interface-name:docker*\n\n[device-cali]\nmatch-device=interface-name:cali*\nmanaged=1\n")
	if err := os.WriteFile(operator, operatorText, 0o640); err != nil {
		t.Fatal(err)
	}
	operatorStat, _ := os.Stat(operator)

	before := statuses(t, ctx, c)
	for _, l := range []string{testbed.CaliVeth, "tunl0", n.Uplink} {
		if st, ok := before[l]; !ok || st.unmanaged() {
			t.Fatalf("before: %s is %+v (present %v), want managed", l, st, ok)
		}
	}
	t.Logf("before: %v", before)

	m := n.MonitorCalls(t, c.conn)
	checks := Checks(c, nodeOptions(n))

	// Pass 1, drop-in only: the Reload alone must make the Calico devices unmanaged, which
	// proves NetworkManager reads "unmanaged-devices+=" and ranks it above [device] managed=1.
	runner := &check.Runner{Mode: check.Reconcile}
	rep := runner.Run(ctx, checks[:1])
	if e := entryOf(t, rep, CheckDropIn); e.Status != check.Pass || !e.Applied {
		t.Fatalf("drop-in pass: %+v", e)
	}
	after := statuses(t, ctx, c)
	for _, l := range calicoLinks {
		if st, ok := after[l]; !ok || !st.unmanaged() {
			t.Errorf("after Reload: %s is %+v (present %v), want State 10 and Managed false", l, st, ok)
		}
	}
	if st := after[n.Uplink]; st.unmanaged() {
		t.Errorf("after Reload: uplink %s is %+v, want managed", n.Uplink, st)
	}
	rep = runner.Run(ctx, checks)
	for _, e := range rep.Entries {
		if e.Status != check.Pass || e.Applied {
			t.Errorf("first full pass: %+v", e)
		}
	}
	e := entryOf(t, rep, CheckUnmanaged)
	for _, l := range calicoLinks {
		if e.Facts[FactUnmanagedPrefix+l] != "true" {
			t.Errorf("fact for %s = %q, want true (facts %v)", l, e.Facts[FactUnmanagedPrefix+l], e.Facts)
		}
	}
	if _, ok := e.Facts[FactUnmanagedPrefix+n.Uplink]; ok {
		t.Errorf("the uplink is among the Calico devices: %v", e.Facts)
	}
	if got := changing(m.Take(t, ctx)); !slices.Equal(got, []string{managerIface + ".Reload"}) {
		t.Errorf("state-changing calls of the first pass: %q, want one Reload", got)
	}

	own := filepath.Join(n.NMConfDir, ownFile)
	data, err := os.ReadFile(own)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range calico.UnmanagedGlobs() {
		if !strings.Contains(string(data), "interface-name:"+p) {
			t.Errorf("drop-in lacks %s:\n%s", p, data)
		}
	}
	st1, _ := os.Stat(own)

	// Pass 2: nothing to do, nothing written, no state-changing call.
	m.Take(t, ctx)
	rep = runner.Run(ctx, checks)
	for _, e := range rep.Entries {
		if e.Status != check.Pass || e.Applied {
			t.Errorf("second pass: %+v", e)
		}
	}
	if got := changing(m.Take(t, ctx)); len(got) != 0 {
		t.Errorf("second pass: the bus saw state-changing calls %q", got)
	}
	if st2, _ := os.Stat(own); !st2.ModTime().Equal(st1.ModTime()) || !os.SameFile(st1, st2) {
		t.Errorf("second pass rewrote the drop-in")
	}

	// Cleanup removes only the drop-in and reloads.
	m.Take(t, ctx)
	if err := Cleanup(ctx, c, n.NMConfDir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(own); !os.IsNotExist(err) {
		t.Errorf("drop-in still there: %v", err)
	}
	if got := changing(m.Take(t, ctx)); !slices.Equal(got, []string{managerIface + ".Reload"}) {
		t.Errorf("cleanup's state-changing calls: %q, want one Reload", got)
	}
	got, err := os.ReadFile(operator)
	if err != nil || !bytes.Equal(got, operatorText) {
		t.Errorf("operator's drop-in changed: %q, %v", got, err)
	}
	if st, _ := os.Stat(operator); !st.ModTime().Equal(operatorStat.ModTime()) || st.Mode() != operatorStat.Mode() {
		t.Errorf("operator's drop-in touched: %v %v, was %v %v", st.ModTime(), st.Mode(), operatorStat.ModTime(), operatorStat.Mode())
	}
	// Without calico-prep's drop-in (and with no runtime switch made), NetworkManager takes
	// the veth back: the drop-in was what kept it unmanaged.
	deadline := time.Now().Add(10 * time.Second)
	for statuses(t, ctx, c)[testbed.CaliVeth].unmanaged() {
		if time.Now().After(deadline) {
			t.Fatal("after cleanup the cali veth stays unmanaged")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestConflictAgreesWithDaemon: an operator file read after calico-prep's replaces
// unmanaged-devices. The check names it, NetworkManager agrees (the Reload leaves the veth
// managed), and the runtime switch still makes every Calico device unmanaged.
func TestConflictAgreesWithDaemon(t *testing.T) {
	ctx := testContext(t)
	n := testbed.Up(t, testbed.Options{Name: "nm-conflict", NetworkManager: true, Calico: true})
	c := dial(t, ctx, n)
	if err := os.WriteFile(filepath.Join(n.NMConfDir, "zz-docker.conf"), []byte("[keyfile]\nunmanaged-devices=interface-name:docker*\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	checks := Checks(c, nodeOptions(n))
	runner := &check.Runner{Mode: check.Reconcile}
	e := entryOf(t, runner.Run(ctx, checks[:1]), CheckDropIn)
	if e.Reason != "OperatorConfigConflict" || !strings.Contains(e.Message, "zz-docker.conf line 2 replaces unmanaged-devices") || !e.Applied {
		t.Fatalf("drop-in check: %+v", e)
	}
	if st := statuses(t, ctx, c)[testbed.CaliVeth]; st.unmanaged() {
		t.Fatalf("NetworkManager unmanaged the veth although zz-docker.conf overrides the drop-in: %+v", st)
	}
	m := n.MonitorCalls(t, c.conn)
	e = entryOf(t, runner.Run(ctx, checks[1:]), CheckUnmanaged)
	if e.Status != check.Pass || !e.Applied {
		t.Fatalf("device check: %+v", e)
	}
	if got := changing(m.Take(t, ctx)); len(got) < 1 {
		t.Fatal("no runtime switch was made: the bus saw no state-changing call")
	}
	after := statuses(t, ctx, c)
	for _, l := range calicoLinks {
		if !after[l].unmanaged() {
			t.Errorf("%s: %+v, want unmanaged", l, after[l])
		}
	}
	if after[n.Uplink].unmanaged() {
		t.Errorf("uplink unmanaged: %+v", after[n.Uplink])
	}
}

// agent is the smallest daemon loop: run the checks on start and on every event.
type agent struct {
	mu      sync.Mutex
	last    check.Report
	passes  int
	updated chan struct{}
}

func runAgent(t testing.TB, ctx context.Context, c *Client, checks []check.Check) *agent {
	t.Helper()
	events, err := c.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a := &agent{updated: make(chan struct{}, 1)}
	runner := &check.Runner{Mode: check.Reconcile}
	// pass runs the checks and returns when to run again unasked, as the daemon's loop does
	// for a check that is settling (e.g. NetworkManager still starting when its last signal
	// came): nil for never.
	pass := func() <-chan time.Time {
		rep := runner.Run(ctx, checks)
		a.mu.Lock()
		a.last, a.passes = rep, a.passes+1
		a.mu.Unlock()
		select {
		case a.updated <- struct{}{}:
		default:
		}
		if d := rep.RecheckIn(); d > 0 {
			return time.After(d)
		}
		return nil
	}
	recheck := pass()
	go func() {
		for {
			select {
			case _, ok := <-events:
				if !ok {
					return
				}
				drain(events)
			case <-recheck:
			}
			recheck = pass()
		}
	}()
	return a
}

// waitFor waits for a report that satisfies cond.
func (a *agent) waitFor(t testing.TB, within time.Duration, cond func(check.Report) string) {
	t.Helper()
	deadline := time.After(within)
	for {
		a.mu.Lock()
		msg := cond(a.last)
		a.mu.Unlock()
		if msg == "" {
			return
		}
		select {
		case <-a.updated:
		case <-deadline:
			t.Fatalf("after %s: %s", within, msg)
		}
	}
}

func allUnmanaged(names ...string) func(check.Report) string {
	return func(rep check.Report) string {
		e, ok := rep.Entry(CheckUnmanaged)
		if !ok || e.Status != check.Pass {
			return fmt.Sprintf("device check: %+v", e)
		}
		for _, n := range names {
			if e.Facts[FactUnmanagedPrefix+n] != "true" {
				return fmt.Sprintf("%s not yet reported unmanaged: %v", n, e.Facts)
			}
		}
		return ""
	}
}

// TestStaysApplied is the second scenario: a cali veth created after the agent
// started becomes unmanaged without a restart, and after NetworkManager is stopped and
// started again every Calico device is still unmanaged and the drop-in intact.
func TestStaysApplied(t *testing.T) {
	ctx := testContext(t)
	n := testbed.Up(t, testbed.Options{Name: "nm-stays", NetworkManager: true, Calico: true})
	c := dial(t, ctx, n)
	a := runAgent(t, ctx, c, Checks(c, nodeOptions(n)))
	a.waitFor(t, 10*time.Second, allUnmanaged(calicoLinks...))
	own, err := os.ReadFile(filepath.Join(n.NMConfDir, ownFile))
	if err != nil {
		t.Fatal(err)
	}

	const late = "calilate0000001"
	if err := n.AddCaliVeth(ctx, late); err != nil {
		t.Fatal(err)
	}
	a.waitFor(t, 10*time.Second, allUnmanaged(append(calicoLinks, late)...))
	if st := statuses(t, ctx, c)[late]; !st.unmanaged() {
		t.Fatalf("%s: %+v", late, st)
	}

	if err := n.StopNetworkManager(ctx); err != nil {
		t.Fatal(err)
	}
	a.waitFor(t, 10*time.Second, func(rep check.Report) string {
		if e, _ := rep.Entry(CheckUnmanaged); e.Reason != "NetworkManagerNotRunning" {
			return "the agent did not notice NetworkManager leave: " + e.Reason
		}
		return ""
	})
	if err := n.StartNetworkManager(ctx); err != nil {
		t.Fatal(err)
	}
	a.waitFor(t, 10*time.Second, allUnmanaged(append(calicoLinks, late)...))
	after := statuses(t, ctx, c)
	for _, l := range append(calicoLinks, late) {
		if !after[l].unmanaged() {
			t.Errorf("after restart %s: %+v", l, after[l])
		}
	}
	if after[n.Uplink].unmanaged() {
		t.Errorf("after restart the uplink is unmanaged: %+v", after[n.Uplink])
	}
	if got, err := os.ReadFile(filepath.Join(n.NMConfDir, ownFile)); err != nil || !bytes.Equal(got, own) {
		t.Errorf("drop-in after restart: %q, %v", got, err)
	}
}

// TestWatchEvents checks the event stream itself: stop and start, a new device by name, a
// device NetworkManager takes over.
func TestWatchEvents(t *testing.T) {
	ctx := testContext(t)
	n := testbed.Up(t, testbed.Options{Name: "nm-watch", NetworkManager: true})
	c := dial(t, ctx, n)
	wctx, cancel := context.WithCancel(ctx)
	events, err := c.Watch(wctx)
	if err != nil {
		t.Fatal(err)
	}
	next := func(want EventKind, device string) {
		t.Helper()
		timeout := time.After(20 * time.Second)
		for {
			select {
			case ev, ok := <-events:
				if !ok {
					t.Fatalf("events closed while waiting for %s %s", want, device)
				}
				if ev.Kind == want && (device == "" || ev.Device == device) {
					return
				}
			case <-timeout:
				t.Fatalf("no %s event for %q", want, device)
			}
		}
	}
	const veth = "caliwatch000001"
	if err := n.AddCaliVeth(ctx, veth); err != nil {
		t.Fatal(err)
	}
	next(EventDeviceAdded, veth)
	if err := n.StopNetworkManager(ctx); err != nil {
		t.Fatal(err)
	}
	next(EventStopped, "")
	if err := n.StartNetworkManager(ctx); err != nil {
		t.Fatal(err)
	}
	next(EventStarted, "")
	// NetworkManager 1.58 takes over devices it finds at start before it takes its bus name,
	// so their StateChanged signals reach nobody; EventStarted covers them. A device that
	// appears later is taken over while NetworkManager owns its name, on every version.
	const later = "caliwatch000002"
	if err := n.AddCaliVeth(ctx, later); err != nil {
		t.Fatal(err)
	}
	next(EventDeviceManaged, later)
	cancel()
	for range events {
	}
}

// TestClientAgainstDaemon covers the typed client's reads against the real daemon.
func TestClientAgainstDaemon(t *testing.T) {
	ctx := testContext(t)
	n := testbed.Up(t, testbed.Options{Name: "nm-client", NetworkManager: true, Calico: true})
	c := dial(t, ctx, n)
	if up, err := c.Running(ctx); err != nil || !up {
		t.Fatalf("Running = %v, %v", up, err)
	}
	v, err := c.Version(ctx)
	if err != nil || !strings.HasPrefix(v, "1.") {
		t.Fatalf("Version = %q, %v", v, err)
	}
	d, err := c.GetDeviceByIpIface(ctx, n.Uplink)
	if err != nil {
		t.Fatal(err)
	}
	name, err1 := d.Interface(ctx)
	state, err2 := d.State(ctx)
	managed, err3 := d.Managed(ctx)
	if name != n.Uplink || state == StateUnmanaged || !managed || err1 != nil || err2 != nil || err3 != nil {
		t.Fatalf("uplink: %q %v %v (%v %v %v)", name, state, managed, err1, err2, err3)
	}
	if _, err := c.GetDeviceByIpIface(ctx, "nosuchlink0"); !errors.Is(err, ErrNoDevice) {
		t.Fatalf("unknown device: %v", err)
	}
	devs, err := c.GetDevices(ctx)
	all, err2 := c.GetAllDevices(ctx)
	if err != nil || err2 != nil || len(devs) == 0 || len(all) < len(devs) {
		t.Fatalf("GetDevices %d (%v), GetAllDevices %d (%v)", len(devs), err, len(all), err2)
	}
	if starting, err := c.Starting(ctx); err != nil || starting {
		t.Fatalf("Starting of a started NetworkManager = %v, %v", starting, err)
	}
	if err := n.StopNetworkManager(ctx); err != nil {
		t.Fatal(err)
	}
	if up, err := c.Running(ctx); err != nil || up {
		t.Fatalf("Running after stop = %v, %v", up, err)
	}
	if _, err := c.Starting(ctx); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Starting after stop: %v, want ErrNotRunning", err)
	}
	if _, err := c.Version(ctx); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Version after stop: %v, want ErrNotRunning", err)
	}
	// Mode auto: not applicable; mode on: a failure naming the cause.
	opts := nodeOptions(n)
	opts.Mode = config.ModeAuto
	if r := Checks(c, opts)[1].Verify(ctx); r.Status != check.NotApplicable {
		t.Fatalf("auto without NetworkManager: %+v", r)
	}
	opts.Mode = config.ModeOn
	if r := Checks(c, opts)[1].Verify(ctx); r.Status != check.Fail || r.Reason != "NetworkManagerNotRunning" || !r.Settling {
		t.Fatalf("on without NetworkManager: %+v, want a settling failure (it may be restarting)", r)
	}
	// A connection that is gone settles too: the daemon dials again.
	_ = c.Close()
	if _, err := c.Running(ctx); !errors.Is(err, ErrDisconnected) {
		t.Fatalf("Running on a closed connection: %v, want ErrDisconnected", err)
	}
	if r := Checks(c, opts)[1].Verify(ctx); r.Status != check.Fail || !r.Settling {
		t.Fatalf("on a closed connection: %+v, want a settling failure", r)
	}
}

// TestSetManagedByVersion runs against whichever NetworkManager the node has (the version
// matrix sets it): the daemon is the version the test bed was asked for, and switching a
// Calico device to unmanaged uses Device.SetManaged on 1.58 and later and the Managed property
// before, as the bus monitor sees it; either way the device ends up unmanaged.
func TestSetManagedByVersion(t *testing.T) {
	ctx := testContext(t)
	n := testbed.Up(t, testbed.Options{Name: "nm-setmanaged", NetworkManager: true, Calico: true})
	c := dial(t, ctx, n)
	v, err := c.Version(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n.NetworkManagerVersion != testbed.Debian && v != n.NetworkManagerVersion {
		t.Fatalf("NetworkManager reports version %s, the test bed was asked for %s", v, n.NetworkManagerVersion)
	}
	want := propertiesIface + ".Set"
	if versionAtLeast(v, 1, 58) {
		want = deviceIface + ".SetManaged"
	}
	d, err := c.GetDeviceByIpIface(ctx, testbed.CaliVeth)
	if err != nil {
		t.Fatal(err)
	}
	m := n.MonitorCalls(t, c.conn)
	if err := d.SetManaged(ctx, false); err != nil {
		t.Fatal(err)
	}
	if got := changing(m.Take(t, ctx)); !slices.Equal(got, []string{want}) {
		t.Errorf("NetworkManager %s: state-changing calls %v, want [%s]", v, got, want)
	}
	testkit.Eventually(t, 10*time.Second, func() string {
		st, err := d.Status(ctx)
		if err != nil || !st.unmanaged() {
			return fmt.Sprintf("%s after SetManaged(false): %+v, %v", testbed.CaliVeth, st, err)
		}
		return ""
	})
}
