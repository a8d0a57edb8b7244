package firewalld

import (
	"context"
	"fmt"

	"github.com/godbus/dbus/v5"
)

// Permanent configuration: what firewalld writes to /etc/firewalld and loads on reload, restart
// and boot. Each zone and policy is a D-Bus object of its own; its path is only valid until the
// next reload, so look it up for each use.

// ConfigZone returns the permanent zone of that name; ErrInvalidZone when there is none.
func (c *Client) ConfigZone(ctx context.Context, name string) (*ConfigZone, error) {
	var p dbus.ObjectPath
	if err := c.call(ctx, configPath, ifaceConfig, "getZoneByName", []any{name}, &p); err != nil {
		return nil, err
	}
	return &ConfigZone{c: c, path: p, Name: name}, nil
}

// AddConfigZone creates a permanent zone; ErrNameConflict when one of that name exists. It
// reaches the runtime configuration with the next reload.
func (c *Client) AddConfigZone(ctx context.Context, name string, s ZoneSettings) (*ConfigZone, error) {
	var p dbus.ObjectPath
	if err := c.call(ctx, configPath, ifaceConfig, "addZone2", []any{name, s.encode()}, &p); err != nil {
		return nil, err
	}
	return &ConfigZone{c: c, path: p, Name: name}, nil
}

// ConfigPolicy returns the permanent policy of that name; ErrInvalidPolicy when there is none.
func (c *Client) ConfigPolicy(ctx context.Context, name string) (*ConfigPolicy, error) {
	var p dbus.ObjectPath
	if err := c.call(ctx, configPath, ifaceConfig, "getPolicyByName", []any{name}, &p); err != nil {
		return nil, err
	}
	return &ConfigPolicy{c: c, path: p, Name: name}, nil
}

// AddConfigPolicy creates a permanent policy (firewalld 0.9 and later).
func (c *Client) AddConfigPolicy(ctx context.Context, name string, s PolicySettings) (*ConfigPolicy, error) {
	var p dbus.ObjectPath
	if err := c.call(ctx, configPath, ifaceConfig, "addPolicy", []any{name, s.encode()}, &p); err != nil {
		return nil, err
	}
	return &ConfigPolicy{c: c, path: p, Name: name}, nil
}

// ConfigZone is one permanent zone. Each change rewrites the zone's file; firewalld keeps every
// setting the change does not name.
type ConfigZone struct {
	c    *Client
	path dbus.ObjectPath
	Name string
}

// Settings returns the zone's permanent settings.
func (z *ConfigZone) Settings(ctx context.Context) (ZoneSettings, error) {
	var m map[string]dbus.Variant
	if err := z.c.call(ctx, z.path, ifaceConfigZone, "getSettings2", nil, &m); err != nil {
		return ZoneSettings{}, err
	}
	return decodeZoneSettings(m)
}

// Update replaces the settings ZoneSettings names (short, description, target, interfaces,
// forward). Only for zones calico-prep owns: it overwrites the operator's values of those.
func (z *ConfigZone) Update(ctx context.Context, s ZoneSettings) error {
	return z.c.call(ctx, z.path, ifaceConfigZone, "update2", []any{s.encode()})
}

// Remove deletes the zone from the permanent configuration.
func (z *ConfigZone) Remove(ctx context.Context) error {
	return z.c.call(ctx, z.path, ifaceConfigZone, "remove", nil)
}

// AddPort opens port/proto permanently; ErrAlreadyEnabled when it is open already.
func (z *ConfigZone) AddPort(ctx context.Context, port, proto string) error {
	return z.c.call(ctx, z.path, ifaceConfigZone, "addPort", []any{port, proto})
}

// QueryPort reports whether port/proto is open permanently.
func (z *ConfigZone) QueryPort(ctx context.Context, port, proto string) (bool, error) {
	return z.c.query(ctx, z.path, ifaceConfigZone, "queryPort", port, proto)
}

// RemovePort closes port/proto permanently; ErrNotEnabled when it was not open.
func (z *ConfigZone) RemovePort(ctx context.Context, port, proto string) error {
	return z.c.call(ctx, z.path, ifaceConfigZone, "removePort", []any{port, proto})
}

