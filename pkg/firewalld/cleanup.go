package firewalld

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Cleaned says what became of the zones that calico-prep's permanent rules had copied from
// their packaged version into /etc/firewalld.
type Cleaned struct {
	// Restored are zones that are their packaged version again: without calico-prep's rules they
	// held exactly the settings they had before its first change, so their copy went.
	Restored []string
	// Kept are zones whose copy stays because someone else changed them since calico-prep's
	// first change: those changes are theirs.
	Kept []string
}

// Cleanup removes exactly what calico-prep added: the rules the state in stateDir records, in
// the layers (runtime, permanent) it added them to, and its zone and policies, which carry its
// mark in their description even when the state was lost; everything else stays as it was. A
// zone that was its packaged version before calico-prep's first permanent change is made that
// again if nobody else changed it since (see Cleaned). What could not be removed stays recorded
// for the next attempt. Without firewalld on the bus it can remove nothing: ErrNotRunning if the
// state records anything, else nil.
func Cleanup(ctx context.Context, c *Client, stateDir string) (Cleaned, error) {
	var done Cleaned
	st, err := loadState(stateDir)
	if err != nil {
		return done, err
	}
	running := false
	if c != nil {
		if running, err = c.Running(ctx); err != nil {
			return done, fmt.Errorf("ask the bus for firewalld: %w", err)
		}
	}
	if !running {
		if st.empty() {
			return done, nil
		}
		return done, fmt.Errorf("remove calico-prep's firewalld rules: %w", ErrNotRunning)
	}
	for _, p := range []string{ForwardingPolicy, PodCIDRPolicy} {
		if !slices.Contains(st.Policies, p) {
			st.Policies = append(st.Policies, p)
		}
	}
	if !slices.Contains(st.Zones, ForwardingZone) {
		st.Zones = append(st.Zones, ForwardingZone)
	}
	var errs []error
	left := state{}
	for _, o := range st.Rules {
		if err := removeRule(ctx, c, o); err != nil {
			errs = append(errs, err)
			left.Rules = append(left.Rules, o)
		}
	}
	for _, p := range st.Packaged {
		if slices.ContainsFunc(left.Rules, func(o ownedRule) bool { return o.Zone == p.Zone }) {
			left.Packaged = append(left.Packaged, p) // not as it was yet: next attempt
			continue
		}
		restored, kept, err := restorePackaged(ctx, c, p)
		switch {
		case err != nil:
			errs = append(errs, err)
			left.Packaged = append(left.Packaged, p)
		case restored:
			done.Restored = append(done.Restored, p.Zone)
		case kept:
			done.Kept = append(done.Kept, p.Zone)
		}
	}
	removed := false
	// Policies first: a zone cannot go while a policy names it.
	for _, name := range st.Policies {
		gone, err := removePolicy(ctx, c, name)
		removed = removed || gone
		if err != nil {
			errs = append(errs, err)
			left.Policies = append(left.Policies, name)
		}
	}
	for _, name := range st.Zones {
		gone, err := removeZone(ctx, c, name)
		removed = removed || gone
		if err != nil {
			errs = append(errs, err)
			left.Zones = append(left.Zones, name)
		}
	}
	// Zones and policies leave the runtime configuration only with a reload.
	if removed {
		if err := c.Reload(ctx); err != nil {
			errs = append(errs, fmt.Errorf("reload firewalld: %w", err))
		}
	}
	if err := left.save(stateDir); err != nil {
		errs = append(errs, err)
	}
	return done, errors.Join(errs...)
}

