package firewalld

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/calico-prep/calico-prep/pkg/check"
	"github.com/calico-prep/calico-prep/pkg/config"
)

// manager is the state behind one set of checks.
type manager struct {
	c   *Client
	o   Options
	log *slog.Logger
	// mu serialises the read-modify-write of the state file between applies.
	mu sync.Mutex

	// What the checks read from firewalld, shared by the checks of a pass: each method call
	// costs about half a millisecond of firewalld's one Python thread. While a Watch runs, a
	// read also serves later passes until firewalld sends any signal (it signals every change),
	// for at most reuseFor; so a pass woken by a pod's veth asks firewalld nothing. Every apply
	// forgets them.
	info     check.PassCache[Info]
	zoneName check.PassCache[zoneOf]
	rules    check.PassCache[zoneState] // the zone that receives the rules
	fwdZone  check.PassCache[zoneState]
	policies check.PassCache[map[string]policyState]
	// running is whether firewalld/running last found firewalld RUNNING. Nothing read from a
	// firewalld that is still loading (INIT), or failed, serves a later pass: firewalld
	// signals nothing when it finishes loading.
	running atomic.Bool
	// loading is whether firewalld/running last found firewalld loading its configuration
	// (INIT): the other checks wait for it rather than read, or add to, half a firewall.
	loading atomic.Bool
}

// settleRecheck is how soon a check asks again while firewalld is starting: it says nothing
// when it has finished loading (2–3 s on a small machine).
const settleRecheck = 500 * time.Millisecond

// reuseFor bounds how long a read serves later passes while firewalld is silent: a signal lost
// on the way costs at most this long.
const reuseFor = time.Minute

// zoneOf is the zone an interface is bound to, or the default zone.
type zoneOf struct{ iface, zone string }

// zoneState is a zone's runtime and permanent settings; nil where it does not exist.
type zoneState struct {
	name               string
	runtime, permanent *ZoneSettings
}

// policyState is a policy's runtime and permanent settings; nil where it does not exist.
type policyState struct{ runtime, permanent *PolicySettings }

func (m *manager) caches() {
	p := m.o.Passes
	m.info.Passes, m.zoneName.Passes, m.rules.Passes, m.fwdZone.Passes, m.policies.Passes = p, p, p, p, p
	if m.c == nil {
		return
	}
	m.info.Version, m.info.MaxAge = m.version, reuseFor
	m.zoneName.Version, m.zoneName.MaxAge = m.version, reuseFor
	m.rules.Version, m.rules.MaxAge = m.version, reuseFor
	m.fwdZone.Version, m.fwdZone.MaxAge = m.version, reuseFor
	m.policies.Version, m.policies.MaxAge = m.version, reuseFor
}

// version is the caches' Version: firewalld's signal count while it is known to be RUNNING.
func (m *manager) version() uint64 {
	if !m.running.Load() {
		return 0
	}
	return m.c.Changes()
}

// forget drops what was read; an apply changed it.
func (m *manager) forget() {
	m.info.Forget()
	m.zoneName.Forget()
	m.rules.Forget()
	m.fwdZone.Forget()
	m.policies.Forget()
}

// Checks returns the firewalld checks in the order they must run: firewalld/running, one per
// rule (e.g. firewalld/port-179-tcp, firewalld/protocol-ipencap), then, with forwarding,
// firewalld/forwarding-zone and firewalld/forwarding-policy. A nil client means there is no
// system bus. With Mode off there are none.
//
// When firewalld is not running every check is not applicable (Mode auto) or fails (Mode on).
// A failing rule check's message is the plan: what would be added, and where.
func Checks(c *Client, opts Options) []check.Check {
	if opts.Mode == config.ModeOff {
		return nil
	}
	m := &manager{c: c, o: opts, log: opts.logger().With("component", "firewalld")}
	m.caches()
	checks := []check.Check{{Name: "firewalld/running", Verify: m.verifyRunning}}
	for _, r := range opts.Rules {
		checks = append(checks, check.Check{
			Name:   r.CheckName(),
			Verify: func(ctx context.Context) check.Result { return m.verifyRule(ctx, r) },
			Apply:  func(ctx context.Context) error { return m.applyRule(ctx, r) },
		})
	}
	if opts.RemoveStale {
		checks = append(checks, check.Check{Name: StaleCheckName, Verify: m.verifyStale, Apply: m.applyStale})
	}
	if opts.Forwarding {
		checks = append(checks,
			check.Check{Name: "firewalld/forwarding-zone", Verify: m.verifyZone, Apply: m.applyZone},
			check.Check{Name: "firewalld/forwarding-policy", Verify: m.verifyPolicies, Apply: m.applyPolicies},
		)
	}
	return checks
}

