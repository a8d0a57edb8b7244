package autodetect

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	"github.com/calico-prep/calico-prep/pkg/calico"

	"github.com/calico-prep/calico-prep/pkg/host"
)

// ErrNoAddress is wrapped by Detect when calico-node would find no address with the method.
// On a node without an address from an earlier run calico-node then exits at startup.
var ErrNoAddress = errors.New("calico-node would detect no address")

// Env is what detection needs besides the node's interfaces.
type Env struct {
	// CanReach returns the local address the kernel would use to reach dest (calico-node:
	// a UDP "connection" to dest:80, no packet sent). Nil means the real UDP dial in the
	// current network namespace.
	CanReach func(ctx context.Context, dest string, family int) (netip.Addr, error)
	// NodeInternalIPs are the Node's InternalIP addresses in the order the Node lists them
	// (from the cluster, or --node-internal-ip).
	NodeInternalIPs []netip.Addr
}

// Result is the address calico-node would pick.
type Result struct {
	Method    string `json:"method"`
	Interface string `json:"interface"`
	// CIDR is the address with its prefix length, e.g. 192.168.79.128/24.
	CIDR netip.Prefix `json:"cidr"`
	// Warnings name choices calico-node makes silently that the operator probably did not
	// mean. Never nil, so that JSON shows [] rather than null.
	Warnings []string `json:"warnings"`
}

// defaultExclusionREs are the default exclusions compiled once (compiled regexes are
// immutable); they name the matching exclusion in warnings and seed the name filters.
var (
	defaultExclusionREs    = mustCompileEach(calico.DefaultInterfaceExclusions())
	defaultExclusionFilter = mustNameFilter(calico.DefaultInterfaceExclusions())
)

func mustCompileEach(regexes []string) []*regexp.Regexp {
	out := make([]*regexp.Regexp, len(regexes))
	for i, r := range regexes {
		out[i] = regexp.MustCompile(r)
	}
	return out
}

func mustNameFilter(regexes []string) *nameFilter {
	f, err := newNameFilter(regexes, nil)
	if err != nil {
		panic(err)
	}
	return f
}

// joinRegexes is how calico-node turns a regex list into one regex: (r1)|(r2)|…, matched
// unanchored with MatchString.
func joinRegexes(regexes []string) string {
	return "(" + strings.Join(regexes, ")|(") + ")"
}

// nameFilter is one of calico-node's interface-regex lists. calico-node compiles only the
// joined regex, so a list can fail as a whole although each regex compiles (an unterminated
// \Q quotes the closing parenthesis), and can work although one does not ("a)|(b" joins into
// (a)|(b)). When the joined regex and every regex compile, the joined one matches exactly when
// one of them does, as each sits in its own group; the separate regexes, anchored at ^ as the
// defaults are, match far faster than Go's backtracking through the alternation.
type nameFilter struct {
	joined *regexp.Regexp
	each   []*regexp.Regexp // nil when some regex compiles only joined
}

// newNameFilter compiles a list; precompiled, when given, holds the first regexes compiled.
func newNameFilter(regexes []string, precompiled []*regexp.Regexp) (*nameFilter, error) {
	joined, err := regexp.Compile(joinRegexes(regexes))
	if err != nil {
		return nil, fmt.Errorf("compile interface regexes %q as calico-node joins them: %w", regexes, err)
	}
	each := append(make([]*regexp.Regexp, 0, len(regexes)), precompiled...)
	for _, r := range regexes[len(precompiled):] {
		re, err := regexp.Compile(r)
		if err != nil {
			return &nameFilter{joined: joined}, nil
		}
		each = append(each, re)
	}
	return &nameFilter{joined: joined, each: each}, nil
}

func (f *nameFilter) match(name string) bool {
	if f.each == nil {
		return f.joined.MatchString(name)
	}
	for _, re := range f.each {
		if re.MatchString(name) {
			return true
		}
	}
	return false
}