// AddProtocol accepts an IP protocol permanently.
func (z *ConfigZone) AddProtocol(ctx context.Context, proto string) error {
	return z.c.call(ctx, z.path, ifaceConfigZone, "addProtocol", []any{proto})
}

// QueryProtocol reports whether an IP protocol is accepted permanently.
func (z *ConfigZone) QueryProtocol(ctx context.Context, proto string) (bool, error) {
	return z.c.query(ctx, z.path, ifaceConfigZone, "queryProtocol", proto)
}

// RemoveProtocol stops accepting an IP protocol permanently.
func (z *ConfigZone) RemoveProtocol(ctx context.Context, proto string) error {
	return z.c.call(ctx, z.path, ifaceConfigZone, "removeProtocol", []any{proto})
}

// ZoneOrigin is where a permanent zone's settings come from, by firewalld's "builtin" and
// "default" properties of the zone.
type ZoneOrigin int

const (
	// ZonePackaged is a zone as packaged (builtin): read from /usr/lib/firewalld/zones, with no
	// copy in /etc/firewalld.
	ZonePackaged ZoneOrigin = iota
	// ZoneChanged is a packaged zone shadowed by a copy in /etc/firewalld (neither builtin nor
	// default), which the first permanent change to the zone wrote. LoadDefaults removes it.
	ZoneChanged
	// ZoneCustom is a zone that exists only in /etc/firewalld (default, not builtin).
	ZoneCustom
)

func (o ZoneOrigin) String() string {
	switch o {
	case ZonePackaged:
		return "packaged"
	case ZoneChanged:
		return "changed"
	case ZoneCustom:
		return "custom"
	}
	return fmt.Sprintf("ZoneOrigin(%d)", int(o))
}

// Origin says whether the zone is its packaged version, a changed copy of it, or a zone of the
// node's own.
func (z *ConfigZone) Origin(ctx context.Context) (ZoneOrigin, error) {
	var props map[string]dbus.Variant
	if err := z.c.call(ctx, z.path, ifaceProperties, "GetAll", []any{ifaceConfigZone}, &props); err != nil {
		return 0, err
	}
	d := decoder{m: props}
	builtin, packaged := d.boolean("builtin"), d.boolean("default")
	switch {
	case d.err != nil:
		return 0, fmt.Errorf("decode properties of firewalld zone %q: %w", z.Name, d.err)
	case builtin:
		return ZonePackaged, nil
	case packaged:
		return ZoneCustom, nil
	}
	return ZoneChanged, nil
}

// LoadDefaults makes a changed packaged zone its packaged version again, in the permanent
// configuration: firewalld moves the zone's copy in /etc/firewalld to <zone>.xml.old, its backup.
func (z *ConfigZone) LoadDefaults(ctx context.Context) error {
	return z.c.call(ctx, z.path, ifaceConfigZone, "loadDefaults", nil)
}

// settingsText returns every permanent setting of the zone, as firewalld reports them
// (getSettings2), in D-Bus's text form: two readings are equal when the settings are, whatever
// settings a firewalld version has.
func (z *ConfigZone) settingsText(ctx context.Context) (map[string]string, error) {
	var m map[string]dbus.Variant
	if err := z.c.call(ctx, z.path, ifaceConfigZone, "getSettings2", nil, &m); err != nil {
		return nil, err
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v.String()
	}
	return out, nil
}

// ConfigPolicy is one permanent policy.
type ConfigPolicy struct {
	c    *Client
	path dbus.ObjectPath
	Name string
}

// Settings returns the policy's permanent settings.
func (p *ConfigPolicy) Settings(ctx context.Context) (PolicySettings, error) {
	var m map[string]dbus.Variant
	if err := p.c.call(ctx, p.path, ifaceConfigPol, "getSettings", nil, &m); err != nil {
		return PolicySettings{}, err
	}
	return decodePolicySettings(m)
}

// Update replaces the settings PolicySettings names. Only for policies calico-prep owns.
func (p *ConfigPolicy) Update(ctx context.Context, s PolicySettings) error {
	return p.c.call(ctx, p.path, ifaceConfigPol, "update", []any{s.encode()})
}

// Remove deletes the policy from the permanent configuration.
func (p *ConfigPolicy) Remove(ctx context.Context) error {
	return p.c.call(ctx, p.path, ifaceConfigPol, "remove", nil)
}