// notRunning is the result while firewalld is not on the bus. It settles: firewalld may be
// restarting, and its return is an event (its bus name taken again, or a connection to the
// bus made again).
func (m *manager) notRunning() check.Result {
	if m.o.Mode == config.ModeOn {
		return check.Failed("FirewalldNotRunning", "firewalld is not running on the system bus, and --firewalld=on requires it").Settle(0)
	}
	return check.Skipped("FirewalldNotRunning", "firewalld is not running on the system bus").Settle(0)
}

// errored turns a failed D-Bus read into a result: firewalld's absence is the mode's answer,
// a lost connection or a starting firewalld settles, anything else is a verify error.
func (m *manager) errored(err error) check.Result {
	switch {
	case errors.Is(err, ErrNotRunning):
		return m.notRunning()
	case errors.Is(err, ErrDisconnected), errors.Is(err, ErrStarting):
		return check.Errored(err).Settle(settleRecheck)
	}
	return check.Errored(err)
}

// starting is the result of every other check while firewalld loads its configuration.
func (m *manager) starting() (check.Result, bool) {
	if !m.loading.Load() {
		return check.Result{}, false
	}
	return check.Failed("FirewalldNotReady", "firewalld is loading its configuration").Settle(settleRecheck), true
}

func (m *manager) verifyRunning(ctx context.Context) check.Result {
	m.loading.Store(false)
	if m.c == nil {
		return m.notRunning()
	}
	up, err := m.c.Running(ctx)
	if err != nil || !up {
		m.running.Store(false)
	}
	if err != nil {
		// The bus itself did not answer: the connection is going or gone.
		return check.Errored(fmt.Errorf("ask the bus for firewalld: %w", err)).Settle(settleRecheck)
	}
	if !up {
		return m.notRunning()
	}
	info, err := m.info.Get(ctx, m.c.Info)
	if err != nil {
		m.running.Store(false)
		return m.errored(err)
	}
	m.running.Store(info.State == "RUNNING")
	var r check.Result
	switch info.State {
	case "RUNNING":
		r = check.Passed("firewalld %s is running", info.Version)
	case "FAILED":
		r = check.Failed("FirewalldFailed", "firewalld %s is in state FAILED: its permanent configuration did not load", info.Version)
	default:
		// Still loading (INIT): it will be RUNNING in a few seconds and say nothing.
		m.loading.Store(true)
		r = check.Failed("FirewalldNotReady", "firewalld %s is in state %s", info.Version, info.State).Settle(settleRecheck)
	}
	return r.With("version", info.Version).With("state", info.State)
}

// zone resolves the zone that receives the rules: --firewalld-zone, else the zone of the
// node-IP interface, else the default zone.
func (m *manager) zone(ctx context.Context) (string, error) {
	if m.o.Zone != "" {
		return m.o.Zone, nil
	}
	var iface string
	if m.o.NodeInterface != nil {
		var err error
		if iface, err = m.o.NodeInterface(ctx); err != nil {
			return "", fmt.Errorf("find the node-IP interface for the firewalld zone: %w", err)
		}
	}
	resolve := func(ctx context.Context) (zoneOf, error) { return m.resolveZone(ctx, iface) }
	z, err := m.zoneName.Get(ctx, resolve)
	if err == nil && z.iface != iface {
		m.zoneName.Forget() // the node IP moved to another interface
		z, err = m.zoneName.Get(ctx, resolve)
	}
	return z.zone, err
}

