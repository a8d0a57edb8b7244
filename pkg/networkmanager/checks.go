package networkmanager

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/calico-prep/calico-prep/pkg/check"
	"github.com/calico-prep/calico-prep/pkg/config"
)

// Check names.
const (
	CheckDropIn    = "networkmanager/drop-in"
	CheckUnmanaged = "networkmanager/unmanaged"
)

// FactUnmanagedPrefix starts the fact of each Calico device in CheckUnmanaged's result:
// "unmanaged/cali0a1b2c3d4e5" is "true" or "false".
const FactUnmanagedPrefix = check.FactUnmanagedPrefix

// Options configure the checks.
type Options struct {
	// Mode: auto applies when NetworkManager is on the bus, on requires it, off leaves it alone.
	Mode config.Mode
	// ConfDir is where the drop-in goes, NetworkManager's /etc/NetworkManager/conf.d.
	ConfDir string
	// ExtraPatterns are more interface-name globs to keep unmanaged.
	ExtraPatterns []string
	// MainFile is NetworkManager.conf; "" means the one next to ConfDir.
	MainFile string
	// SystemConfDirs are read before MainFile, in order; nil means
	// /usr/lib/NetworkManager/conf.d and /run/NetworkManager/conf.d.
	SystemConfDirs []string
	// Protected returns interface names calico-prep never makes unmanaged, such as the
	// node's uplink; a pattern matching one is refused. Nil protects nothing.
	Protected func() []string
}

func (o Options) layout() layout {
	l := layout{systemDirs: o.SystemConfDirs, mainFile: o.MainFile, confDir: o.ConfDir}
	if l.systemDirs == nil {
		l.systemDirs = []string{"/usr/lib/NetworkManager/conf.d", "/run/NetworkManager/conf.d"}
	}
	if l.mainFile == "" {
		l.mainFile = filepath.Join(filepath.Dir(o.ConfDir), "NetworkManager.conf")
	}
	return l
}

func (o Options) protected() []string {
	if o.Protected == nil {
		return nil
	}
	return o.Protected()
}

// Checks returns the drop-in check and the device check. c may be nil when there is no
// system bus; NetworkManager then counts as not running.
func Checks(c *Client, opts Options) []check.Check {
	k := &checker{c: c, opts: opts}
	return []check.Check{
		{Name: CheckDropIn, Verify: k.verifyDropIn, Apply: k.applyDropIn},
		{Name: CheckUnmanaged, Verify: k.verifyUnmanaged, Apply: k.applyUnmanaged},
	}
}

type checker struct {
	c    *Client
	opts Options
}

// settleRecheck is how soon a check asks again while NetworkManager is starting or the bus
// connection is being made again.
const settleRecheck = 500 * time.Millisecond

// presence decides whether a check applies. It returns a final result, or ok when NetworkManager
// is on the bus; running is false with ok when the mode is on and the daemon is away. While
// NetworkManager is away (it may be restarting; its return is an event) or starting, the
// result settles.
func (k *checker) presence(ctx context.Context) (res check.Result, running, ok bool) {
	if k.opts.Mode == config.ModeOff {
		return check.Skipped("NetworkManagerOff", "NetworkManager is left alone (mode off)"), false, false
	}
	if k.c != nil {
		// One call says both whether NetworkManager is on the bus and whether it has started.
		starting, err := k.c.Starting(ctx)
		switch {
		case errors.Is(err, ErrNotRunning):
		case starting:
			return check.Failed("NetworkManagerStarting", "NetworkManager is starting up").Settle(settleRecheck), false, false
		case err != nil:
			return errored(err), false, false
		default:
			return check.Result{}, true, true
		}
	}
	if k.opts.Mode == config.ModeOn {
		return check.Failed("NetworkManagerNotRunning", "NetworkManager is not on the system bus (mode on requires it)").Settle(0), false, true
	}
	return check.Skipped("NetworkManagerNotRunning", "NetworkManager is not on the system bus").Settle(0), false, false
}

// errored is the result of a D-Bus read that failed; it settles while NetworkManager is
// starting or going, or the connection to the bus is.
func errored(err error) check.Result {
	if errors.Is(err, ErrStarting) || errors.Is(err, ErrNotRunning) || errors.Is(err, ErrDisconnected) {
		return check.Errored(err).Settle(settleRecheck)
	}
	return check.Errored(err)
}

// plan is what the drop-in check found.
type plan struct {
	patterns []string
	want     []byte
	path     string
	conf     confReport
	// write is true when calico-prep's drop-in is missing or differs and no other file
	// already covers every pattern.
	write bool
}

