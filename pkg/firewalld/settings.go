package firewalld

import (
	"fmt"

	"github.com/godbus/dbus/v5"
)

// ZoneSettings is the part of a zone's settings (firewalld's a{sv} "settings2") that
// calico-prep reads or writes.
type ZoneSettings struct {
	Short, Description string
	// Target is "default", "ACCEPT", "DROP" or "%%REJECT%%".
	Target     string
	Interfaces []string
	// Forward is intra-zone forwarding (firewalld 0.9 and later).
	Forward bool
	// Ports and Protocols are read, never written: the rules are added one by one.
	Ports     []PortEntry
	Protocols []string
}

// PortEntry is one port of a zone as firewalld stores it: "179", "51820-51821", or a service
// name such as "bgp", with its protocol.
type PortEntry struct{ Port, Protocol string }

// PolicySettings is the part of a policy's settings that calico-prep reads or writes.
type PolicySettings struct {
	Short, Description string
	// Target is "CONTINUE", "ACCEPT", "DROP" or "REJECT".
	Target       string
	Priority     int32
	IngressZones []string
	EgressZones  []string
	RichRules    []string
}

func decodeZoneSettings(m map[string]dbus.Variant) (ZoneSettings, error) {
	d := decoder{m: m}
	s := ZoneSettings{
		Short:       d.str("short"),
		Description: d.str("description"),
		Target:      d.str("target"),
		Interfaces:  d.strs("interfaces"),
		Forward:     d.boolean("forward"),
		Ports:       d.ports("ports"),
		Protocols:   d.strs("protocols"),
	}
	return s, d.err
}

// encode returns the settings as update2/addZone2 take them. Only the keys calico-prep owns are
// sent; firewalld keeps the rest as they are.
func (s ZoneSettings) encode() map[string]dbus.Variant {
	return map[string]dbus.Variant{
		"short":       dbus.MakeVariant(s.Short),
		"description": dbus.MakeVariant(s.Description),
		"target":      dbus.MakeVariant(s.Target),
		"interfaces":  dbus.MakeVariant(nonNil(s.Interfaces)),
		"forward":     dbus.MakeVariant(s.Forward),
	}
}

func decodePolicySettings(m map[string]dbus.Variant) (PolicySettings, error) {
	d := decoder{m: m}
	s := PolicySettings{
		Short:        d.str("short"),
		Description:  d.str("description"),
		Target:       d.str("target"),
		Priority:     d.int32("priority"),
		IngressZones: d.strs("ingress_zones"),
		EgressZones:  d.strs("egress_zones"),
		RichRules:    d.strs("rich_rules"),
	}
	return s, d.err
}

func (s PolicySettings) encode() map[string]dbus.Variant {
	return map[string]dbus.Variant{
		"short":         dbus.MakeVariant(s.Short),
		"description":   dbus.MakeVariant(s.Description),
		"target":        dbus.MakeVariant(s.Target),
		"priority":      dbus.MakeVariant(s.Priority),
		"ingress_zones": dbus.MakeVariant(nonNil(s.IngressZones)),
		"egress_zones":  dbus.MakeVariant(nonNil(s.EgressZones)),
		"rich_rules":    dbus.MakeVariant(nonNil(s.RichRules)),
	}
}

// nonNil keeps an empty list an "as" on the wire instead of a nil that godbus cannot type.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// decoder reads a{sv} values with checked type assertions. firewalld leaves out keys whose value
// is empty, so a missing key is the zero value, while a key of the wrong type is an error.
type decoder struct {
	m   map[string]dbus.Variant
	err error
}

func (d *decoder) fail(key string, v dbus.Variant) {
	if d.err == nil {
		d.err = fmt.Errorf("setting %q has D-Bus type %s", key, v.Signature())
	}
}

func (d *decoder) str(key string) string {
	v, ok := d.m[key]
	if !ok {
		return ""
	}
	s, ok := v.Value().(string)
	if !ok {
		d.fail(key, v)
	}
	return s
}

func (d *decoder) strs(key string) []string {
	v, ok := d.m[key]
	if !ok {
		return nil
	}
	s, ok := v.Value().([]string)
	if !ok {
		d.fail(key, v)
	}
	return s
}

// ports reads an a(ss) of port and protocol.
func (d *decoder) ports(key string) []PortEntry {
	v, ok := d.m[key]
	if !ok {
		return nil
	}
	raw, ok := v.Value().([][]any)
	if !ok {
		d.fail(key, v)
		return nil
	}
	out := make([]PortEntry, 0, len(raw))
	for _, e := range raw {
		var p PortEntry
		ok := len(e) == 2
		if ok {
			p.Port, ok = e[0].(string)
		}
		if ok {
			p.Protocol, ok = e[1].(string)
		}
		if !ok {
			d.fail(key, v)
			return nil
		}
		out = append(out, p)
	}
	return out
}

func (d *decoder) boolean(key string) bool {
	v, ok := d.m[key]
	if !ok {
		return false
	}
	b, ok := v.Value().(bool)
	if !ok {
		d.fail(key, v)
	}
	return b
}

func (d *decoder) int32(key string) int32 {
	v, ok := d.m[key]
	if !ok {
		return 0
	}
	i, ok := v.Value().(int32)
	if !ok {
		d.fail(key, v)
	}
	return i
}

func variantString(m map[string]dbus.Variant, key string) (string, error) {
	d := decoder{m: m}
	s := d.str(key)
	return s, d.err
}
