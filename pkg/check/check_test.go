package check

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// fakeHost is pure logic: a setting a check can verify and apply.
type fakeHost struct {
	ok       bool
	applies  int
	applyErr error
}

func (h *fakeHost) check(name string) Check {
	return Check{
		Name: name,
		Verify: func(context.Context) Result {
			if h.ok {
				return Passed("%s is set", name)
			}
			return Failed("NotSet", "%s is not set", name)
		},
		Apply: func(context.Context) error {
			h.applies++
			if h.applyErr != nil {
				return h.applyErr
			}
			h.ok = true
			return nil
		},
	}
}

func TestRunnerModes(t *testing.T) {
	tests := []struct {
		name        string
		mode        Mode
		applyErr    error
		wantStatus  Status
		wantApplies int
		wantEntry   Entry
	}{
		{name: "verify only never applies", mode: VerifyOnly, wantStatus: Fail, wantApplies: 0},
		{name: "dry run records what it would do", mode: DryRun, wantStatus: Fail, wantApplies: 0, wantEntry: Entry{WouldApply: true}},
		{name: "reconcile applies and verifies again", mode: Reconcile, wantStatus: Pass, wantApplies: 1, wantEntry: Entry{Applied: true}},
		{name: "a failed apply keeps the failure and says why", mode: Reconcile, applyErr: errors.New("bus gone"), wantStatus: Fail, wantApplies: 1, wantEntry: Entry{ApplyError: "bus gone"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &fakeHost{applyErr: tt.applyErr}
			r := Runner{Mode: tt.mode}
			rep := r.Run(context.Background(), []Check{h.check("area/x")})
			e := rep.Entries[0]
			if e.Status != tt.wantStatus || h.applies != tt.wantApplies {
				t.Fatalf("status %s after %d applies, want %s after %d", e.Status, h.applies, tt.wantStatus, tt.wantApplies)
			}
			if e.Applied != tt.wantEntry.Applied || e.WouldApply != tt.wantEntry.WouldApply || e.ApplyError != tt.wantEntry.ApplyError {
				t.Fatalf("entry %+v, want applied=%v wouldApply=%v applyError=%q", e, tt.wantEntry.Applied, tt.wantEntry.WouldApply, tt.wantEntry.ApplyError)
			}
			if rep.Ready != (tt.wantStatus == Pass) {
				t.Fatalf("ready = %v with status %s", rep.Ready, e.Status)
			}
		})
	}
}

func TestRunnerDisabledNeverRuns(t *testing.T) {
	sel, err := ParseSelector("--disable-checks", "kernel, links/tunl0")
	if err != nil {
		t.Fatal(err)
	}
	verified := map[string]bool{}
	mk := func(name string) Check {
		return Check{Name: name, Verify: func(context.Context) Result {
			verified[name] = true
			return Failed("Bad", "bad")
		}}
	}
	r := Runner{Mode: Reconcile, Disabled: sel}
	rep := r.Run(context.Background(), []Check{mk("kernel/module/ip_set"), mk("links/tunl0"), mk("links/vxlan.calico")})
	got := map[string]Status{}
	for _, e := range rep.Entries {
		got[e.Name] = e.Status
	}
	want := map[string]Status{"kernel/module/ip_set": Disabled, "links/tunl0": Disabled, "links/vxlan.calico": Fail}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("statuses %v, want %v", got, want)
	}
	if verified["kernel/module/ip_set"] || verified["links/tunl0"] {
		t.Fatalf("a disabled check was verified: %v", verified)
	}
	if f, ok := rep.FirstFailure(); !ok || f.Name != "links/vxlan.calico" {
		t.Fatalf("first failure = %v %v", f.Name, ok)
	}
}