func (k *checker) plan() (plan, error) {
	var p plan
	var err error
	if p.patterns, err = Patterns(k.opts.ExtraPatterns); err != nil {
		return p, err
	}
	if err := guardUplink(p.patterns, k.opts.protected()); err != nil {
		return p, err
	}
	p.want = dropIn(p.patterns)
	p.path = filepath.Join(k.opts.ConfDir, ownFile)
	if p.conf, err = readConf(k.opts.layout(), p.patterns, p.want); err != nil {
		return p, err
	}
	if p.conf.own.exists && !p.conf.own.ours() {
		return p, fmt.Errorf("drop-in %q was not written by calico-prep (no %q header); leaving it: %w", p.path, ownHeader, errForeign)
	}
	othersCover := !slices.ContainsFunc(p.conf.withoutOwn, func(r patternResult) bool { return !r.covered })
	p.write = !p.conf.own.current(p.want) && (p.conf.own.exists || !othersCover)
	return p, nil
}

var (
	// errUplink marks a pattern that would unmanage a protected interface.
	errUplink = errors.New("pattern matches a protected interface")
	// errForeign marks a file of calico-prep's name that calico-prep did not write.
	errForeign = errors.New("file is not calico-prep's")
)

func guardUplink(patterns, protected []string) error {
	for _, name := range protected {
		for _, p := range patterns {
			if compileGlob(p, false).matchName(name) {
				return fmt.Errorf("pattern %q matches %s, which calico-prep must leave managed: %w", p, name, errUplink)
			}
		}
	}
	return nil
}

func (k *checker) verifyDropIn(ctx context.Context) check.Result {
	if res, _, ok := k.presence(ctx); !ok {
		return res
	}
	p, err := k.plan()
	switch {
	case errors.Is(err, errUplink):
		return check.Failed("PatternMatchesUplink", "%v", err)
	case errors.Is(err, errForeign):
		return check.Failed("DropInNotOurs", "%v", err)
	}
	if err != nil {
		return check.Errored(err)
	}
	facts := map[string]string{"path": p.path, "patterns": strings.Join(p.patterns, ",")}
	var conflicts, notes []string
	byConflict := map[string][]string{} // conflict → patterns it hits, in pattern order
	for _, r := range p.conf.withOwn {
		if !r.covered && r.conflict != "" {
			if byConflict[r.conflict] == nil {
				conflicts = append(conflicts, r.conflict)
			}
			byConflict[r.conflict] = append(byConflict[r.conflict], r.pattern)
			facts["conflict/"+r.pattern] = r.conflict
		}
		for _, d := range r.doubtful {
			if n := d + " may except Calico devices"; !slices.Contains(notes, n) {
				notes = append(notes, n)
			}
		}
	}
	var problems []string
	reason := ""
	if len(p.conf.invalid) > 0 {
		reason = "OperatorConfigInvalid"
		for _, e := range p.conf.invalid {
			problems = append(problems, "NetworkManager cannot load its configuration: "+e.Error())
		}
	}
	if len(conflicts) > 0 {
		if reason == "" {
			reason = "OperatorConfigConflict"
		}
		for _, c := range conflicts {
			problems = append(problems, fmt.Sprintf("%s managed again: %s", strings.Join(byConflict[c], ", "), c))
		}
	}
	if p.write {
		if reason == "" {
			reason = "DropInMissing"
			if p.conf.own.exists {
				reason = "DropInOutdated"
			}
		}
		problems = append(problems, fmt.Sprintf("would write %s (%d patterns) and reload NetworkManager", p.path, len(p.patterns)))
	}
	problems = append(problems, notes...)
	if reason != "" {
		return withFacts(check.Failed(reason, "%s", strings.Join(problems, "; ")), facts)
	}
	var res check.Result
	if p.conf.own.exists {
		res = check.Passed("%s keeps %s unmanaged", p.path, strings.Join(p.patterns, ", "))
	} else {
		var by []string
		for _, r := range p.conf.withoutOwn {
			for _, f := range r.coveredBy {
				if !slices.Contains(by, filepath.Base(f)) {
					by = append(by, filepath.Base(f))
				}
			}
		}
		res = check.Passed("%s already unmanaged by %s; calico-prep writes no drop-in", strings.Join(p.patterns, ", "), strings.Join(by, ", "))
		facts["coveredBy"] = strings.Join(by, ",")
	}
	if len(notes) > 0 {
		res.Message += "; " + strings.Join(notes, "; ")
	}
	return withFacts(res, facts)
}

func withFacts(r check.Result, facts map[string]string) check.Result {
	for k, v := range facts {
		r = r.With(k, v)
	}
	return r
}

