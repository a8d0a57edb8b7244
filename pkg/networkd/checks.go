package networkd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/calico-prep/calico-prep/internal/atomicfile"
	"github.com/calico-prep/calico-prep/pkg/calico"
	"github.com/calico-prep/calico-prep/pkg/check"
	"github.com/calico-prep/calico-prep/pkg/config"
)

// Check names.
const (
	CheckDropIn        = "networkd/drop-in"
	CheckUnmanaged     = "networkd/unmanaged"
	CheckForeignRoutes = "networkd/foreign-routes"
)

// Files calico-prep owns. The .network file's name sorts before the usual "10-…", "50-…",
// "80-…" and "99-…" names, the networkd.conf drop-in's after them.
const (
	OwnNetwork = "0-calico-prep.network"
	OwnConf    = "zz-calico-prep.conf"
	ownHeader  = "# Written by calico-prep."
	ownMode    = 0o644
)

// Options configure the checks.
type Options struct {
	// Mode: auto applies when networkd is on the bus, on requires it, off leaves it alone.
	Mode config.Mode
	// ConfDir is networkd's /etc/systemd/network, where the .network file goes. networkd.conf
	// and networkd.conf.d are read and written next to it.
	ConfDir string
	// Root is where the host's /run and /usr/lib are read (their systemd/network and
	// networkd.conf.d directories); "" means "/".
	Root string
	// KeepForeignRoutes writes the networkd.conf drop-in that turns ManageForeignRoutes= and
	// ManageForeignRoutingPolicyRules= off; false leaves networkd.conf alone and skips the check.
	KeepForeignRoutes bool
}

func (o Options) root(p string) string {
	if o.Root == "" {
		return p
	}
	return filepath.Join(o.Root, p)
}

// networkDirs are the .network directories in networkd's priority order.
func (o Options) networkDirs() []string {
	return []string{o.ConfDir, o.root("/run/systemd/network"), o.root("/usr/local/lib/systemd/network"), o.root("/usr/lib/systemd/network")}
}

func (o Options) confLayout() confLayout {
	etc := filepath.Dir(o.ConfDir)
	var l confLayout
	l.mainFiles = []string{filepath.Join(etc, "networkd.conf")}
	l.dropInDirs = []string{filepath.Join(etc, "networkd.conf.d")}
	for _, d := range []string{"/run/systemd", "/usr/local/lib/systemd", "/usr/lib/systemd"} {
		l.mainFiles = append(l.mainFiles, o.root(d+"/networkd.conf"))
		l.dropInDirs = append(l.dropInDirs, o.root(d+"/networkd.conf.d"))
	}
	return l
}

// Checks returns the .network check, the link check and the foreign-routes check. c may be
// nil when there is no system bus; networkd then counts as not running.
func Checks(c *Client, opts Options) []check.Check {
	k := &checker{c: c, opts: opts}
	return []check.Check{
		{Name: CheckDropIn, Verify: k.verifyDropIn, Apply: k.applyDropIn},
		{Name: CheckUnmanaged, Verify: k.verifyUnmanaged, Apply: k.applyUnmanaged},
		{Name: CheckForeignRoutes, Verify: k.verifyForeign, Apply: k.applyForeign},
	}
}

type checker struct {
	c    *Client
	opts Options

	mu sync.Mutex
	// wroteFor is the networkd instance (its unique bus name) that was running when
	// calico-prep wrote the networkd.conf drop-in: that instance still removes foreign routes.
	wroteFor string
}

// settleRecheck is how soon a check asks again while networkd is starting or the bus
// connection is being made again.
const settleRecheck = 500 * time.Millisecond

// presence decides whether a check applies. It returns a final result, or ok when networkd is
// on the bus; running is false with ok when the mode is on and networkd is away. While networkd
// is away (it may be restarting; its return is an event) the result settles.
func (k *checker) presence(ctx context.Context) (res check.Result, running, ok bool) {
	if k.opts.Mode == config.ModeOff {
		return check.Skipped("NetworkdOff", "systemd-networkd is left alone (mode off)"), false, false
	}
	if k.c != nil {
		up, err := k.c.Running(ctx)
		if err != nil {
			return errored(err), false, false
		}
		if up {
			return check.Result{}, true, true
		}
	}
	if k.opts.Mode == config.ModeOn {
		return check.Failed("NetworkdNotRunning", "systemd-networkd is not on the system bus (mode on requires it)").Settle(0), false, true
	}
	return check.Skipped("NetworkdNotRunning", "systemd-networkd is not on the system bus").Settle(0), false, false
}