func (m *manager) resolveZone(ctx context.Context, iface string) (zoneOf, error) {
	if iface != "" {
		z, err := m.c.ZoneOfInterface(ctx, iface)
		if err != nil {
			return zoneOf{}, fmt.Errorf("get firewalld zone of interface %q: %w", iface, err)
		}
		if z != "" {
			return zoneOf{iface, z}, nil
		}
	}
	z, err := m.c.DefaultZone(ctx)
	if err != nil {
		return zoneOf{}, fmt.Errorf("get default firewalld zone: %w", err)
	}
	return zoneOf{iface, z}, nil
}

// readZone reads a zone's permanent and runtime settings; a missing one is nil.
func (m *manager) readZone(ctx context.Context, name string) (zoneState, error) {
	st := zoneState{name: name}
	pz, err := m.c.ConfigZone(ctx, name)
	switch {
	case errors.Is(err, ErrInvalidZone):
	case err != nil:
		return st, err
	default:
		s, err := pz.Settings(ctx)
		if err != nil {
			return st, err
		}
		st.permanent = &s
	}
	s, err := m.c.ZoneSettings(ctx, name)
	switch {
	case errors.Is(err, ErrInvalidZone):
	case err != nil:
		return st, err
	default:
		st.runtime = &s
	}
	return st, nil
}

// preflight checks everything an apply relies on before it changes anything, so that bad
// input (a bad rule, a zone that does not exist) leaves firewalld as it was. It returns the
// zone that receives the rules, permanent configuration and all.
func (m *manager) preflight(ctx context.Context) (*ConfigZone, error) {
	if m.c == nil {
		return nil, ErrNotRunning
	}
	if err := m.o.Validate(); err != nil {
		return nil, err
	}
	zone, err := m.zone(ctx)
	if err != nil {
		return nil, err
	}
	pz, err := m.c.ConfigZone(ctx, zone)
	if err != nil {
		return nil, zoneError(zone, err)
	}
	if _, err := m.c.ZoneSettings(ctx, zone); err != nil {
		return nil, zoneError(zone, err)
	}
	return pz, nil
}

func zoneError(zone string, err error) error {
	if errors.Is(err, ErrInvalidZone) {
		return fmt.Errorf("firewalld zone %q does not exist: %w", zone, ErrInvalidZone)
	}
	return fmt.Errorf("look up firewalld zone %q: %w", zone, err)
}

// queryRule reports whether the rule is in the zone's runtime and permanent configuration.
func (m *manager) queryRule(ctx context.Context, zone string, r Rule) (runtime, permanent bool, err error) {
	pz, err := m.c.ConfigZone(ctx, zone)
	if err != nil {
		return false, false, err
	}
	return m.queryIn(ctx, pz, r)
}

func (m *manager) queryIn(ctx context.Context, pz *ConfigZone, r Rule) (runtime, permanent bool, err error) {
	if r.IPProtocol != "" {
		runtime, err = m.c.QueryProtocol(ctx, pz.Name, r.IPProtocol)
	} else {
		runtime, err = m.c.QueryPort(ctx, pz.Name, r.portArg(), r.Port.Protocol)
	}
	if err != nil {
		return false, false, err
	}
	if r.IPProtocol != "" {
		permanent, err = pz.QueryProtocol(ctx, r.IPProtocol)
	} else {
		permanent, err = pz.QueryPort(ctx, r.portArg(), r.Port.Protocol)
	}
	return runtime, permanent, err
}