func (k *checker) applyDropIn(ctx context.Context) error {
	if _, _, ok := k.presence(ctx); !ok {
		return nil
	}
	p, err := k.plan()
	if err != nil {
		return err
	}
	if !p.write {
		// Nothing calico-prep may change: conflicts live in files it does not own.
		return nil
	}
	if err := writeOwn(k.opts.ConfDir, p.want); err != nil {
		return err
	}
	return k.reloadIfRunning(ctx)
}

func (k *checker) reloadIfRunning(ctx context.Context) error {
	if k.c == nil {
		return nil
	}
	up, err := k.c.Running(ctx)
	if err != nil || !up {
		return err
	}
	return k.c.Reload(ctx, ReloadConf)
}

// calicoDevice is a real device whose name matches a pattern and is not protected.
type calicoDevice struct {
	dev Device
	DeviceStatus
}

func (s DeviceStatus) unmanaged() bool { return s.State == StateUnmanaged && !s.Managed }

func (k *checker) calicoDevices(ctx context.Context) ([]calicoDevice, error) {
	patterns, err := Patterns(k.opts.ExtraPatterns)
	if err != nil {
		return nil, err
	}
	globs := make([]glob, len(patterns))
	for i, p := range patterns {
		globs[i] = compileGlob(p, false)
	}
	devs, err := k.c.GetAllDevices(ctx)
	if err != nil {
		return nil, err
	}
	protected := k.opts.protected()
	var out []calicoDevice
	for _, d := range devs {
		st, err := d.Status(ctx)
		if errors.Is(err, ErrNotRunning) {
			return nil, err
		}
		if err != nil {
			// The device went away between the listing and the read.
			continue
		}
		if !st.Real || slices.Contains(protected, st.Interface) ||
			!slices.ContainsFunc(globs, func(g glob) bool { return g.matchName(st.Interface) }) {
			continue
		}
		out = append(out, calicoDevice{d, st})
	}
	slices.SortFunc(out, func(a, b calicoDevice) int { return strings.Compare(a.Interface, b.Interface) })
	return out, nil
}

func (k *checker) verifyUnmanaged(ctx context.Context) check.Result {
	res, running, ok := k.presence(ctx)
	if !ok || !running {
		return res
	}
	devs, err := k.calicoDevices(ctx)
	if err != nil {
		return errored(err)
	}
	facts := map[string]string{}
	var managed, names []string
	for _, d := range devs {
		facts[FactUnmanagedPrefix+d.Interface] = strconv.FormatBool(d.unmanaged())
		names = append(names, d.Interface)
		if !d.unmanaged() {
			managed = append(managed, fmt.Sprintf("%s (state %s, managed %v)", d.Interface, d.State, d.Managed))
		}
	}
	switch {
	case len(managed) > 0:
		return withFacts(check.Failed("DeviceManaged", "NetworkManager manages %s; would set them unmanaged", strings.Join(managed, ", ")), facts)
	case len(devs) == 0:
		return check.Passed("no Calico device exists yet")
	}
	return withFacts(check.Passed("NetworkManager leaves %s unmanaged", strings.Join(names, ", ")), facts)
}

// settleTimeout bounds the wait for a device switched to unmanaged to show it.
const settleTimeout = 3 * time.Second

// applyUnmanaged switches every Calico device NetworkManager still manages to unmanaged at
// runtime and waits until NetworkManager shows it so.
func (k *checker) applyUnmanaged(ctx context.Context) error {
	if _, running, ok := k.presence(ctx); !ok || !running {
		return nil
	}
	devs, err := k.calicoDevices(ctx)
	if err != nil {
		return err
	}
	var pending []calicoDevice
	for _, d := range devs {
		if d.unmanaged() {
			continue
		}
		if err := d.dev.SetManaged(ctx, false); err != nil {
			return err
		}
		pending = append(pending, d)
	}
	deadline := time.Now().Add(settleTimeout)
	for len(pending) > 0 {
		left := pending[:0]
		for _, d := range pending {
			st, err := d.dev.Status(ctx)
			if err != nil || !st.unmanaged() {
				left = append(left, d)
			}
		}
		pending = left
		if len(pending) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			var names []string
			for _, d := range pending {
				names = append(names, d.Interface)
			}
			return fmt.Errorf("set %s unmanaged: NetworkManager still manages them after %s", strings.Join(names, ", "), settleTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// Cleanup removes calico-prep's drop-in, only that, and has NetworkManager re-read its
// configuration when it is running. c may be nil. Devices switched to unmanaged at runtime
// stay so until NetworkManager restarts.
func Cleanup(ctx context.Context, c *Client, confDir string) error {
	removed, err := removeOwn(confDir)
	if err != nil || !removed || c == nil {
		return err
	}
	up, err := c.Running(ctx)
	if err != nil || !up {
		return err
	}
	return c.Reload(ctx, ReloadConf)
}
