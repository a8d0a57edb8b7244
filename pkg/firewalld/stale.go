package firewalld

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/calico-prep/calico-prep/pkg/check"
)

// StaleCheckName is the check that closes what calico-prep opened for an older configuration.
const StaleCheckName = "firewalld/stale-rules"

// stale lists the rules the state records as calico-prep's in the rules' zone that the
// configuration no longer needs, e.g. 4789/udp after Felix's vxlanPort became 8472. Rules
// recorded in another zone stay (a zone resolved differently for a moment must not cost the
// node its rules there); agent cleanup removes them.
func (m *manager) stale(ctx context.Context) (string, []ownedRule, error) {
	zone, err := m.zone(ctx)
	if err != nil {
		return "", nil, err
	}
	st, err := loadState(m.o.StateDir)
	if err != nil {
		return zone, nil, err
	}
	var out []ownedRule
	for _, o := range st.Rules {
		if o.Zone == zone && !slices.ContainsFunc(m.o.Rules, func(r Rule) bool { return ownedFor(zone, r).same(o) }) {
			out = append(out, o)
		}
	}
	return zone, out, nil
}

func ruleList(rules []ownedRule) string {
	s := make([]string, len(rules))
	for i, o := range rules {
		s[i] = o.String()
	}
	return strings.Join(s, ", ")
}

func (m *manager) verifyStale(ctx context.Context) check.Result {
	if m.c == nil {
		return m.notRunning()
	}
	zone, stale, err := m.stale(ctx)
	if err != nil {
		return m.errored(err)
	}
	if len(stale) == 0 {
		return check.Passed("every rule calico-prep added to firewalld zone %s is still needed", zone).With(check.FactZone, zone)
	}
	return check.Failed("StaleRule", "%s in firewalld zone %s: added by calico-prep and no longer needed by the configuration: would remove it",
		ruleList(stale), zone).With(check.FactZone, zone)
}

// applyStale removes the stale rules from the layers calico-prep added them to, as cleanup
// does, and forgets each one removed.
func (m *manager) applyStale(ctx context.Context) error {
	defer m.forget()
	if _, err := m.preflight(ctx); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	_, stale, err := m.stale(ctx)
	if err != nil {
		return err
	}
	st, err := loadState(m.o.StateDir)
	if err != nil {
		return err
	}
	var errs []error
	for _, o := range stale {
		if err := removeRule(ctx, m.c, o); err != nil {
			errs = append(errs, err)
			continue
		}
		m.log.Info("removed rule", "rule", o.String(), "zone", o.Zone, "why", "no longer needed")
		st.Rules = slices.DeleteFunc(st.Rules, o.same)
	}
	if err := st.save(m.o.StateDir); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("remove stale firewalld rules: %w", errors.Join(errs...))
	}
	return nil
}
