package firewalld

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"regexp"

	"github.com/calico-prep/calico-prep/pkg/calico"
	"github.com/calico-prep/calico-prep/pkg/check"
	"github.com/calico-prep/calico-prep/pkg/config"
)

// Names of the objects calico-prep creates and owns in firewalld. Zone names may have at most
// 17 characters and policy names 18 (firewalld derives chain names from them).
const (
	// ForwardingZone holds Calico's interfaces with target ACCEPT, so that traffic from pods
	// (to the host or forwarded anywhere) is accepted.
	ForwardingZone = "calico-prep"
	// ForwardingPolicy accepts traffic forwarded from any zone to ForwardingZone: traffic to
	// pods, which the uplink zone's forward rules would otherwise reject (firewalld#527).
	ForwardingPolicy = "calico-prep-fwd"
	// PodCIDRPolicy accepts forwarded traffic whose source is in a pod CIDR, whatever the
	// interfaces (e.g. a remote pod's packet routed through this node without encapsulation).
	PodCIDRPolicy = "calico-prep-pods"
)

// ownedMarker begins the description of every zone and policy calico-prep creates. With the
// state file it proves ownership; alone it lets a reinstalled agent adopt its own objects.
const ownedMarker = "Managed by calico-prep"

// calicoInterfaces are the names Calico gives its interfaces; "+" is firewalld's wildcard.
func calicoInterfaces() []string {
	return append([]string{calico.WorkloadPrefix + "+"}, calico.TunnelDevices()...)
}

// Options say what to manage in firewalld on this node.
type Options struct {
	// Mode is auto (manage firewalld when it runs), on (require it) or off (leave it alone).
	Mode config.Mode
	// Zone receives the rules; "" means the zone of NodeInterface, else the default zone.
	Zone string
	// NodeInterface returns the interface that carries the node IP (from Calico's
	// autodetection); "" when there is none. Only used when Zone is "".
	NodeInterface func(ctx context.Context) (string, error)
	// Rules are opened in Zone, in runtime and permanent configuration.
	Rules []Rule
	// Forwarding creates ForwardingZone and the forwarding policies.
	Forwarding bool
	// PodCIDRs feed PodCIDRPolicy; none means no such policy.
	PodCIDRs []netip.Prefix
	// RemoveStale closes the rules calico-prep added that Rules no longer hold (check
	// firewalld/stale-rules). Only with a complete configuration: one built while Calico's
	// resources cannot be read would close what Calico still needs.
	RemoveStale bool
	// StateDir holds the record of what calico-prep added (firewalld.json).
	StateDir string
	// Passes, started by whoever runs the checks, lets the checks of one pass share what they
	// read from firewalld; nil: every check reads for itself.
	Passes *check.Passes
	// Log receives one line per change; nil discards.
	Log *slog.Logger
}

var zoneNamePattern = regexp.MustCompile(`^[A-Za-z0-9_+-]{1,17}$`)

// Validate checks the options without touching firewalld; the error names the bad value.
func (o Options) Validate() error {
	switch o.Mode {
	case config.ModeAuto, config.ModeOn, config.ModeOff:
	default:
		return fmt.Errorf("firewalld mode %q: want auto, on or off", o.Mode)
	}
	if o.Zone != "" && !zoneNamePattern.MatchString(o.Zone) {
		return fmt.Errorf("firewalld zone %q: invalid name", o.Zone)
	}
	if o.Zone == ForwardingZone {
		return fmt.Errorf("firewalld zone %q: that is calico-prep's zone for Calico's interfaces, not for the node's", o.Zone)
	}
	for _, r := range o.Rules {
		if err := r.Validate(); err != nil {
			return err
		}
	}
	for _, p := range o.PodCIDRs {
		if !p.IsValid() || p.Masked() != p {
			return fmt.Errorf("firewalld pod CIDR %q: not a network address", p)
		}
	}
	if !filepath.IsAbs(o.StateDir) {
		return fmt.Errorf("firewalld state directory %q: not an absolute path", o.StateDir)
	}
	return nil
}

func (o Options) logger() *slog.Logger {
	if o.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Log
}

// forwardingZoneSettings is ForwardingZone as calico-prep wants it.
func forwardingZoneSettings() ZoneSettings {
	return ZoneSettings{
		Short:       "Calico",
		Description: ownedMarker + ": Calico's pod and tunnel interfaces; removed by 'agent cleanup'.",
		Target:      "ACCEPT",
		Interfaces:  calicoInterfaces(),
		Forward:     true,
	}
}

type namedPolicy struct {
	name     string
	settings PolicySettings
}

// forwardingPolicies are the policies as calico-prep wants them. Priority -1 puts them before
// the zones' own forward rules, which end in a reject, and after any operator policy with a
// lower priority.
func (o Options) forwardingPolicies() []namedPolicy {
	ps := []namedPolicy{{ForwardingPolicy, PolicySettings{
		Short:        "Calico pods",
		Description:  ownedMarker + ": accept traffic forwarded to Calico's interfaces; removed by 'agent cleanup'.",
		Target:       "ACCEPT",
		Priority:     -1,
		IngressZones: []string{"ANY"},
		EgressZones:  []string{ForwardingZone},
	}}}
	if len(o.PodCIDRs) == 0 {
		return ps
	}
	var rules []string
	for _, p := range o.PodCIDRs {
		family := "ipv4"
		if p.Addr().Is6() {
			family = "ipv6"
		}
		rules = append(rules, fmt.Sprintf(`rule family="%s" source address="%s" accept`, family, p))
	}
	return append(ps, namedPolicy{PodCIDRPolicy, PolicySettings{
		Short:        "Calico pod CIDR",
		Description:  ownedMarker + ": accept forwarded traffic from Calico's pod CIDRs; removed by 'agent cleanup'.",
		Target:       "CONTINUE",
		Priority:     -1,
		IngressZones: []string{"ANY"},
		EgressZones:  []string{"ANY"},
		RichRules:    rules,
	}})
}