// present reports whether the rule is in the zone's runtime and permanent configuration, from
// the zone's settings as last read; firewalld itself answers only where they do not plainly
// hold the rule (a port by service name, a missing rule or zone).
func (m *manager) present(ctx context.Context, zone string, r Rule) (runtime, permanent bool, err error) {
	read := func(ctx context.Context) (zoneState, error) { return m.readZone(ctx, zone) }
	st, err := m.rules.Get(ctx, read)
	if err == nil && st.name != zone {
		m.rules.Forget()
		st, err = m.rules.Get(ctx, read)
	}
	if errors.Is(err, ErrNotRunning) || errors.Is(err, ErrDisconnected) {
		return false, false, err
	}
	// Otherwise, also when the settings could not be read (getZoneSettings2 and getSettings2
	// are firewalld 0.9 and later), firewalld answers for the rule itself.
	if err == nil && st.runtime != nil && st.permanent != nil && r.in(*st.runtime) && r.in(*st.permanent) {
		return true, true, nil
	}
	return m.queryRule(ctx, zone, r)
}

func (m *manager) verifyRule(ctx context.Context, r Rule) check.Result {
	if err := r.Validate(); err != nil {
		return check.Failed("InvalidRule", "%v", err)
	}
	if m.c == nil {
		return m.notRunning()
	}
	if res, ok := m.starting(); ok {
		return res
	}
	zone, err := m.zone(ctx)
	if err != nil {
		return m.errored(err)
	}
	rt, perm, err := m.present(ctx, zone, r)
	var res check.Result
	switch {
	case errors.Is(err, ErrInvalidZone):
		res = check.Failed("ZoneNotFound", "firewalld zone %q for %s does not exist", zone, r)
	case err != nil:
		return m.errored(err)
	case rt && perm:
		res = check.Passed("%s (%s) is open in firewalld zone %s, runtime and permanent", r, r.Why, zone)
	default:
		res = check.Failed("RuleMissing", "%s (%s) is missing from firewalld zone %s: would add it to %s configuration",
			r, r.Why, zone, layers(!rt, !perm))
	}
	return res.With(check.FactZone, zone).With(check.FactRule, r.String()).
		With(check.FactRuntime, strconv.FormatBool(rt)).With(check.FactPermanent, strconv.FormatBool(perm))
}

func layers(runtime, permanent bool) string {
	switch {
	case runtime && permanent:
		return "runtime and permanent"
	case runtime:
		return "runtime"
	case permanent:
		return "permanent"
	}
	return "no"
}

