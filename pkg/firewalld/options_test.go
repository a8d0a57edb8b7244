package firewalld

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/calico-prep/calico-prep/pkg/calico"

	"github.com/calico-prep/calico-prep/pkg/config"
)

func TestOptionsValidate(t *testing.T) {
	good := Options{Mode: config.ModeAuto, StateDir: "/var/lib/calico-prep",
		Rules: Rules(RuleInput{BGP: true, Encapsulation: calico.EncapIPIP})}
	tests := []struct {
		name    string
		edit    func(*Options)
		wantErr string
	}{
		{"good", func(*Options) {}, ""},
		{"zone given", func(o *Options) { o.Zone = "internal" }, ""},
		{"bad mode", func(o *Options) { o.Mode = "maybe" }, `mode "maybe"`},
		{"bad zone name", func(o *Options) { o.Zone = "pub lic" }, `zone "pub lic"`},
		{"zone name too long", func(o *Options) { o.Zone = "a-very-long-zone-name" }, "invalid name"},
		{"own zone as node zone", func(o *Options) { o.Zone = ForwardingZone }, "calico-prep's zone"},
		{"bad rule", func(o *Options) { o.Rules = append(o.Rules, Rule{IPProtocol: "ipip"}) }, "protocol 94"},
		{"port out of range", func(o *Options) {
			o.Rules = append(o.Rules, Rule{Port: config.Port{From: 0, To: 0, Protocol: "tcp"}})
		}, "out of range"},
		{"pod CIDR with host bits", func(o *Options) { o.PodCIDRs = []netip.Prefix{netip.MustParsePrefix("192.168.1.1/16")} }, "192.168.1.1/16"},
		{"relative state dir", func(o *Options) { o.StateDir = "state" }, `"state"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := good
			o.Rules = append([]Rule(nil), good.Rules...)
			tt.edit(&o)
			err := o.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Validate() = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestForwardingPolicies(t *testing.T) {
	o := Options{}
	ps := o.forwardingPolicies()
	if len(ps) != 1 || ps[0].name != ForwardingPolicy {
		t.Fatalf("without pod CIDRs: %+v, want only %s", ps, ForwardingPolicy)
	}
	if s := ps[0].settings; s.Target != "ACCEPT" || s.IngressZones[0] != "ANY" || s.EgressZones[0] != ForwardingZone {
		t.Errorf("%s = %+v, want ANY -> %s ACCEPT", ForwardingPolicy, s, ForwardingZone)
	}
	o.PodCIDRs = []netip.Prefix{netip.MustParsePrefix("192.168.0.0/16"), netip.MustParsePrefix("fd00:10::/64")}
	ps = o.forwardingPolicies()
	if len(ps) != 2 || ps[1].name != PodCIDRPolicy {
		t.Fatalf("with pod CIDRs: %+v, want %s too", ps, PodCIDRPolicy)
	}
	want := []string{
		`rule family="ipv4" source address="192.168.0.0/16" accept`,
		`rule family="ipv6" source address="fd00:10::/64" accept`,
	}
	if got := ps[1].settings.RichRules; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("rich rules = %q, want %q", got, want)
	}
	for _, p := range ps {
		if len(p.name) > 18 {
			t.Errorf("policy name %q is longer than firewalld's 18 characters", p.name)
		}
		if !strings.HasPrefix(p.settings.Description, ownedMarker) {
			t.Errorf("policy %s lacks the ownership marker", p.name)
		}
	}
	if len(ForwardingZone) > 17 || !strings.HasPrefix(forwardingZoneSettings().Description, ownedMarker) {
		t.Error("forwarding zone name too long or without marker")
	}
}

func TestPoliciesSupported(t *testing.T) {
	tests := []struct {
		version string
		want    bool
	}{
		{"1.3.3", true}, {"0.9.0", true}, {"0.9", true}, {"2.0.0", true}, {"0.10.1", true},
		{"0.8.2", false}, {"0.6.3", false}, {"", false}, {"garbage", false},
	}
	for _, tt := range tests {
		if got := policiesSupported(tt.version); got != tt.want {
			t.Errorf("policiesSupported(%q) = %t, want %t", tt.version, got, tt.want)
		}
	}
}

func TestZoneDrift(t *testing.T) {
	want := forwardingZoneSettings()
	tests := []struct {
		name string
		have ZoneSettings
		want string // substring; "" means no drift
	}{
		{"as wanted", want, ""},
		{"operator added an interface", func() ZoneSettings { s := want; s.Interfaces = append([]string{"cni0"}, want.Interfaces...); return s }(), ""},
		{"missing interface", func() ZoneSettings { s := want; s.Interfaces = want.Interfaces[1:]; return s }(), "without interfaces cali+"},
		{"target", func() ZoneSettings { s := want; s.Target = "default"; return s }(), "target default"},
		{"forward", func() ZoneSettings { s := want; s.Forward = false; return s }(), "forward false"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := zoneDrift(tt.have, want)
			if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
				t.Errorf("zoneDrift = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestPolicyDrift(t *testing.T) {
	want := Options{PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}.forwardingPolicies()[1].settings
	tests := []struct {
		name string
		edit func(*PolicySettings)
		want string
	}{
		{"as wanted", func(*PolicySettings) {}, ""},
		{"description is not drift", func(p *PolicySettings) { p.Description = "edited" }, ""},
		{"priority", func(p *PolicySettings) { p.Priority = 5 }, "priority 5"},
		{"egress", func(p *PolicySettings) { p.EgressZones = []string{"public"} }, "egress zones public"},
		{"rules", func(p *PolicySettings) { p.RichRules = nil }, "rules"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			have := want
			have.RichRules = append([]string(nil), want.RichRules...)
			tt.edit(&have)
			got := policyDrift(have, want)
			if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
				t.Errorf("policyDrift = %q, want %q", got, tt.want)
			}
		})
	}
}
