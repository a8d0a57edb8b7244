package check

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Entry is one check's line in a Report.
type Entry struct {
	Name string `json:"name"`
	Result
	// Applied says the runner changed the host for this check in this pass.
	Applied bool `json:"applied,omitempty"`
	// WouldApply says a dry run found something to change.
	WouldApply bool `json:"wouldApply,omitempty"`
	// ApplyError is the error of a failed apply; the entry's status stays fail.
	ApplyError string `json:"applyError,omitempty"`
}

// Report is the outcome of one pass over all checks.
type Report struct {
	Time time.Time `json:"time"`
	// Ready is true when no check failed.
	Ready   bool    `json:"ready"`
	Entries []Entry `json:"checks"`
}

// FirstFailure returns the first failing entry, the one that names the node's condition.
func (r Report) FirstFailure() (Entry, bool) {
	for _, e := range r.Entries {
		if e.Status == Fail {
			return e, true
		}
	}
	return Entry{}, false
}

// RecheckIn is the shortest RecheckIn of the pass's entries, 0 when none asks for one.
func (r Report) RecheckIn() time.Duration {
	var d time.Duration
	for _, e := range r.Entries {
		if e.RecheckIn > 0 && (d == 0 || e.RecheckIn < d) {
			d = e.RecheckIn
		}
	}
	return d
}

// Entry returns the entry of the named check.
func (r Report) Entry(name string) (Entry, bool) {
	for _, e := range r.Entries {
		if e.Name == name {
			return e, true
		}
	}
	return Entry{}, false
}

// Selector matches checks by area ("kernel") or by full name ("links/tunl0").
type Selector []string

var selectorItem = regexp.MustCompile(`^[a-z0-9][a-z0-9._/-]*$`)

// ParseSelector parses a comma-separated list of areas and check names; field names the flag in errors.
func ParseSelector(field, s string) (Selector, error) {
	var sel Selector
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if !selectorItem.MatchString(item) {
			return nil, fmt.Errorf("%s: invalid check name %q: want an area such as \"kernel\" or a check name such as \"links/tunl0\"", field, item)
		}
		sel = append(sel, item)
	}
	return sel, nil
}

// Matches reports whether c is selected by area or by name.
func (s Selector) Matches(c Check) bool {
	area := c.Area()
	for _, item := range s {
		if item == c.Name || item == area {
			return true
		}
	}
	return false
}

// Validate returns an error naming field and the first item that selects none of checks, by
// area or by name, with the areas there are (and, for a name in a known area, that area's checks).
func (s Selector) Validate(field string, checks []Check) error {
	var areas []string
	for _, c := range checks {
		if !slices.Contains(areas, c.Area()) {
			areas = append(areas, c.Area())
		}
	}
	for _, item := range s {
		if slices.Contains(areas, item) || slices.ContainsFunc(checks, func(c Check) bool { return c.Name == item }) {
			continue
		}
		area, _, _ := strings.Cut(item, "/")
		if !slices.Contains(areas, area) {
			return fmt.Errorf("%s: unknown area or check %q: valid areas are %s, or a check name such as %q",
				field, item, strings.Join(areas, ", "), checks[len(checks)-1].Name)
		}
		var names []string
		for _, c := range checks {
			if c.Area() == area {
				names = append(names, c.Name)
			}
		}
		return fmt.Errorf("%s: unknown check %q: valid areas are %s; the %s checks of this configuration are %s",
			field, item, strings.Join(areas, ", "), area, strings.Join(names, ", "))
	}
	return nil
}

// String returns the list as given.
func (s Selector) String() string { return strings.Join(s, ",") }
