// Package check defines the unit every preparation step implements (a name, a read-only verify
// and an optional idempotent apply), the runner that drives a list of them, and the report that
// the check command, the daemon, metrics and node status all consume.
package check

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Status is the outcome of verifying one check.
type Status string

const (
	// Pass means the host is as Calico needs it.
	Pass Status = "pass"
	// Fail means the host is not as Calico needs it (or the check could not find out).
	Fail Status = "fail"
	// NotApplicable means the check does not apply to this host or configuration, e.g. a
	// firewalld rule on a node without firewalld, or tunl0 before Calico could have created it.
	NotApplicable Status = "not-applicable"
	// Disabled means the operator turned the check off with --disable-checks.
	Disabled Status = "disabled"
)

// Result is what Verify returns.
type Result struct {
	Status Status `json:"status"`
	// Reason is a CamelCase word naming the outcome, e.g. "PodCIDROverlap"; it becomes the
	// NodeCondition reason when this is the first failing check.
	Reason string `json:"reason,omitempty"`
	// Message is one human sentence, e.g. "pod CIDR 192.168.0.0/16 overlaps ens33 address 192.168.79.128/24".
	Message string `json:"message,omitempty"`
	// Facts are machine-readable details consumers may rely on (metrics, node report),
	// e.g. zone, runtime and permanent for a firewalld rule.
	Facts map[string]string `json:"facts,omitempty"`
	// RecheckIn asks for another pass after this long, for a state that is expected to settle
	// without any event to announce it (e.g. a veth that Calico's CNI plugin is bringing up).
	RecheckIn time.Duration `json:"-"`
	// Settling marks a result that may not stand: what the check reads is starting or coming
	// back (a daemon loading its configuration, a connection to the system bus being made
	// again). The runner applies nothing for it; the daemon keeps its last judgement of the
	// check for a while and asks again (RecheckIn where nothing will announce the end).
	Settling bool `json:"-"`
}

// Passed returns a passing result.
func Passed(format string, args ...any) Result {
	return Result{Status: Pass, Reason: "Satisfied", Message: fmt.Sprintf(format, args...)}
}

// Failed returns a failing result with a CamelCase reason.
func Failed(reason, format string, args ...any) Result {
	return Result{Status: Fail, Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// Skipped returns a not-applicable result with a CamelCase reason.
func Skipped(reason, format string, args ...any) Result {
	return Result{Status: NotApplicable, Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// Errored is the failing result of a verify that could not find out, e.g. because a D-Bus
// call failed. The check degrades; the agent carries on.
func Errored(err error) Result {
	return Result{Status: Fail, Reason: "VerifyError", Message: err.Error()}
}

// Settle returns r marked as settling, to be asked again after recheck (0: an event will say
// when).
func (r Result) Settle(recheck time.Duration) Result {
	r.Settling, r.RecheckIn = true, recheck
	return r
}

// With returns r with one more fact.
func (r Result) With(key, value string) Result {
	facts := make(map[string]string, len(r.Facts)+1)
	for k, v := range r.Facts {
		facts[k] = v
	}
	facts[key] = value
	r.Facts = facts
	return r
}

// Check is one preparation step.
type Check struct {
	// Name is "area/name", e.g. "links/tunl0" or "firewalld/port-179-tcp". The area is one of
	// the names --disable-checks accepts for a whole group.
	Name string
	// Verify inspects the host without changing it.
	Verify func(ctx context.Context) Result
	// Apply changes the host so that Verify passes. It must be idempotent and change only
	// what calico-prep owns. Nil for checks that only inspect.
	Apply func(ctx context.Context) error
}

// Area returns the part of the name before the first slash.
func (c Check) Area() string {
	area, _, _ := strings.Cut(c.Name, "/")
	return area
}