// applyRule adds the rule where it is missing and records each addition as calico-prep's. A
// rule that is there already belongs to whoever put it there and is not recorded.
func (m *manager) applyRule(ctx context.Context, r Rule) (err error) {
	defer m.forget()
	pz, err := m.preflight(ctx)
	if err != nil {
		return err
	}
	zone := pz.Name
	m.mu.Lock()
	defer m.mu.Unlock()
	st, err := loadState(m.o.StateDir)
	if err != nil {
		return err
	}
	rt, perm, err := m.queryIn(ctx, pz, r)
	if err != nil {
		return fmt.Errorf("query %s in firewalld zone %q: %w", r, zone, err)
	}
	own := st.rule(zone, r)
	// Each layer is recorded as calico-prep's before it is added, so that a crash between the
	// two, or a state directory that cannot be written, never leaves a rule that no record
	// names: cleanup removes exactly what was added. A record of a layer that never arrived
	// costs nothing: the next pass adds it, cleanup finds nothing to remove.
	record := func(o ownedRule) error {
		if o == own {
			return nil
		}
		st.setRule(o)
		if err := st.save(m.o.StateDir); err != nil {
			return fmt.Errorf("record %s in firewalld zone %q: %w", r, zone, err)
		}
		own = o
		return nil
	}
	if !rt {
		intent := own
		intent.Runtime = true
		if err := record(intent); err != nil {
			return err
		}
		if r.IPProtocol != "" {
			err = m.c.AddProtocol(ctx, zone, r.IPProtocol)
		} else {
			err = m.c.AddPort(ctx, zone, r.portArg(), r.Port.Protocol)
		}
		switch {
		case err == nil:
			m.log.Info("added rule", "rule", r.String(), "zone", zone, "config", "runtime")
		case errors.Is(err, ErrAlreadyEnabled):
			// Someone else added it meanwhile: theirs, not ours.
			theirs := own
			theirs.Runtime = false
			if err := record(theirs); err != nil {
				return err
			}
		default:
			// The record stays: the add may have been done without an answer.
			return fmt.Errorf("add %s to firewalld zone %q (runtime): %w", r, zone, err)
		}
	}
	if !perm {
		// Look the zone up again: after a reload its old object path may name another zone.
		if pz, err = m.c.ConfigZone(ctx, zone); err != nil {
			return fmt.Errorf("look up firewalld zone %q: %w", zone, err)
		}
		// The zone as packaged is recorded, like the rule, before the change.
		noted, err := st.notePackaged(ctx, pz)
		if err != nil {
			return fmt.Errorf("read firewalld zone %q before changing it: %w", zone, err)
		}
		if noted {
			if err := st.save(m.o.StateDir); err != nil {
				return fmt.Errorf("record firewalld zone %q before changing it: %w", zone, err)
			}
		}
		intent := own
		intent.Permanent = true
		if err := record(intent); err != nil {
			return err
		}
		if r.IPProtocol != "" {
			err = pz.AddProtocol(ctx, r.IPProtocol)
		} else {
			err = pz.AddPort(ctx, r.portArg(), r.Port.Protocol)
		}
		switch {
		case err == nil:
			m.log.Info("added rule", "rule", r.String(), "zone", zone, "config", "permanent")
		case errors.Is(err, ErrAlreadyEnabled):
			theirs := own
			theirs.Permanent = false
			if err := record(theirs); err != nil {
				return err
			}
		default:
			return fmt.Errorf("add %s to firewalld zone %q (permanent): %w", r, zone, err)
		}
	}
	return nil
}

// owns reports whether calico-prep created the zone or policy: the state file lists it, or,
// when that record was lost, its description carries the marker.
func owns(listed []string, name, description string) bool {
	return slices.Contains(listed, name) || strings.HasPrefix(description, ownedMarker)
}

func (m *manager) listed() state {
	st, err := loadState(m.o.StateDir)
	if err != nil {
		m.log.Warn("reading state", "err", err)
	}
	return st
}

// zoneDrift lists what have lacks of want; "" when it is as wanted. Interfaces the operator
// added to calico-prep's zone are left alone.
func zoneDrift(have, want ZoneSettings) string {
	var d []string
	if have.Target != want.Target {
		d = append(d, fmt.Sprintf("target %s, not %s", have.Target, want.Target))
	}
	if have.Forward != want.Forward {
		d = append(d, fmt.Sprintf("forward %t", have.Forward))
	}
	var missing []string
	for _, i := range want.Interfaces {
		if !slices.Contains(have.Interfaces, i) {
			missing = append(missing, i)
		}
	}
	if len(missing) > 0 {
		d = append(d, "without interfaces "+strings.Join(missing, ","))
	}
	return strings.Join(d, "; ")
}

func (m *manager) verifyZone(ctx context.Context) check.Result {
	if m.c == nil {
		return m.notRunning()
	}
	if res, ok := m.starting(); ok {
		return res
	}
	want := forwardingZoneSettings()
	st, err := m.fwdZone.Get(ctx, func(ctx context.Context) (zoneState, error) { return m.readZone(ctx, ForwardingZone) })
	if err != nil {
		return m.errored(err)
	}
	perm, rt := "missing", "missing" // what is wrong; "" is fine
	if st.permanent != nil {
		if !owns(m.listed().Zones, ForwardingZone, st.permanent.Description) {
			return check.Failed("ZoneNotOwned", "firewalld zone %s exists but was not created by calico-prep; rename it or turn off --firewalld-forwarding", ForwardingZone).
				With(check.FactZone, ForwardingZone)
		}
		perm = zoneDrift(*st.permanent, want)
	}
	if st.runtime != nil {
		rt = zoneDrift(*st.runtime, want)
	}
	var res check.Result
	if perm == "" && rt == "" {
		res = check.Passed("firewalld zone %s holds Calico's interfaces (%s) with target ACCEPT, runtime and permanent",
			ForwardingZone, strings.Join(want.Interfaces, ","))
	} else {
		res = check.Failed("ForwardingZoneMissing", "firewalld zone %s is not as Calico needs it (%s): would create or update it with interfaces %s and target ACCEPT",
			ForwardingZone, problems(rt, perm), strings.Join(want.Interfaces, ","))
	}
	return res.With(check.FactZone, ForwardingZone).With(check.FactRuntime, strconv.FormatBool(rt == "")).With(check.FactPermanent, strconv.FormatBool(perm == ""))
}

