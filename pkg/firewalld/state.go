package firewalld

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/calico-prep/calico-prep/internal/atomicfile"
)

// stateFile is the record, under the state directory, of everything calico-prep added to
// firewalld. Cleanup removes exactly what it lists. Something that was there before calico-prep
// looked is never listed, so it is never removed.
const stateFile = "firewalld.json"

type state struct {
	Rules    []ownedRule `json:"rules,omitempty"`
	Zones    []string    `json:"zones,omitempty"`
	Policies []string    `json:"policies,omitempty"`
	// Packaged are the zones that were their packaged version when calico-prep first changed
	// them permanently, with their settings then: the change made firewalld copy the zone into
	// /etc/firewalld, and cleanup lets the packaged version apply again if, once calico-prep's
	// rules are gone, the settings are these again.
	Packaged []packagedZone `json:"packagedZones,omitempty"`
}

// packagedZone is a packaged zone as it was before calico-prep's first permanent change to it.
type packagedZone struct {
	Zone string `json:"zone"`
	// Settings are the zone's permanent settings in D-Bus's text form, by name.
	Settings map[string]string `json:"settings"`
}

// notePackaged records the zone pz, before calico-prep's permanent change to it, if it is its
// packaged version and not recorded yet; it reports whether it did. The caller saves the state
// before the change.
func (s *state) notePackaged(ctx context.Context, pz *ConfigZone) (noted bool, err error) {
	for _, p := range s.Packaged {
		if p.Zone == pz.Name {
			return false, nil
		}
	}
	origin, err := pz.Origin(ctx)
	if err != nil || origin != ZonePackaged {
		return false, err
	}
	settings, err := pz.settingsText(ctx)
	if err != nil {
		return false, err
	}
	s.Packaged = append(s.Packaged, packagedZone{Zone: pz.Name, Settings: settings})
	return true, nil
}

// ownedRule is one rule in one zone, with the layers calico-prep added it to.
type ownedRule struct {
	Zone string `json:"zone"`
	// Port and Protocol for a port rule ("179", "tcp"); IPProtocol for a protocol rule.
	Port       string `json:"port,omitempty"`
	Protocol   string `json:"protocol,omitempty"`
	IPProtocol string `json:"ipProtocol,omitempty"`
	Runtime    bool   `json:"runtime,omitempty"`
	Permanent  bool   `json:"permanent,omitempty"`
}

func (o ownedRule) String() string {
	if o.IPProtocol != "" {
		return o.IPProtocol
	}
	return o.Port + "/" + o.Protocol
}

func ownedFor(zone string, r Rule) ownedRule {
	if r.IPProtocol != "" {
		return ownedRule{Zone: zone, IPProtocol: r.IPProtocol}
	}
	return ownedRule{Zone: zone, Port: r.portArg(), Protocol: r.Port.Protocol}
}

func (o ownedRule) same(p ownedRule) bool {
	return o.Zone == p.Zone && o.Port == p.Port && o.Protocol == p.Protocol && o.IPProtocol == p.IPProtocol
}

// rule returns the recorded entry for the rule in zone, or one with no layer owned.
func (s *state) rule(zone string, r Rule) ownedRule {
	want := ownedFor(zone, r)
	for _, o := range s.Rules {
		if o.same(want) {
			return o
		}
	}
	return want
}

// setRule records o, or forgets it when it owns no layer.
func (s *state) setRule(o ownedRule) {
	s.Rules = slices.DeleteFunc(s.Rules, o.same)
	if o.Runtime || o.Permanent {
		s.Rules = append(s.Rules, o)
	}
}

func (s *state) empty() bool {
	return len(s.Rules) == 0 && len(s.Zones) == 0 && len(s.Policies) == 0 && len(s.Packaged) == 0
}

func loadState(dir string) (state, error) {
	var s state
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("read firewalld state: %w", err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("parse firewalld state %q: %w", filepath.Join(dir, stateFile), err)
	}
	return s, nil
}

// save writes the state atomically (temp file, fsync, rename, fsync of the directory) so that a
// crash leaves either the old record or the new one; an empty state removes the file.
func (s state) save(dir string) error {
	path := filepath.Join(dir, stateFile)
	if s.empty() {
		if _, err := atomicfile.Remove(path); err != nil {
			return fmt.Errorf("remove firewalld state: %w", err)
		}
		return nil
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode firewalld state: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create state directory %q: %w", dir, err)
	}
	if err := atomicfile.Write(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("save firewalld state: %w", err)
	}
	return nil
}
