package firewalld

import (
	"slices"
	"strings"
	"testing"

	"github.com/calico-prep/calico-prep/pkg/calico"

	"github.com/calico-prep/calico-prep/pkg/config"
)

func TestRules(t *testing.T) {
	tests := []struct {
		name string
		in   RuleInput
		want []string
	}{
		{"default manifest: BGP with IPIP", RuleInput{BGP: true, Encapsulation: calico.EncapIPIP}, []string{"179/tcp", "ipencap"}},
		{"VXLAN without BGP", RuleInput{Encapsulation: calico.EncapVXLAN}, []string{"4789/udp"}},
		{"no encapsulation", RuleInput{BGP: true, Encapsulation: calico.EncapNone}, []string{"179/tcp"}},
		{"Typha", RuleInput{BGP: true, Typha: true, Encapsulation: calico.EncapIPIP}, []string{"179/tcp", "ipencap", "5473/tcp"}},
		{"WireGuard IPv4 only", RuleInput{WireGuard: true}, []string{"51820/udp"}},
		{"WireGuard dual stack", RuleInput{WireGuard: true, IPv6: true}, []string{"51820/udp", "51821/udp"}},
		{"IPv6 without WireGuard adds nothing", RuleInput{IPv6: true, Encapsulation: calico.EncapVXLAN}, []string{"4789/udp"}},
		{"extra ports, duplicates once", RuleInput{BGP: true, Extra: []config.Port{
			{From: 2379, To: 2379, Protocol: "tcp"}, {From: 179, To: 179, Protocol: "tcp"}, {From: 30000, To: 32767, Protocol: "tcp"},
		}}, []string{"179/tcp", "2379/tcp", "30000-32767/tcp"}},
		{"nothing", RuleInput{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, r := range Rules(tt.in) {
				if err := r.Validate(); err != nil {
					t.Errorf("Rules returned an invalid rule: %v", err)
				}
				if r.Why == "" {
					t.Errorf("rule %s has no reason", r)
				}
				got = append(got, r.String())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Rules(%+v) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestRuleNames(t *testing.T) {
	tests := []struct {
		name            string
		rule            Rule
		check, port, st string
	}{
		{"port", Rule{Port: config.Port{From: 179, To: 179, Protocol: "tcp"}}, "firewalld/port-179-tcp", "179", "179/tcp"},
		{"range", Rule{Port: config.Port{From: 51820, To: 51821, Protocol: "udp"}}, "firewalld/port-51820-51821-udp", "51820-51821", "51820-51821/udp"},
		{"protocol", Rule{IPProtocol: "ipencap"}, "firewalld/protocol-ipencap", "", "ipencap"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.rule.CheckName(); got != tt.check {
				t.Errorf("CheckName() = %q, want %q", got, tt.check)
			}
			if tt.port != "" && tt.rule.portArg() != tt.port {
				t.Errorf("portArg() = %q, want %q", tt.rule.portArg(), tt.port)
			}
			if got := tt.rule.String(); got != tt.st {
				t.Errorf("String() = %q, want %q", got, tt.st)
			}
		})
	}
}

func TestRuleValidate(t *testing.T) {
	tests := []struct {
		name    string
		rule    Rule
		wantErr string // substring; "" means valid
	}{
		{"tcp port", Rule{Port: config.Port{From: 179, To: 179, Protocol: "tcp"}}, ""},
		{"sctp range", Rule{Port: config.Port{From: 1, To: 65535, Protocol: "sctp"}}, ""},
		{"ipencap", Rule{IPProtocol: "ipencap"}, ""},
		{"unknown port protocol", Rule{Port: config.Port{From: 179, To: 179, Protocol: "tcpx"}}, `unknown protocol "tcpx"`},
		{"port zero", Rule{Port: config.Port{From: 0, To: 0, Protocol: "tcp"}}, "out of range"},
		{"empty range", Rule{Port: config.Port{From: 10, To: 9, Protocol: "udp"}}, "empty port range"},
		{"ipip is protocol 94", Rule{IPProtocol: "ipip"}, "protocol 94"},
		{"unknown IP protocol", Rule{IPProtocol: "foo"}, `"foo": unknown IP protocol`},
		{"both port and protocol", Rule{IPProtocol: "ipencap", Port: config.Port{From: 1, To: 1, Protocol: "tcp"}}, "both"},
		{"zero rule", Rule{}, "unknown protocol"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.rule.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Validate() = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

// in follows firewalld's portInPortRange for numeric entries and leaves names to firewalld.
func TestRuleIn(t *testing.T) {
	port := func(from, to uint16, proto string) Rule {
		return Rule{Port: config.Port{From: from, To: to, Protocol: proto}}
	}
	zone := ZoneSettings{
		Ports:     []PortEntry{{"179", "tcp"}, {"51830-51820", "udp"}, {"bgp", "sctp"}, {"x-y", "tcp"}, {"70000", "tcp"}},
		Protocols: []string{"ipencap"},
	}
	tests := []struct {
		r    Rule
		want bool
	}{
		{port(179, 179, "tcp"), true},
		{port(179, 179, "udp"), false},
		{port(178, 179, "tcp"), false},
		{port(51820, 51820, "udp"), true},
		{port(51820, 51821, "udp"), true},
		{port(51821, 51831, "udp"), false},
		{port(179, 179, "sctp"), false}, // by name: firewalld is asked
		{port(4789, 4789, "udp"), false},
		{Rule{IPProtocol: "ipencap"}, true},
		{Rule{IPProtocol: "gre"}, false},
	}
	for _, tt := range tests {
		if got := tt.r.in(zone); got != tt.want {
			t.Errorf("%s in %v = %v, want %v", tt.r, zone.Ports, got, tt.want)
		}
	}
}