func problems(runtime, permanent string) string {
	var p []string
	if permanent != "" {
		p = append(p, "permanent: "+permanent)
	}
	if runtime != "" {
		p = append(p, "runtime: "+runtime)
	}
	return strings.Join(p, "; ")
}

// applyZone creates or repairs calico-prep's zone. A new zone reaches the runtime
// configuration only through a reload, which also drops everyone's runtime-only changes; that
// happens once, when the zone is first created (or someone removed it).
func (m *manager) applyZone(ctx context.Context) error {
	defer m.forget()
	if _, err := m.preflight(ctx); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	st, err := loadState(m.o.StateDir)
	if err != nil {
		return err
	}
	want := forwardingZoneSettings()
	pz, err := m.c.ConfigZone(ctx, ForwardingZone)
	switch {
	case errors.Is(err, ErrInvalidZone):
		if _, err := m.c.AddConfigZone(ctx, ForwardingZone, want); err != nil {
			return fmt.Errorf("create firewalld zone %q: %w", ForwardingZone, err)
		}
		m.log.Info("created zone", "zone", ForwardingZone)
	case err != nil:
		return fmt.Errorf("look up firewalld zone %q: %w", ForwardingZone, err)
	default:
		have, err := pz.Settings(ctx)
		if err != nil {
			return fmt.Errorf("read firewalld zone %q: %w", ForwardingZone, err)
		}
		if !owns(st.Zones, ForwardingZone, have.Description) {
			return fmt.Errorf("update firewalld zone %q: it exists and was not created by calico-prep", ForwardingZone)
		}
		if zoneDrift(have, want) != "" {
			for _, i := range have.Interfaces {
				if !slices.Contains(want.Interfaces, i) {
					want.Interfaces = append(want.Interfaces, i)
				}
			}
			if err := pz.Update(ctx, want); err != nil {
				return fmt.Errorf("update firewalld zone %q: %w", ForwardingZone, err)
			}
			m.log.Info("updated zone", "zone", ForwardingZone)
		}
	}
	if !slices.Contains(st.Zones, ForwardingZone) {
		st.Zones = append(st.Zones, ForwardingZone)
		if err := st.save(m.o.StateDir); err != nil {
			return err
		}
	}
	have, err := m.c.ZoneSettings(ctx, ForwardingZone)
	switch {
	case errors.Is(err, ErrInvalidZone):
		return m.reload(ctx, "zone "+ForwardingZone+" is new")
	case err != nil:
		return fmt.Errorf("read runtime firewalld zone %q: %w", ForwardingZone, err)
	case have.Target != want.Target || have.Forward != want.Forward:
		// Neither can be changed at runtime.
		return m.reload(ctx, "zone "+ForwardingZone+" changed target or forwarding")
	}
	for _, i := range want.Interfaces {
		if slices.Contains(have.Interfaces, i) {
			continue
		}
		if err := m.c.AddInterface(ctx, ForwardingZone, i); err != nil && !errors.Is(err, ErrAlreadyEnabled) {
			return fmt.Errorf("add interface %q to firewalld zone %q (runtime): %w", i, ForwardingZone, err)
		}
	}
	return nil
}