// errored is the result of a D-Bus read that failed; it settles while networkd is starting or
// going, or the connection to the bus is.
func errored(err error) check.Result {
	if errors.Is(err, ErrStarting) || errors.Is(err, ErrNotRunning) || errors.Is(err, ErrDisconnected) {
		return check.Errored(err).Settle(settleRecheck)
	}
	return check.Errored(err)
}

var errForeign = errors.New("file is not calico-prep's")

// ownFile is calico-prep's file on disk: absent (nil data, nil error), its content, or
// errForeign when a file of that name lacks calico-prep's header.
func ownFile(path string) ([]byte, error) {
	st, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %q: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%q is not a regular file; leaving it: %w", path, errForeign)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %q: %w", path, err)
	}
	if !bytes.HasPrefix(data, []byte(ownHeader)) {
		return nil, fmt.Errorf("%q was not written by calico-prep (no %q header); leaving it: %w", path, ownHeader, errForeign)
	}
	return data, nil
}

// current reports whether the file at path is exactly want, with calico-prep's mode.
func current(path string, have, want []byte) bool {
	if !bytes.Equal(have, want) {
		return false
	}
	st, err := os.Stat(path)
	return err == nil && st.Mode().Perm() == ownMode
}

// writeOwn writes a file atomically (the temporary name lacks the suffix networkd reads),
// creating its directory's missing parents as networkd's own directories would be.
func writeOwn(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %q: %w", dir, err)
	}
	if err := unix.Access(dir, unix.W_OK|unix.X_OK); err != nil {
		return fmt.Errorf("write %q: %q is not writable: %w", path, dir, err)
	}
	if err := atomicfile.Write(path, data, ownMode); err != nil {
		return fmt.Errorf("write %q: %w", path, err)
	}
	return nil
}

// networkPlan is what the .network check found.
type networkPlan struct {
	path      string
	want      []byte
	set       networkSet
	conflicts []firstMatch
	write     bool
}

func (k *checker) networkPlan() (networkPlan, error) {
	p := networkPlan{path: filepath.Join(k.opts.ConfDir, OwnNetwork), want: ownNetwork(calico.UnmanagedGlobs())}
	have, err := ownFile(p.path)
	if err != nil {
		return p, err
	}
	if p.set, err = readNetworkSet(k.opts.networkDirs(), OwnNetwork, p.want); err != nil {
		return p, err
	}
	for _, m := range firstMatches(p.set.files) {
		if m.conflict(p.path) {
			p.conflicts = append(p.conflicts, m)
		}
	}
	p.write = !current(p.path, have, p.want)
	return p, nil
}

func (k *checker) verifyDropIn(ctx context.Context) check.Result {
	if res, _, ok := k.presence(ctx); !ok {
		return res
	}
	p, err := k.networkPlan()
	if errors.Is(err, errForeign) {
		return check.Failed("DropInNotOurs", "%v", err)
	}
	if err != nil {
		return check.Errored(err)
	}
	var problems []string
	reason := ""
	if len(p.set.invalid) > 0 {
		reason = "OperatorConfigInvalid"
		for _, e := range p.set.invalid {
			problems = append(problems, "networkd ignores "+e.Error())
		}
	}
	res := check.Result{}
	for _, m := range p.conflicts {
		if reason == "" {
			reason = "OperatorConfigConflict"
		}
		problems = append(problems, fmt.Sprintf("%s matches %s before %s and manages it", m, m.profile.glob, OwnNetwork))
		res = res.With("conflict/"+m.profile.glob, fmt.Sprintf("%s:%d", m.file.path, m.line))
	}
	if p.write {
		if reason == "" {
			reason = "DropInMissing"
			if p.set.own != nil {
				reason = "DropInOutdated"
			}
		}
		problems = append(problems, fmt.Sprintf("would write %s and reload systemd-networkd", p.path))
	}
	if reason != "" {
		f := check.Failed(reason, "%s", strings.Join(problems, "; "))
		f.Facts = res.Facts
		return f.With("path", p.path)
	}
	return check.Passed("%s keeps %s unmanaged by systemd-networkd", p.path, strings.Join(calico.UnmanagedGlobs(), ", ")).With("path", p.path)
}

