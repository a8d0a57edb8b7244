package config

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/calico-prep/calico-prep/pkg/calico"

	"github.com/calico-prep/calico-prep/pkg/autodetect"
)

// Every parser takes the field (a flag as "--name" or an environment variable) so that its
// error is one line naming where the value came from and the value itself.

// ParseCIDR parses a network address of the given family (4 or 6) in canonical form.
func ParseCIDR(field, s string, family int) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%s: invalid CIDR %q", field, s)
	}
	if family == 4 && !p.Addr().Is4() || family == 6 && !p.Addr().Is6() {
		return netip.Prefix{}, fmt.Errorf("%s: %q is not an IPv%d CIDR", field, s, family)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("%s: %q has host bits set (network address is %s)", field, s, p.Masked())
	}
	return p, nil
}

// ParseCIDRList parses a comma-separated list of CIDRs of either family.
func ParseCIDRList(field, s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		family := 4
		if strings.Contains(item, ":") {
			family = 6
		}
		p, err := ParseCIDR(field, item, family)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// ParseAddrList parses a comma-separated list of IP addresses.
func ParseAddrList(field, s string) ([]netip.Addr, error) {
	var out []netip.Addr
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		a, err := netip.ParseAddr(item)
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("%s: invalid IP address %q", field, item)
		}
		out = append(out, a)
	}
	return out, nil
}

// ParseEncapsulation parses ipip, vxlan or none.
func ParseEncapsulation(field, s string) (calico.Encapsulation, error) {
	switch e := calico.Encapsulation(strings.ToLower(strings.TrimSpace(s))); e {
	case calico.EncapIPIP, calico.EncapVXLAN, calico.EncapNone:
		return e, nil
	}
	return "", fmt.Errorf("%s: unknown encapsulation %q: want ipip, vxlan or none", field, s)
}

// EncapsulationFromEnv derives the encapsulation from calico-node's CALICO_IPV4POOL_IPIP and
// CALICO_IPV4POOL_VXLAN (Always, CrossSubnet or Never). ok is false when neither is set.
func EncapsulationFromEnv(getenv func(string) string) (e calico.Encapsulation, ok bool, err error) {
	ipip, err := poolMode(calico.EnvIPv4PoolIPIP, getenv(calico.EnvIPv4PoolIPIP))
	if err != nil {
		return "", false, err
	}
	vxlan, err := poolMode(calico.EnvIPv4PoolVXLAN, getenv(calico.EnvIPv4PoolVXLAN))
	if err != nil {
		return "", false, err
	}
	switch {
	case ipip == "" && vxlan == "":
		return "", false, nil
	case ipip == "on" && vxlan == "on":
		return "", false, fmt.Errorf("CALICO_IPV4POOL_IPIP and CALICO_IPV4POOL_VXLAN: both enabled (%q, %q); Calico allows one", getenv(calico.EnvIPv4PoolIPIP), getenv(calico.EnvIPv4PoolVXLAN))
	case ipip == "on":
		return calico.EncapIPIP, true, nil
	case vxlan == "on":
		return calico.EncapVXLAN, true, nil
	}
	return calico.EncapNone, true, nil
}

// poolMode returns "" for unset, "on" for Always/CrossSubnet and "off" for Never/Off.
func poolMode(field, s string) (string, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "":
		return "", nil
	case "always", "crosssubnet":
		return "on", nil
	case "never", "off":
		return "off", nil
	}
	return "", fmt.Errorf("%s: unknown mode %q: want Always, CrossSubnet or Never", field, s)
}

// ParseBool parses true or false (and the other spellings strconv accepts).
func ParseBool(field, s string) (bool, error) {
	b, err := strconv.ParseBool(strings.TrimSpace(s))
	if err != nil {
		return false, fmt.Errorf("%s: invalid boolean %q: want true or false", field, s)
	}
	return b, nil
}

func fromEnv(field string) bool { return !strings.HasPrefix(field, "-") }

// parseBGP reads --bgp as a boolean and CALICO_NETWORKING_BACKEND as bird, vxlan or none.
func parseBGP(field, s string) (bool, error) {
	if !fromEnv(field) {
		return ParseBool(field, s)
	}
	switch strings.ToLower(s) {
	case "bird":
		return true, nil
	case "vxlan", "none":
		return false, nil
	}
	return false, fmt.Errorf("%s: unknown backend %q: want bird, vxlan or none", field, s)
}

// parseBoolOrPresence reads --typha as a boolean; FELIX_TYPHAK8SSERVICENAME names Typha's
// service, so a value there means Typha is used, except "none", which calico.yaml's
// calico-config writes when there is no Typha.
func parseBoolOrPresence(field, s string) (bool, error) {
	if fromEnv(field) {
		return s != "" && !strings.EqualFold(s, "none"), nil
	}
	return ParseBool(field, s)
}

// parsePortFlag parses a port number, 1-65535.
func parsePortFlag(field, s string) (uint16, error) {
	n, err := parsePortNumber(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("%s: invalid port %q: want 1-65535", field, s)
	}
	return n, nil
}

// parseAutoOff parses auto or off.
func parseAutoOff(field, s string) (Mode, error) {
	switch m := Mode(strings.ToLower(strings.TrimSpace(s))); m {
	case ModeAuto, ModeOff:
		return m, nil
	}
	return "", fmt.Errorf("%s: unknown mode %q: want auto or off", field, s)
}