func (m *manager) reload(ctx context.Context, why string) error {
	m.log.Info("reloading firewalld", "why", why)
	if err := m.c.Reload(ctx); err != nil {
		return fmt.Errorf("reload firewalld: %w", err)
	}
	return nil
}

// policiesSupported reports whether a firewalld version has policy objects (0.9 and later).
func policiesSupported(version string) bool {
	major, rest, _ := strings.Cut(version, ".")
	minor, _, _ := strings.Cut(rest, ".")
	ma, err1 := strconv.Atoi(major)
	mi, err2 := strconv.Atoi(minor)
	if err1 != nil || err2 != nil {
		return false
	}
	return ma > 0 || mi >= 9
}

// policyDrift says how have differs from want; "" when it does not.
func policyDrift(have, want PolicySettings) string {
	var d []string
	if have.Target != want.Target {
		d = append(d, fmt.Sprintf("target %s, not %s", have.Target, want.Target))
	}
	if have.Priority != want.Priority {
		d = append(d, fmt.Sprintf("priority %d, not %d", have.Priority, want.Priority))
	}
	if !sameSet(have.IngressZones, want.IngressZones) {
		d = append(d, "ingress zones "+strings.Join(have.IngressZones, ","))
	}
	if !sameSet(have.EgressZones, want.EgressZones) {
		d = append(d, "egress zones "+strings.Join(have.EgressZones, ","))
	}
	if !sameSet(have.RichRules, want.RichRules) {
		d = append(d, "rules "+strings.Join(have.RichRules, "; "))
	}
	return strings.Join(d, "; ")
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

// supported says whether firewalld has policies; ok is false with the result to return when not.
func (m *manager) supported(ctx context.Context) (check.Result, bool) {
	info, err := m.info.Get(ctx, m.c.Info)
	if err != nil {
		return m.errored(err), false
	}
	if !policiesSupported(info.Version) {
		return check.Failed("PoliciesUnsupported", "firewalld %s has no policies (they need 0.9 or later), so pod traffic forwarded through this node may be rejected: upgrade firewalld or turn off --firewalld-forwarding", info.Version).
			With("version", info.Version), false
	}
	return check.Result{}, true
}

// readPolicies reads calico-prep's policies, permanent and runtime; a missing one is nil.
func (m *manager) readPolicies(ctx context.Context) (map[string]policyState, error) {
	out := map[string]policyState{}
	for _, p := range m.o.forwardingPolicies() {
		var st policyState
		pp, err := m.c.ConfigPolicy(ctx, p.name)
		switch {
		case errors.Is(err, ErrInvalidPolicy):
		case err != nil:
			return nil, err
		default:
			s, err := pp.Settings(ctx)
			if err != nil {
				return nil, err
			}
			st.permanent = &s
		}
		s, err := m.c.PolicySettings(ctx, p.name)
		switch {
		case errors.Is(err, ErrInvalidPolicy):
		case err != nil:
			return nil, err
		default:
			st.runtime = &s
		}
		out[p.name] = st
	}
	return out, nil
}

func (m *manager) verifyPolicies(ctx context.Context) check.Result {
	if m.c == nil {
		return m.notRunning()
	}
	if res, ok := m.starting(); ok {
		return res
	}
	if res, ok := m.supported(ctx); !ok {
		return res
	}
	states, err := m.policies.Get(ctx, m.readPolicies)
	if err != nil {
		return m.errored(err)
	}
	listed := m.listed().Policies
	var bad []string
	var names []string
	permOK, rtOK := true, true
	for _, p := range m.o.forwardingPolicies() {
		names = append(names, p.name)
		st := states[p.name]
		if st.permanent == nil {
			permOK = false
			bad = append(bad, p.name+" (permanent): missing")
		} else {
			if !owns(listed, p.name, st.permanent.Description) {
				return check.Failed("PolicyNotOwned", "firewalld policy %s exists but was not created by calico-prep; rename it or turn off --firewalld-forwarding", p.name).
					With("policy", p.name)
			}
			if d := policyDrift(*st.permanent, p.settings); d != "" {
				permOK = false
				bad = append(bad, p.name+" (permanent): "+d)
			}
		}
		if st.runtime == nil {
			rtOK = false
			bad = append(bad, p.name+" (runtime): missing")
		} else if d := policyDrift(*st.runtime, p.settings); d != "" {
			rtOK = false
			bad = append(bad, p.name+" (runtime): "+d)
		}
	}
	var res check.Result
	if len(bad) == 0 {
		res = check.Passed("firewalld policies %s accept pod traffic forwarded to zone %s and from the pod CIDRs, runtime and permanent",
			strings.Join(names, ","), ForwardingZone)
	} else {
		res = check.Failed("ForwardingPolicyMissing", "firewalld policies are not as Calico needs them (%s): would create or update %s",
			strings.Join(bad, "; "), strings.Join(names, ","))
	}
	return res.With("policies", strings.Join(names, ",")).With("zone", ForwardingZone).
		With("runtime", strconv.FormatBool(rtOK)).With("permanent", strconv.FormatBool(permOK))
}

// applyPolicies creates or repairs calico-prep's policies, then reloads once if the runtime
// configuration lacks them (a policy, like a zone, can only be created permanently).
func (m *manager) applyPolicies(ctx context.Context) error {
	defer m.forget()
	if _, err := m.preflight(ctx); err != nil {
		return err
	}
	if res, ok := m.supported(ctx); !ok {
		return fmt.Errorf("create firewalld policies: %s: %w", res.Message, ErrUnsupported)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	st, err := loadState(m.o.StateDir)
	if err != nil {
		return err
	}
	// The policies send traffic into ForwardingZone: it must be calico-prep's own.
	pz, err := m.c.ConfigZone(ctx, ForwardingZone)
	if err != nil {
		return fmt.Errorf("create firewalld policies: zone %q: %w", ForwardingZone, err)
	}
	zs, err := pz.Settings(ctx)
	if err != nil {
		return fmt.Errorf("read firewalld zone %q: %w", ForwardingZone, err)
	}
	if !owns(st.Zones, ForwardingZone, zs.Description) {
		return fmt.Errorf("create firewalld policies: zone %q was not created by calico-prep", ForwardingZone)
	}
	needReload := false
	for _, p := range m.o.forwardingPolicies() {
		pp, err := m.c.ConfigPolicy(ctx, p.name)
		switch {
		case errors.Is(err, ErrInvalidPolicy):
			if _, err := m.c.AddConfigPolicy(ctx, p.name, p.settings); err != nil {
				return fmt.Errorf("create firewalld policy %q: %w", p.name, err)
			}
			m.log.Info("created policy", "policy", p.name)
		case err != nil:
			return fmt.Errorf("look up firewalld policy %q: %w", p.name, err)
		default:
			have, err := pp.Settings(ctx)
			if err != nil {
				return fmt.Errorf("read firewalld policy %q: %w", p.name, err)
			}
			if !owns(st.Policies, p.name, have.Description) {
				return fmt.Errorf("update firewalld policy %q: it exists and was not created by calico-prep", p.name)
			}
			if policyDrift(have, p.settings) != "" {
				if err := pp.Update(ctx, p.settings); err != nil {
					return fmt.Errorf("update firewalld policy %q: %w", p.name, err)
				}
				m.log.Info("updated policy", "policy", p.name)
			}
		}
		if !slices.Contains(st.Policies, p.name) {
			st.Policies = append(st.Policies, p.name)
			if err := st.save(m.o.StateDir); err != nil {
				return err
			}
		}
		have, err := m.c.PolicySettings(ctx, p.name)
		switch {
		case errors.Is(err, ErrInvalidPolicy):
			needReload = true
		case err != nil:
			return fmt.Errorf("read runtime firewalld policy %q: %w", p.name, err)
		case policyDrift(have, p.settings) != "":
			needReload = true
		}
	}
	if needReload {
		return m.reload(ctx, "policies changed")
	}
	return nil
}