// removeRule removes one recorded rule. The runtime copy stays when an operator's permanent
// rule (one calico-prep did not add) is what puts it in the runtime configuration.
func removeRule(ctx context.Context, c *Client, o ownedRule) error {
	permPresent := false
	pz, err := c.ConfigZone(ctx, o.Zone)
	switch {
	case errors.Is(err, ErrInvalidZone):
		// The zone is gone, and the rule with it.
	case err != nil:
		return fmt.Errorf("look up firewalld zone %q: %w", o.Zone, err)
	default:
		if o.IPProtocol != "" {
			permPresent, err = pz.QueryProtocol(ctx, o.IPProtocol)
		} else {
			permPresent, err = pz.QueryPort(ctx, o.Port, o.Protocol)
		}
		if err != nil {
			return fmt.Errorf("query %s in firewalld zone %q (permanent): %w", o, o.Zone, err)
		}
	}
	if o.Permanent && permPresent {
		if o.IPProtocol != "" {
			err = pz.RemoveProtocol(ctx, o.IPProtocol)
		} else {
			err = pz.RemovePort(ctx, o.Port, o.Protocol)
		}
		if err != nil && !errors.Is(err, ErrNotEnabled) {
			return fmt.Errorf("remove %s from firewalld zone %q (permanent): %w", o, o.Zone, err)
		}
	}
	if o.Runtime && (o.Permanent || !permPresent) {
		if o.IPProtocol != "" {
			err = c.RemoveProtocol(ctx, o.Zone, o.IPProtocol)
		} else {
			err = c.RemovePort(ctx, o.Zone, o.Port, o.Protocol)
		}
		if err != nil && !errors.Is(err, ErrNotEnabled) && !errors.Is(err, ErrInvalidZone) {
			return fmt.Errorf("remove %s from firewalld zone %q (runtime): %w", o, o.Zone, err)
		}
	}
	return nil
}

// removePolicy deletes a recorded policy if it still carries calico-prep's marker: one that
// was replaced by someone else's of the same name is theirs now.
func removePolicy(ctx context.Context, c *Client, name string) (bool, error) {
	p, err := c.ConfigPolicy(ctx, name)
	if errors.Is(err, ErrInvalidPolicy) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up firewalld policy %q: %w", name, err)
	}
	s, err := p.Settings(ctx)
	if err != nil {
		return false, fmt.Errorf("read firewalld policy %q: %w", name, err)
	}
	if !strings.HasPrefix(s.Description, ownedMarker) {
		return false, nil
	}
	if err := p.Remove(ctx); err != nil {
		return false, fmt.Errorf("remove firewalld policy %q: %w", name, err)
	}
	return true, nil
}

func removeZone(ctx context.Context, c *Client, name string) (bool, error) {
	z, err := c.ConfigZone(ctx, name)
	if errors.Is(err, ErrInvalidZone) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up firewalld zone %q: %w", name, err)
	}
	s, err := z.Settings(ctx)
	if err != nil {
		return false, fmt.Errorf("read firewalld zone %q: %w", name, err)
	}
	if !strings.HasPrefix(s.Description, ownedMarker) {
		return false, nil
	}
	if err := z.Remove(ctx); err != nil {
		return false, fmt.Errorf("remove firewalld zone %q: %w", name, err)
	}
	return true, nil
}

// restorePackaged lets the packaged version of a zone apply again if its copy in /etc/firewalld
// holds exactly the settings the zone had before calico-prep's first change to it; kept when the
// settings differ, because someone else changed the zone since. A zone that is gone, or is its
// packaged version already, needs nothing.
func restorePackaged(ctx context.Context, c *Client, p packagedZone) (restored, kept bool, err error) {
	z, err := c.ConfigZone(ctx, p.Zone)
	if errors.Is(err, ErrInvalidZone) {
		return false, false, nil
	}
	if err != nil {
		return false, false, fmt.Errorf("look up firewalld zone %q: %w", p.Zone, err)
	}
	origin, err := z.Origin(ctx)
	if err != nil {
		return false, false, fmt.Errorf("read firewalld zone %q: %w", p.Zone, err)
	}
	if origin != ZoneChanged {
		return false, false, nil
	}
	now, err := z.settingsText(ctx)
	if err != nil {
		return false, false, fmt.Errorf("read firewalld zone %q: %w", p.Zone, err)
	}
	if !maps.Equal(now, p.Settings) {
		return false, true, nil
	}
	if err := z.LoadDefaults(ctx); err != nil {
		return false, false, fmt.Errorf("restore the packaged firewalld zone %q: %w", p.Zone, err)
	}
	return true, false, nil
}