// Detect returns the interface address calico-node would pick with method m for the IP
// family (4 or 6) on a node with the given interfaces. ifaces must be in the order Go's
// net.Interfaces returns them (ascending ifindex on current kernels): calico-node walks them
// backwards, so the highest ifindex wins. Addresses must be in kernel order.
func Detect(ctx context.Context, m Method, family int, ifaces []host.Interface, env Env) (Result, error) {
	if family != 4 && family != 6 {
		return Result{}, fmt.Errorf("detect address with %q: unsupported IP family %d: want 4 or 6", m, family)
	}
	d := &detection{method: m, family: family, ifaces: ifaces, env: env}
	var err error
	switch m.Kind {
	case FirstFound:
		err = d.walkNames(nil, nil, nil)
	case Interface:
		err = d.walkNames(m.Args, nil, nil)
	case SkipInterface:
		err = d.walkNames(nil, m.Args, nil)
	case CIDR:
		err = d.walkNames(nil, nil, m.CIDRs)
	case CanReach:
		err = d.reach(ctx)
	case KubernetesInternalIP:
		err = d.internalIP()
	default:
		err = fmt.Errorf("unknown method kind %q", m.Kind)
	}
	if err != nil {
		return Result{}, fmt.Errorf("detect IPv%d address with %q: %w", family, m, err)
	}
	d.warn()
	return Result{
		Method:    m.String(),
		Interface: d.picked.iface.Name,
		CIDR:      d.picked.addr,
		Warnings:  d.warnings,
	}, nil
}

// choice is one interface with the address calico-node would take from it.
type choice struct {
	iface *host.Interface
	addr  netip.Prefix
}

func (c choice) String() string { return c.iface.Name + " " + c.addr.String() }

type detection struct {
	method Method
	family int
	ifaces []host.Interface
	env    Env

	// include and exclude are calico-node's name filters; nil means no filter.
	include, exclude *nameFilter
	// candidates are the interfaces that pass the name and CIDR filters and carry a usable
	// address, in calico-node's walk order; the first is picked. Only the name walks fill it.
	candidates []choice
	picked     choice
	// internalIPs counts the Node's InternalIPs of the family (kubernetes-internal-ip).
	internalIPs int
	warnings    []string
}

// ofFamily mirrors calico-node's version test (To4() != nil means IPv4), under which an
// IPv4-mapped IPv6 address counts as IPv4.
func ofFamily(a netip.Addr, family int) bool {
	if a.Is4() || a.Is4In6() {
		return family == 4
	}
	return family == 6
}

// walkOrder returns indexes into d.ifaces in calico-node's order: last to first.
func (d *detection) walkOrder() func(yield func(int) bool) {
	return func(yield func(int) bool) {
		for i := len(d.ifaces) - 1; i >= 0; i-- {
			if !yield(i) {
				return
			}
		}
	}
}

// admits applies calico-node's name filter: an interface is walked when the include list is
// empty or matches, and the exclude list does not match.
func (d *detection) admits(name string) bool {
	return (d.include == nil || d.include.match(name)) && (d.exclude == nil || !d.exclude.match(name))
}

// walkNames is calico-node's filtered enumeration, shared by first-found, interface=,
// skip-interface= and cidr=: walk the interfaces from the highest ifindex down, keep those
// the name filter admits, and take from each the first global unicast address of the family
// that lies in one of cidrs (any address when cidrs is empty). The first such interface wins.
// Link state is not looked at: calico-node picks from an interface that is down.
// first-found and skip-interface= exclude the defaults plus extraExclude.
func (d *detection) walkNames(include, extraExclude []string, cidrs []netip.Prefix) error {
	var err error
	if len(include) > 0 {
		if d.include, err = newNameFilter(include, nil); err != nil {
			return err
		}
	}
	switch d.method.Kind {
	case FirstFound:
		d.exclude = defaultExclusionFilter
	case SkipInterface:
		if d.exclude, err = newNameFilter(append(calico.DefaultInterfaceExclusions(), extraExclude...), defaultExclusionREs); err != nil {
			return err
		}
	}
	for i := range d.walkOrder() {
		ifc := &d.ifaces[i]
		if !d.admits(ifc.Name) {
			continue
		}
		for _, p := range ifc.Addrs {
			if ofFamily(p.Addr(), d.family) && p.Addr().IsGlobalUnicast() && inAny(p.Addr(), cidrs) {
				d.candidates = append(d.candidates, choice{ifc, p})
				break
			}
		}
	}
	if len(d.candidates) == 0 {
		return fmt.Errorf("%s: %w", d.explainNone(cidrs), ErrNoAddress)
	}
	d.picked = d.candidates[0]
	return nil
}

