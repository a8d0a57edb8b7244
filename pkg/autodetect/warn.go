package autodetect

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	"github.com/calico-prep/calico-prep/pkg/calico"
)

// Warnings are calico-prep's own: calico-node picks silently in each of these cases, and each
// is a way a node ends up with an address the operator did not mean.

func (d *detection) warn() {
	d.warnings = []string{}
	switch d.method.Kind {
	case FirstFound, SkipInterface, Interface:
		d.warnSeveral()
	case CIDR:
		d.warnSeveralInCIDR()
	}
	switch d.method.Kind {
	case Interface:
		d.warnRegexes("interface", nil)
	case SkipInterface:
		d.warnRegexes("skip-interface", defaultExclusionFilter)
	case CanReach:
		d.warnLocalDestination()
	case KubernetesInternalIP:
		if d.internalIPs > 1 {
			d.addf("the Node has %d IPv%d InternalIPs and calico-node uses only the first, %s", d.internalIPs, d.family, d.picked.addr.Addr())
		}
	}
	if d.method.Kind != FirstFound && d.method.Kind != SkipInterface {
		d.warnDefaultExcluded()
	}
	if a := d.picked.addr.Addr(); !a.IsGlobalUnicast() {
		d.addf("the picked address %s is %s, which other nodes cannot reach", d.picked.addr, addrClass(a))
	}
	if !d.picked.iface.Up {
		d.addf("%s is down; calico-node does not look at link state and picks it anyway", d.picked.iface.Name)
	}
}

func (d *detection) addf(format string, args ...any) {
	d.warnings = append(d.warnings, fmt.Sprintf(format, args...))
}

// warnSeveral: with several usable interfaces the winner is decided by ifindex, i.e. by the
// order in which the kernel created the devices, which says nothing about which network the
// operator means. A NIC added later (or a VLAN or bond created after boot) silently takes over.
func (d *detection) warnSeveral() {
	if len(d.candidates) < 2 {
		return
	}
	hint := "pin the choice with interface= or cidr= if that is not the node's network"
	if d.method.Kind == Interface {
		hint = "narrow the regexes if that is not the node's network"
	}
	d.addf("%s sees %d interfaces with a usable IPv%d address and picks %s because calico-node takes the highest ifindex (%d); it passes over %s; %s",
		d.method, len(d.candidates), d.family, d.picked, d.picked.iface.Index, others(d.candidates[1:]), hint)
}

// warnSeveralInCIDR: cidr= has no name filter at all, so a container bridge or a second NIC
// with an address inside the range competes with the intended interface.
func (d *detection) warnSeveralInCIDR() {
	if len(d.candidates) < 2 {
		return
	}
	d.addf("%d interfaces have an IPv%d address inside %s and calico-node picks %s because it takes the highest ifindex (%d); it passes over %s; narrow the CIDR to the node network",
		len(d.candidates), d.family, joinPrefixes(d.method.CIDRs), d.picked, d.picked.iface.Index, others(d.candidates[1:]))
}

func others(cs []choice) string {
	s := make([]string, len(cs))
	for i, c := range cs {
		s[i] = fmt.Sprintf("%s (ifindex %d)", c, c.iface.Index)
	}
	return strings.Join(s, ", ")
}

// warnRegexes looks at each regex of interface= or skip-interface= on its own. calico-node
// matches unanchored, so "eth0" also matches eth0.100 and veth-eth0, and "eth.*" matches
// veth0; an empty regex (a stray comma) matches every name. A regex that matches nothing is
// usually a typo. For skip-interface=, names the default exclusions already drop are ignored.
func (d *detection) warnRegexes(param string, alreadyExcluded *nameFilter) {
	for _, r := range d.method.Args {
		if r == "" {
			if param == "interface" {
				d.addf("an empty regex in interface= (a stray comma?) matches every interface, so the default exclusions do not apply and any interface can win")
			} else {
				d.addf("an empty regex in skip-interface= (a stray comma?) matches every interface and skips them all")
			}
			continue
		}
		// Only the joined list has to compile; a regex that does not on its own gets no warning.
		re, err := regexp.Compile(r)
		if err != nil {
			continue
		}
		anchored, err := regexp.Compile(`^(?:` + r + `)$`)
		if err != nil {
			continue
		}
		var hits, loose []string
		for i := range d.walkOrder() {
			name := d.ifaces[i].Name
			if alreadyExcluded != nil && alreadyExcluded.match(name) || !re.MatchString(name) {
				continue
			}
			hits = append(hits, name)
			if !anchored.MatchString(name) {
				loose = append(loose, name)
			}
		}
		switch {
		case len(hits) == 0 && alreadyExcluded != nil:
			d.addf("%s regex %q matches no interface that the default exclusions leave", param, r)
		case len(hits) == 0:
			d.addf("%s regex %q matches no interface", param, r)
		case len(loose) > 0:
			d.addf("%s regex %q also matches %s because calico-node matches regexes unanchored; write %q to match whole names only",
				param, r, strings.Join(loose, ", "), suggestAnchored(r))
		}
	}
}

// suggestAnchored returns the anchored form an operator would write: ^eth.*$ for eth.*, and
// ^(eth0|eth1)$ for an alternation, leaving anchors already there.
func suggestAnchored(r string) string {
	core := strings.TrimSuffix(strings.TrimPrefix(r, "^"), "$")
	if strings.Contains(core, "|") {
		core = "(" + core + ")"
	}
	return "^" + core + "$"
}

// warnLocalDestination: a can-reach destination that is this node's own address "succeeds"
// trivially here (the source is the destination), and on every other node the same method picks
// the interface toward this node, which is rarely what was meant. 127.0.0.1 ends up on lo.
func (d *detection) warnLocalDestination() {
	dest, err := netip.ParseAddr(d.method.Args[0])
	if err != nil {
		return
	}
	if dest.IsLoopback() {
		d.addf("can-reach destination %s is a loopback address; calico-node ends up on %s", dest, d.picked.iface.Name)
		return
	}
	if c, ok := d.findLocal(dest); ok {
		d.addf("can-reach destination %s is this node's own address on %s, so it tests no route here and points other nodes at this one; use an address outside the cluster, e.g. the default gateway", dest, c.iface.Name)
	}
}

// warnDefaultExcluded: interface=, cidr=, can-reach= and kubernetes-internal-ip do not apply
// calico-node's default exclusions, so they can land on a container bridge or Calico's own
// tunnel, which other nodes cannot route to.
func (d *detection) warnDefaultExcluded() {
	name := d.picked.iface.Name
	for i, re := range defaultExclusionREs {
		if re.MatchString(name) {
			d.addf("the picked interface %s is one first-found never picks (it matches the default exclusion %q): a loopback, container, bridge or tunnel device", name, calico.DefaultInterfaceExclusions()[i])
			return
		}
	}
}

func addrClass(a netip.Addr) string {
	switch {
	case a.IsLoopback():
		return "a loopback address"
	case a.IsLinkLocalUnicast():
		return "a link-local address"
	case a.IsMulticast():
		return "a multicast address"
	case a.IsUnspecified():
		return "the unspecified address"
	}
	return "not a global unicast address"
}
