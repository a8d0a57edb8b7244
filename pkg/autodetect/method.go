// Package autodetect reproduces calico-node's IP autodetection exactly (which interface and
// address calico-node will pick for a method string) and warns where calico-node silently
// picks something the operator probably did not mean.
package autodetect

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
)

// Kind is one of calico-node's autodetection methods.
type Kind string

const (
	FirstFound           Kind = "first-found"
	KubernetesInternalIP Kind = "kubernetes-internal-ip"
	CanReach             Kind = "can-reach"
	Interface            Kind = "interface"
	SkipInterface        Kind = "skip-interface"
	CIDR                 Kind = "cidr"
)

// Method is a parsed autodetection method string.
type Method struct {
	Kind Kind
	// Args are the comma-separated arguments as calico-node splits them: regexes for
	// interface= and skip-interface=, CIDRs for cidr=, the destination for can-reach=.
	Args []string
	// CIDRs are the parsed networks of cidr=.
	CIDRs []netip.Prefix
}

// listSep is calico-node's separator for method arguments: a comma with optional spaces.
var listSep = regexp.MustCompile(`\s*,\s*`)

// ParseMethod parses a method string the way calico-node does; unlike calico-node, which exits
// at the first use, it rejects a bad regex, CIDR or destination up front. The error names the value.
func ParseMethod(s string) (Method, error) {
	switch {
	case s == "" || s == string(FirstFound):
		return Method{Kind: FirstFound}, nil
	case s == string(KubernetesInternalIP):
		return Method{Kind: KubernetesInternalIP}, nil
	}
	kind, arg, ok := strings.Cut(s, "=")
	if !ok {
		return Method{}, fmt.Errorf("unknown autodetection method %q: want first-found, kubernetes-internal-ip, can-reach=, interface=, skip-interface= or cidr=", s)
	}
	m := Method{Kind: Kind(kind)}
	switch m.Kind {
	case Interface, SkipInterface:
		m.Args = listSep.Split(arg, -1)
		for _, r := range m.Args {
			if _, err := regexp.Compile(r); err != nil {
				return Method{}, fmt.Errorf("invalid regex %q in autodetection method %q", r, s)
			}
		}
		// calico-node compiles only the joined list, and detects nothing when that fails.
		if _, err := regexp.Compile(joinRegexes(m.Args)); err != nil {
			return Method{}, fmt.Errorf("invalid regex list in autodetection method %q: calico-node joins it into %q, which does not compile (an unterminated \\Q?)", s, joinRegexes(m.Args))
		}
	case CIDR:
		m.Args = listSep.Split(arg, -1)
		for _, c := range m.Args {
			p, err := netip.ParsePrefix(c)
			if err != nil {
				return Method{}, fmt.Errorf("invalid CIDR %q in autodetection method %q", c, s)
			}
			m.CIDRs = append(m.CIDRs, masked(p))
		}
	case CanReach:
		if !validDestination(arg) {
			return Method{}, fmt.Errorf("invalid destination %q in autodetection method %q: want an IP address or host name", arg, s)
		}
		m.Args = []string{arg}
	default:
		return Method{}, fmt.Errorf("unknown autodetection method %q: want first-found, kubernetes-internal-ip, can-reach=, interface=, skip-interface= or cidr=", s)
	}
	return m, nil
}

// masked returns the network calico-node's net.ParseCIDR yields: host bits cleared, and an
// IPv4-mapped network of /96 or longer taken as the IPv4 network it maps.
func masked(p netip.Prefix) netip.Prefix {
	p = p.Masked()
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p
}

var hostname = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*\.?$`)

func validDestination(s string) bool {
	if _, err := netip.ParseAddr(s); err == nil {
		return true
	}
	return len(s) <= 253 && hostname.MatchString(s)
}

// String returns the method string calico-node reads.
func (m Method) String() string {
	if len(m.Args) == 0 {
		return string(m.Kind)
	}
	return string(m.Kind) + "=" + strings.Join(m.Args, ",")
}