// A failure whose component is starting is reported, never applied: the apply would go to a
// daemon that has not loaded its configuration yet.
func TestRunnerAppliesNothingWhileSettling(t *testing.T) {
	h := &fakeHost{}
	c := h.check("area/x")
	verify := c.Verify
	c.Verify = func(ctx context.Context) Result { return verify(ctx).Settle(time.Second) }
	rep := (&Runner{Mode: Reconcile}).Run(context.Background(), []Check{c})
	e := rep.Entries[0]
	if h.applies != 0 || e.Status != Fail || !e.Settling || e.RecheckIn != time.Second || rep.RecheckIn() != time.Second {
		t.Fatalf("%d applies, entry %+v", h.applies, e)
	}
}

func TestRunnerStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	c := Check{Name: "a/b", Verify: func(context.Context) Result { calls++; cancel(); return Passed("ok") }}
	rep := (&Runner{}).Run(ctx, []Check{c, c})
	if calls != 1 || rep.Ready || rep.Entries[1].Reason != "VerifyError" {
		t.Fatalf("calls=%d ready=%v second=%+v", calls, rep.Ready, rep.Entries[1])
	}
}

func TestParseSelector(t *testing.T) {
	tests := []struct {
		in      string
		want    Selector
		wantErr string
	}{
		{in: "", want: nil},
		{in: "kernel", want: Selector{"kernel"}},
		{in: " kernel ,firewalld/port-179-tcp,", want: Selector{"kernel", "firewalld/port-179-tcp"}},
		{in: "Kernel", wantErr: `--disable-checks: invalid check name "Kernel"`},
		{in: "links tunl0", wantErr: `--disable-checks: invalid check name "links tunl0"`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSelector("--disable-checks", tt.in)
			if tt.wantErr != "" {
				if err == nil || len(err.Error()) < len(tt.wantErr) || err.Error()[:len(tt.wantErr)] != tt.wantErr {
					t.Fatalf("error %v, want prefix %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestSelectorValidate(t *testing.T) {
	checks := []Check{{Name: "kernel/version"}, {Name: "kernel/module/ipip"}, {Name: "links/tunl0"}}
	tests := []struct {
		in      Selector
		wantErr string
	}{
		{in: nil},
		{in: Selector{"kernel", "links/tunl0", "kernel/module/ipip"}},
		{in: Selector{"links", "kernal"}, wantErr: `--disable-checks: unknown area or check "kernal": valid areas are kernel, links, or a check name such as "links/tunl0"`},
		{in: Selector{"nonsense/x"}, wantErr: `--disable-checks: unknown area or check "nonsense/x": valid areas are kernel, links,`},
		{in: Selector{"kernel/module/ipipp"}, wantErr: `--disable-checks: unknown check "kernel/module/ipipp": valid areas are kernel, links; the kernel checks of this configuration are kernel/version, kernel/module/ipip`},
		// An area is a word of its own: "kern" is no prefix match.
		{in: Selector{"kern"}, wantErr: `--disable-checks: unknown area or check "kern"`},
	}
	for _, tt := range tests {
		t.Run(tt.in.String(), func(t *testing.T) {
			err := tt.in.Validate("--disable-checks", checks)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tt.wantErr != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.wantErr)):
				t.Fatalf("error %v, want prefix %q", err, tt.wantErr)
			case err != nil && strings.Contains(err.Error(), "\n"):
				t.Fatalf("error is not one line: %q", err)
			}
		})
	}
}

func TestReportJSONRoundTrip(t *testing.T) {
	rep := Report{
		Time:  time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC),
		Ready: false,
		Entries: []Entry{
			{Name: "cidr/ipv4-pool", Result: Failed("PodCIDROverlap", "pod CIDR 192.168.0.0/16 overlaps ens33 address 192.168.79.128/24").With("pool", "192.168.0.0/16")},
			{Name: "firewalld/port-179-tcp", Result: Passed("179/tcp open in zone public"), Applied: true},
		},
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(rep, back) {
		t.Fatalf("round trip changed the report:\n%+v\n%+v", rep, back)
	}
}

// Checks of one pass share a PassCache read, and so does what the caller reads after the run;
// the next pass, a Forget, a failed read and a read outside any pass all read again.
func TestPassCache(t *testing.T) {
	var passes Passes
	cache := PassCache[int]{Passes: &passes}
	reads := 0
	fail := false
	read := func(context.Context) (int, error) {
		reads++
		if fail {
			return 0, errors.New("bus down")
		}
		return reads, nil
	}
	var seen []int
	get := func(ctx context.Context) Result {
		v, err := cache.Get(ctx, read)
		if err != nil {
			return Errored(err)
		}
		seen = append(seen, v)
		return Passed("%d", v)
	}
	ctx := context.Background()
	get(ctx)
	get(ctx)
	if want := []int{1, 2}; !reflect.DeepEqual(seen, want) {
		t.Fatalf("values before the first pass = %v, want %v", seen, want)
	}

	seen = nil
	checks := []Check{{Name: "a/1", Verify: get}, {Name: "a/2", Verify: get}, {Name: "a/3", Verify: get}}
	r := Runner{Mode: VerifyOnly}
	pass := func(checks []Check) {
		passes.Start()
		r.Run(ctx, checks)
	}
	pass(checks)
	get(ctx) // the caller's read after the run: the same pass
	pass(checks)
	if want := []int{3, 3, 3, 3, 4, 4, 4}; !reflect.DeepEqual(seen, want) {
		t.Fatalf("values over two passes = %v, want %v", seen, want)
	}

	seen = nil
	forget := Check{Name: "a/forget", Verify: func(ctx context.Context) Result { cache.Forget(); return Passed("") }}
	pass([]Check{checks[0], forget, checks[1]})
	if want := []int{5, 6}; !reflect.DeepEqual(seen, want) {
		t.Fatalf("values around a Forget = %v, want %v", seen, want)
	}

	fail = true
	passes.Start()
	rep := r.Run(ctx, checks[:2])
	fail = false
	if rep.Ready || reads != 8 {
		t.Fatalf("a failed read: ready %v, reads %d; want not ready and each check reading (8)", rep.Ready, reads)
	}

	seen = nil
	cache.Passes = nil
	get(ctx)
	get(ctx)
	if want := []int{9, 10}; !reflect.DeepEqual(seen, want) {
		t.Fatalf("values without Passes = %v, want %v", seen, want)
	}
}

// With a Version, a value serves later passes while the version stays the same and non-zero,
// for at most MaxAge; a Forget still drops it.
func TestPassCacheVersion(t *testing.T) {
	var version uint64 = 1
	var passes Passes
	cache := PassCache[int]{Passes: &passes, Version: func() uint64 { return version }, MaxAge: time.Hour}
	reads := 0
	read := func(context.Context) (int, error) { reads++; return reads, nil }
	var got []int
	pass := func() {
		passes.Start()
		(&Runner{}).Run(context.Background(), []Check{{Name: "a/1", Verify: func(ctx context.Context) Result {
			v, _ := cache.Get(ctx, read)
			got = append(got, v)
			return Passed("")
		}}})
	}
	pass()
	pass() // same version: reused
	version = 2
	pass() // changed: read again
	pass()
	cache.Forget()
	pass()
	version = 0
	pass() // nobody listening: every pass reads
	pass()
	version = 3
	cache.MaxAge = 0
	pass()
	pass() // too old
	if want := []int{1, 1, 2, 2, 3, 4, 5, 6, 7}; !reflect.DeepEqual(got, want) {
		t.Fatalf("values = %v, want %v", got, want)
	}

	// A change during a read may or may not be in the value: the next pass reads again.
	got = nil
	cache.MaxAge = time.Hour
	cache.Forget()
	read = func(context.Context) (int, error) { reads++; version++; return reads, nil }
	pass()
	pass()
	if want := []int{8, 9}; !reflect.DeepEqual(got, want) {
		t.Fatalf("values with a change during each read = %v, want %v", got, want)
	}
}
