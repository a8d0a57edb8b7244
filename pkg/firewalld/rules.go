package firewalld

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/calico-prep/calico-prep/pkg/calico"

	"github.com/calico-prep/calico-prep/pkg/config"
)

// Rule is one thing Calico needs open in the node's zone: a port with its protocol, or a whole
// IP protocol.
type Rule struct {
	// Port is the port rule; zero when IPProtocol is set.
	Port config.Port
	// IPProtocol is an IP protocol by its /etc/protocols name, e.g. "ipencap" for IP-in-IP.
	IPProtocol string
	// Why names the Calico feature that needs the rule, for messages, e.g. "BGP".
	Why string
}

// String returns "179/tcp", "51820-51821/udp" or "ipencap".
func (r Rule) String() string {
	if r.IPProtocol != "" {
		return r.IPProtocol
	}
	return r.Port.String()
}

// CheckName returns the check's name: "firewalld/port-179-tcp" or "firewalld/protocol-ipencap".
func (r Rule) CheckName() string {
	if r.IPProtocol != "" {
		return "firewalld/protocol-" + r.IPProtocol
	}
	if r.Port.From == r.Port.To {
		return fmt.Sprintf("firewalld/port-%d-%s", r.Port.From, r.Port.Protocol)
	}
	return fmt.Sprintf("firewalld/port-%d-%d-%s", r.Port.From, r.Port.To, r.Port.Protocol)
}

// portArg is the port as firewalld's addPort takes it: "179" or "51820-51821".
func (r Rule) portArg() string {
	if r.Port.From == r.Port.To {
		return strconv.Itoa(int(r.Port.From))
	}
	return fmt.Sprintf("%d-%d", r.Port.From, r.Port.To)
}

// in reports whether settings plainly hold the rule: the IP protocol by name, or the port
// inside a numeric port or range of the same protocol, as firewalld's own queryPort finds it
// (portInPortRange; releases before 0.7 matched ports exactly, so a rule inside an operator's
// range counts as present there too, which it is for traffic). A port stored by service name
// is not plain; ask firewalld.
func (r Rule) in(s ZoneSettings) bool {
	if r.IPProtocol != "" {
		return slices.Contains(s.Protocols, r.IPProtocol)
	}
	for _, e := range s.Ports {
		if e.Protocol != r.Port.Protocol {
			continue
		}
		if from, to, ok := portRange(e.Port); ok && from <= r.Port.From && r.Port.To <= to {
			return true
		}
	}
	return false
}

// portRange parses "179" or "51820-51821" (either order, as firewalld accepts).
func portRange(s string) (from, to uint16, ok bool) {
	a, b, isRange := strings.Cut(s, "-")
	if !isRange {
		b = a
	}
	x, err1 := strconv.ParseUint(a, 10, 16)
	y, err2 := strconv.ParseUint(b, 10, 16)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return uint16(min(x, y)), uint16(max(x, y)), true
}

// knownIPProtocol reports whether a rule may name the IP protocol: the ones tunnels and IPsec
// use. Names, not numbers, because firewalld stores and nft prints the name.
func knownIPProtocol(name string) bool {
	switch name {
	case "ipencap", "gre", "esp", "ah":
		return true
	}
	return false
}

// Validate checks the rule before anything is sent to firewalld, so that a bad rule changes
// nothing; the error names the value.
func (r Rule) Validate() error {
	if r.IPProtocol != "" {
		if r.Port != (config.Port{}) {
			return fmt.Errorf("firewalld rule %q: has both a port (%s) and an IP protocol", r.IPProtocol, r.Port)
		}
		if r.IPProtocol == "ipip" || r.IPProtocol == "94" {
			return fmt.Errorf("firewalld rule %q: that is IP protocol 94; IP-in-IP (Calico's IPIP) is protocol 4, \"ipencap\"", r.IPProtocol)
		}
		if !knownIPProtocol(r.IPProtocol) {
			return fmt.Errorf("firewalld rule %q: unknown IP protocol: want ipencap, gre, esp or ah", r.IPProtocol)
		}
		return nil
	}
	p := r.Port
	switch p.Protocol {
	case "tcp", "udp", "sctp", "dccp":
	default:
		return fmt.Errorf("firewalld rule %q: unknown protocol %q: want tcp, udp, sctp or dccp", p.String(), p.Protocol)
	}
	if p.From == 0 || p.To == 0 {
		return fmt.Errorf("firewalld rule %q: port out of range: want 1-65535", p.String())
	}
	if p.From > p.To {
		return fmt.Errorf("firewalld rule %q: empty port range", p.String())
	}
	return nil
}

// RuleInput is the part of the configuration that decides which rules Calico needs.
type RuleInput struct {
	BGP, Typha, WireGuard bool
	// IPv6 is true when Calico has an IPv6 pool (WireGuard then needs 51821/udp as well).
	IPv6          bool
	Encapsulation calico.Encapsulation
	// OtherEncapsulations are used by some of Calico's IP pools besides Encapsulation.
	OtherEncapsulations []calico.Encapsulation
	// WireGuardv6 is WireGuard over IPv6 on its own (Felix's wireguardEnabledV6).
	WireGuardv6 bool
	// Ports override Calico's default ports.
	Ports calico.Ports
	// FelixMetricsPort, TyphaMetricsPort and AgentMetricsPort are opened for Prometheus when
	// not zero.
	FelixMetricsPort, TyphaMetricsPort, AgentMetricsPort uint16
	// Extra are the operator's additional ports (--firewalld-extra-ports).
	Extra []config.Port
}

// Rules returns the rules for the configuration, each once, in a stable order.
func Rules(in RuleInput) []Rule {
	var rules []Rule
	add := func(r Rule) {
		for _, have := range rules {
			if have.String() == r.String() {
				return
			}
		}
		rules = append(rules, r)
	}
	for _, o := range calico.Openings(calico.Features{
		BGP: in.BGP, Encapsulation: in.Encapsulation, OtherEncapsulations: in.OtherEncapsulations,
		Typha: in.Typha, WireGuard: in.WireGuard, IPv6: in.IPv6, WireGuardv6: in.WireGuardv6, Ports: in.Ports,
		FelixMetricsPort: in.FelixMetricsPort, TyphaMetricsPort: in.TyphaMetricsPort,
	}) {
		if o.IPProtocol != "" {
			add(Rule{IPProtocol: o.IPProtocol, Why: o.For})
			continue
		}
		add(Rule{Port: config.Port{From: o.Port, To: o.Port, Protocol: o.Protocol}, Why: o.For})
	}
	if in.AgentMetricsPort != 0 {
		add(Rule{Port: config.Port{From: in.AgentMetricsPort, To: in.AgentMetricsPort, Protocol: "tcp"}, Why: "calico-prep metrics"})
	}
	for _, p := range in.Extra {
		add(Rule{Port: p, Why: "--firewalld-extra-ports"})
	}
	return rules
}
