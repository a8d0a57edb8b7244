package check

import (
	"context"
	"log/slog"
	"slices"
	"time"
)

// Mode says how far a Runner goes.
type Mode int

const (
	// VerifyOnly inspects and never changes the host (agent check).
	VerifyOnly Mode = iota
	// DryRun verifies and records, for each unsatisfied check that could be applied, that it
	// would be applied (agent run --dry-run).
	DryRun
	// Reconcile verifies, applies where unsatisfied and verifies again (agent run).
	Reconcile
)

// Runner drives a list of checks and produces one Report.
type Runner struct {
	Mode     Mode
	Disabled Selector
	Log      *slog.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Run runs every check in order. Checks run in the order given because later steps may rely on
// earlier ones (a firewalld zone before the interfaces in it). The caller starts the pass
// (Passes.Start) that the checks' PassCaches share.
func (r *Runner) Run(ctx context.Context, checks []Check) Report {
	now := r.Now
	if now == nil {
		now = time.Now
	}
	log := r.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rep := Report{Time: now().UTC().Truncate(time.Second), Entries: make([]Entry, 0, len(checks))}
	for _, c := range checks {
		if ctx.Err() != nil {
			rep.Entries = append(rep.Entries, Entry{Name: c.Name, Result: Errored(ctx.Err())})
			continue
		}
		rep.Entries = append(rep.Entries, r.runOne(ctx, log.With("check", c.Name), c))
	}
	rep.Ready = !slices.ContainsFunc(rep.Entries, func(e Entry) bool { return e.Status == Fail })
	return rep
}

func (r *Runner) runOne(ctx context.Context, log *slog.Logger, c Check) Entry {
	if r.Disabled.Matches(c) {
		return Entry{Name: c.Name, Result: Result{Status: Disabled, Reason: "DisabledByOperator", Message: "disabled by --disable-checks"}}
	}
	e := Entry{Name: c.Name, Result: c.Verify(ctx)}
	if e.Status != Fail || c.Apply == nil || e.Settling {
		return e // nothing to change, or nothing to change yet: its component is starting
	}
	switch r.Mode {
	case VerifyOnly:
	case DryRun:
		e.WouldApply = true
	case Reconcile:
		log.Info("applying", "reason", e.Reason, "message", e.Message)
		if err := c.Apply(ctx); err != nil {
			log.Warn("apply failed", "err", err)
			e.ApplyError = err.Error()
			return e
		}
		e.Applied = true
		e.Result = c.Verify(ctx)
	}
	return e
}