// inAny is calico-node's CIDR filter: true for an empty list. The CIDRs are masked networks
// (calico-node parses them with net.ParseCIDR), so cidr=192.168.79.128/24 means 192.168.79.0/24.
// Like package net, an IPv4-mapped address is compared as IPv4 only.
func inAny(a netip.Addr, cidrs []netip.Prefix) bool {
	if len(cidrs) == 0 {
		return true
	}
	for _, c := range cidrs {
		if c.Contains(a.Unmap()) {
			return true
		}
	}
	return false
}

// explainNone says why a name walk found nothing, listing what it saw so that the operator
// can tell a typo in a regex from a node without the expected address.
func (d *detection) explainNone(cidrs []netip.Prefix) string {
	var admitted, filtered []string
	for i := range d.walkOrder() {
		name := d.ifaces[i].Name
		if d.admits(name) {
			admitted = append(admitted, name)
		} else {
			filtered = append(filtered, name)
		}
	}
	what := fmt.Sprintf("a global unicast IPv%d address", d.family)
	if len(cidrs) > 0 {
		what += " inside " + joinPrefixes(cidrs)
	}
	switch d.method.Kind {
	case FirstFound, SkipInterface:
		if len(admitted) == 0 {
			return fmt.Sprintf("calico-node's exclusions leave no interface (excluded: %s)", list(filtered))
		}
		return fmt.Sprintf("no interface left after calico-node's exclusions has %s (looked at %s; excluded %s)", what, list(admitted), list(filtered))
	case Interface:
		if len(admitted) == 0 {
			return fmt.Sprintf("no interface name matches %s (interfaces: %s)", quoteAll(d.method.Args), list(filtered))
		}
		return fmt.Sprintf("no interface matching %s has %s (matching: %s)", quoteAll(d.method.Args), what, list(admitted))
	}
	return fmt.Sprintf("no interface has %s (interfaces: %s)", what, list(admitted))
}

// reach is can-reach=: the kernel's source address toward the destination, matched back to an
// interface address to get its prefix. calico-node looks at every interface and every address
// of the family here, with no name filter and no global-unicast test.
func (d *detection) reach(ctx context.Context) error {
	if len(d.method.Args) != 1 {
		return fmt.Errorf("can-reach needs one destination, got %d", len(d.method.Args))
	}
	dest := d.method.Args[0]
	dial := d.env.CanReach
	if dial == nil {
		dial = DialLocalAddr
	}
	local, err := dial(ctx, dest, d.family)
	if err != nil {
		return fmt.Errorf("find the source address toward %q: %w: %w", dest, err, ErrNoAddress)
	}
	if c, ok := d.findLocal(local); ok {
		d.picked = c
		return nil
	}
	return fmt.Errorf("the kernel's source address toward %q, %s, is on no local interface: %w", dest, local, ErrNoAddress)
}

// findLocal returns the first interface address equal to a in calico-node's walk order.
func (d *detection) findLocal(a netip.Addr) (choice, bool) {
	a = a.WithZone("")
	for i := range d.walkOrder() {
		ifc := &d.ifaces[i]
		for _, p := range ifc.Addrs {
			if ofFamily(p.Addr(), d.family) && (p.Addr() == a || p.Addr().Unmap() == a.Unmap()) {
				return choice{ifc, p}, true
			}
		}
	}
	return choice{}, false
}

// internalIP is kubernetes-internal-ip: the Node's first InternalIP of the family, given the
// prefix of the local interface address equal to it. When no local address matches,
// calico-node hands the bare address to a CIDR parser, which rejects it, so it detects
// nothing (calico-node's GetLocalCIDR documents the bare IP as the fallback, but its caller
// then fails on it).
func (d *detection) internalIP() error {
	var ip netip.Addr
	for _, a := range d.env.NodeInternalIPs {
		if ofFamily(a, d.family) {
			if !ip.IsValid() {
				ip = a
			}
			d.internalIPs++
		}
	}
	if !ip.IsValid() {
		return fmt.Errorf("the Node has no IPv%d InternalIP (InternalIPs: %s): %w", d.family, listAddrs(d.env.NodeInternalIPs), ErrNoAddress)
	}
	if c, ok := d.findLocal(ip); ok {
		d.picked = c
		return nil
	}
	return fmt.Errorf("the Node's InternalIP %s is on no local interface, and calico-node cannot use an InternalIP without the prefix of a local address: %w", ip, ErrNoAddress)
}

func list(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

func listAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return list(s)
}