// ParseMode parses auto, on or off.
func ParseMode(field, s string) (Mode, error) {
	switch m := Mode(strings.ToLower(strings.TrimSpace(s))); m {
	case ModeAuto, ModeOn, ModeOff:
		return m, nil
	}
	return "", fmt.Errorf("%s: unknown mode %q: want auto, on or off", field, s)
}

// ParseDir checks that s is an absolute path to an existing directory.
func ParseDir(field, s string) (string, error) {
	p, err := parseAbsPath(field, s)
	if err != nil {
		return "", err
	}
	st, err := os.Stat(p)
	if err != nil {
		return "", fmt.Errorf("%s: %q: %w", field, s, err)
	}
	if !st.IsDir() {
		return "", fmt.Errorf("%s: %q is not a directory", field, s)
	}
	return p, nil
}

func parseAbsPath(field, s string) (string, error) {
	if !filepath.IsAbs(s) {
		return "", fmt.Errorf("%s: %q is not an absolute path", field, s)
	}
	return filepath.Clean(s), nil
}

var nodeName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

func parseNodeName(field, s string) (string, error) {
	if s == "" {
		return "", nil
	}
	if len(s) > 253 || !nodeName.MatchString(s) {
		return "", fmt.Errorf("%s: invalid node name %q: want a lower-case DNS subdomain", field, s)
	}
	return s, nil
}

var zoneName = regexp.MustCompile(`^[A-Za-z0-9_+-]+$`)

func parseZone(field, s string) (string, error) {
	if s != "" && !zoneName.MatchString(s) {
		return "", fmt.Errorf("%s: invalid firewalld zone name %q", field, s)
	}
	return s, nil
}

// Port is a port or port range with its protocol, as firewalld takes it.
type Port struct {
	From, To uint16
	Protocol string
}

// String returns "179/tcp" or "51820-51821/udp".
func (p Port) String() string {
	if p.From == p.To {
		return fmt.Sprintf("%d/%s", p.From, p.Protocol)
	}
	return fmt.Sprintf("%d-%d/%s", p.From, p.To, p.Protocol)
}

// ParsePort parses "PORT/PROTO" or "FROM-TO/PROTO" with protocol tcp, udp, sctp or dccp.
func ParsePort(field, s string) (Port, error) {
	s = strings.TrimSpace(s)
	num, proto, ok := strings.Cut(s, "/")
	if !ok {
		return Port{}, fmt.Errorf("%s: invalid port %q: want PORT/PROTOCOL such as 2379/tcp", field, s)
	}
	switch proto {
	case "tcp", "udp", "sctp", "dccp":
	default:
		return Port{}, fmt.Errorf("%s: unknown protocol %q in %q: want tcp, udp, sctp or dccp", field, proto, s)
	}
	from, to, isRange := strings.Cut(num, "-")
	if !isRange {
		to = from
	}
	f, err1 := parsePortNumber(from)
	t, err2 := parsePortNumber(to)
	if err1 != nil || err2 != nil {
		return Port{}, fmt.Errorf("%s: port out of range in %q: want 1-65535", field, s)
	}
	if f > t {
		return Port{}, fmt.Errorf("%s: empty port range %q", field, s)
	}
	return Port{From: f, To: t, Protocol: proto}, nil
}

func parsePortNumber(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("invalid port %q", s)
	}
	return uint16(n), nil
}

// ParsePorts parses a comma-separated list of ports.
func ParsePorts(field, s string) ([]Port, error) {
	var out []Port
	for item := range strings.SplitSeq(s, ",") {
		if strings.TrimSpace(item) == "" {
			continue
		}
		p, err := ParsePort(field, item)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// interfaceGlob is what NetworkManager's interface-name: spec takes: an interface name (at most
// 15 bytes, no slash, colon, whitespace or separator) with shell wildcards.
var interfaceGlob = regexp.MustCompile(`^[A-Za-z0-9_.@*?\[\]!+-]{1,32}$`)

// ParseInterfaceGlobs parses comma-separated interface-name globs; an "interface-name:"
// prefix is accepted and dropped.
func ParseInterfaceGlobs(field, s string) ([]string, error) {
	var out []string
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimPrefix(strings.TrimSpace(item), "interface-name:")
		if item == "" {
			continue
		}
		if !interfaceGlob.MatchString(item) {
			return nil, fmt.Errorf("%s: invalid interface name pattern %q", field, item)
		}
		out = append(out, item)
	}
	return out, nil
}

func parseBindAddress(field, s string) (string, error) {
	if s == "" {
		return "", nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", fmt.Errorf("%s: invalid address %q: want HOST:PORT such as :9476", field, s)
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil && host != "localhost" {
			return "", fmt.Errorf("%s: invalid host %q in %q", field, host, s)
		}
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 && port != "0" {
		return "", fmt.Errorf("%s: invalid port %q in %q", field, port, s)
	}
	return s, nil
}

func parseDuration(field, s string, least time.Duration) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil || d < least {
		return 0, fmt.Errorf("%s: invalid duration %q: want at least %v, such as 10m", field, s, least)
	}
	return d, nil
}

func validMethod(field, s string) error {
	if _, err := autodetect.ParseMethod(s); err != nil {
		return fmt.Errorf("%s: %w", field, err)
	}
	return nil
}