func (k *checker) applyDropIn(ctx context.Context) error {
	if _, running, ok := k.presence(ctx); !ok || !running {
		return nil
	}
	p, err := k.networkPlan()
	if err != nil || !p.write {
		// Conflicts live in files calico-prep does not own: nothing it may change.
		return err
	}
	if err := writeOwn(p.path, p.want); err != nil {
		return err
	}
	return k.c.Reload(ctx)
}

// calicoLink is a networkd link of one of Calico's names with its state.
type calicoLink struct {
	Link
	state string
}

// unmanaged reports whether networkd leaves the link alone; "linger" is a link that is gone.
func (l calicoLink) unmanaged() bool { return l.state == StateUnmanaged || l.state == "linger" }

func (k *checker) calicoLinks(ctx context.Context) ([]calicoLink, error) {
	links, err := k.c.ListLinks(ctx)
	if err != nil {
		return nil, err
	}
	var out []calicoLink
	for _, l := range links {
		if !calico.IsInterface(l.Name) {
			continue
		}
		st, err := k.c.AdministrativeState(ctx, l)
		if errors.Is(err, ErrNotRunning) {
			return nil, err
		}
		if err != nil {
			continue // gone between the listing and the read
		}
		out = append(out, calicoLink{l, st})
	}
	slices.SortFunc(out, func(a, b calicoLink) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func (k *checker) verifyUnmanaged(ctx context.Context) check.Result {
	res, running, ok := k.presence(ctx)
	if !ok || !running {
		return res
	}
	links, err := k.calicoLinks(ctx)
	if err != nil {
		return errored(err)
	}
	var managed, names []string
	for _, l := range links {
		res = res.With(check.FactNetworkdUnmanagedPrefix+l.Name, strconv.FormatBool(l.unmanaged()))
		names = append(names, l.Name)
		if !l.unmanaged() {
			managed = append(managed, fmt.Sprintf("%s (%s)", l.Name, l.state))
		}
	}
	switch {
	case len(managed) > 0:
		f := check.Failed("LinkManaged", "systemd-networkd manages %s; would reload it and reconfigure them", strings.Join(managed, ", "))
		f.Facts = res.Facts
		return f
	case len(links) == 0:
		return check.Passed("no Calico link exists yet")
	}
	p := check.Passed("systemd-networkd leaves %s unmanaged", strings.Join(names, ", "))
	p.Facts = res.Facts
	return p
}

// settleTimeout bounds the wait for links to read unmanaged after a reload.
const settleTimeout = 5 * time.Second

// applyUnmanaged has networkd match every Calico link it still manages again (the .network file
// is in place by now: its check runs first) and waits until they read unmanaged. A link still
// being set up ("pending") is waited for; networkd matches it by itself.
func (k *checker) applyUnmanaged(ctx context.Context) error {
	if _, running, ok := k.presence(ctx); !ok || !running {
		return nil
	}
	links, err := k.calicoLinks(ctx)
	if err != nil {
		return err
	}
	for _, l := range links {
		if l.unmanaged() || l.state == "pending" {
			continue
		}
		if err := k.c.ReconfigureLink(ctx, l.Index); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(settleTimeout)
	for {
		links, err := k.calicoLinks(ctx)
		if err != nil {
			return err
		}
		var left []string
		for _, l := range links {
			if !l.unmanaged() {
				left = append(left, fmt.Sprintf("%s (%s)", l.Name, l.state))
			}
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("make %s unmanaged: systemd-networkd still manages them after %s", strings.Join(left, ", "), settleTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (k *checker) verifyForeign(ctx context.Context) check.Result {
	if !k.opts.KeepForeignRoutes {
		return check.Skipped("ForeignRoutesLeft", "networkd.conf is left alone (--networkd-foreign-routes=off)")
	}
	if res, _, ok := k.presence(ctx); !ok {
		return res
	}
	l := k.opts.confLayout()
	if _, err := ownFile(filepath.Join(l.dropInDirs[0], OwnConf)); errors.Is(err, errForeign) {
		return check.Failed("DropInNotOurs", "%v", err)
	} else if err != nil {
		return check.Errored(err)
	}
	r, err := readForeign(l, OwnConf, ownForeign())
	if err != nil {
		return check.Errored(err)
	}
	var problems []string
	for _, e := range r.invalid {
		problems = append(problems, "networkd ignores "+e.Error())
	}
	var later []string
	for _, s := range r.withOwn {
		if s.manage {
			later = append(later, s.String())
		}
	}
	if len(later) > 0 {
		problems = append(problems, fmt.Sprintf("networkd removes routes and rules it did not create, Calico's BGP routes among them, even with %s: %s", r.ownPath, strings.Join(later, ", ")))
		return check.Failed("OperatorConfigConflict", "%s", strings.Join(problems, "; "))
	}
	if !current(r.ownPath, r.own, ownForeign()) {
		var now []string
		for _, s := range r.withoutOwn {
			if s.manage {
				now = append(now, s.String())
			}
		}
		if len(now) == 0 {
			return check.Passed("systemd-networkd keeps foreign routes and rules: %s", describe(r.withoutOwn))
		}
		return check.Failed("ForeignRoutesManaged", "systemd-networkd removes routes and rules it did not create, Calico's BGP routes among them, on its next reconfigure: %s; would write %s, which takes effect at networkd's next restart",
			strings.Join(now, ", "), r.ownPath)
	}
	owner, err := k.c.Owner(ctx)
	if err != nil {
		return errored(err)
	}
	k.mu.Lock()
	pending := k.wroteFor != "" && k.wroteFor == owner
	if !pending {
		k.wroteFor = ""
	}
	k.mu.Unlock()
	if pending {
		return check.Failed("ForeignRoutesRestartPending", "%s keeps foreign routes, but it takes effect at networkd's next restart: until then the running systemd-networkd removes routes and rules it did not create, Calico's BGP routes among them", r.ownPath)
	}
	return check.Passed("systemd-networkd keeps foreign routes and rules: %s", describe(r.withOwn))
}

func describe(s []foreignSetting) string {
	var out []string
	for _, v := range s {
		out = append(out, v.String())
	}
	return strings.Join(out, ", ")
}

func (k *checker) applyForeign(ctx context.Context) error {
	if !k.opts.KeepForeignRoutes {
		return nil
	}
	if _, running, ok := k.presence(ctx); !ok || !running {
		return nil
	}
	l := k.opts.confLayout()
	r, err := readForeign(l, OwnConf, ownForeign())
	if err != nil {
		return err
	}
	if current(r.ownPath, r.own, ownForeign()) {
		return nil
	}
	if r.own == nil && !slices.ContainsFunc(r.withoutOwn, func(s foreignSetting) bool { return s.manage }) {
		return nil // the operator's configuration already keeps them
	}
	if _, err := ownFile(r.ownPath); err != nil {
		return err
	}
	owner, err := k.c.Owner(ctx)
	if err != nil {
		return err
	}
	if err := writeOwn(r.ownPath, ownForeign()); err != nil {
		return err
	}
	k.mu.Lock()
	k.wroteFor = owner
	k.mu.Unlock()
	return nil
}

// Cleanup removes calico-prep's .network file and networkd.conf drop-in, only those, and has
// networkd reload when it is running and the .network file was removed. c may be nil.
func Cleanup(ctx context.Context, c *Client, opts Options) error {
	network := filepath.Join(opts.ConfDir, OwnNetwork)
	conf := filepath.Join(opts.confLayout().dropInDirs[0], OwnConf)
	var removedNetwork bool
	for _, p := range []string{network, conf} {
		data, err := ownFile(p)
		if err != nil {
			return fmt.Errorf("remove %q: %w", p, err)
		}
		if data == nil {
			continue
		}
		removed, err := atomicfile.Remove(p)
		if err != nil {
			return fmt.Errorf("remove %q: %w", p, err)
		}
		removedNetwork = removedNetwork || removed && p == network
	}
	if !removedNetwork || c == nil {
		return nil
	}
	up, err := c.Running(ctx)
	if err != nil || !up {
		return err
	}
	return c.Reload(ctx)
}
