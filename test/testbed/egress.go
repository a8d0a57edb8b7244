package testbed

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// egressRules count, record and drop, in a node's network namespace, every packet the node
// sends or forwards to an address outside the allowed networks and every DNS query (to any
// address: the test networks have no name server, so a query means something tried to resolve a
// name, e.g. to report usage or pull an image). Link-local multicast stays allowed: it never
// leaves the link. The chains come before every other hook (priority -400), so the destination
// is the one the sender chose, before any NAT.
const egressRules = `table inet cpt_guard {
	counter escaped {}
	counter dns {}
	set allowed4 { type ipv4_addr; flags interval; elements = { 127.0.0.0/8, 224.0.0.0/24, %s } }
	set seen4 { type ipv4_addr; flags dynamic; size 1024; }
	set seen6 { type ipv6_addr; flags dynamic; size 1024; }
	chain guard {
		udp dport 53 counter name dns drop
		tcp dport 53 counter name dns drop
		meta nfproto ipv4 ip daddr != @allowed4 add @seen4 { ip daddr } counter name escaped drop
		meta nfproto ipv6 ip6 daddr != { ::1, fe80::/10, ff02::/16 } add @seen6 { ip6 daddr } counter name escaped drop
	}
	chain outgoing { type filter hook output priority -400; policy accept; jump guard; }
	chain forwarded { type filter hook forward priority -400; policy accept; jump guard; }
}
`

// GuardEgress puts the egress guard into the node's namespace: afterwards nothing in it may
// send to an address outside allowed (and loopback) or ask for a name. It proves the guard sees
// what it guards against (one datagram to TEST-NET-3, one DNS query to the node's loopback)
// before resetting its counters. CheckEgress reads the verdict.
func (n *Node) GuardEgress(ctx context.Context, allowed ...netip.Prefix) error {
	var elems []string
	for _, p := range allowed {
		elems = append(elems, p.Masked().String())
	}
	if _, err := execNS(ctx, n.NetNS, nil, fmt.Appendf(nil, egressRules, strings.Join(elems, ", ")), "nft", "-f", "-"); err != nil {
		return fmt.Errorf("node %s: install the egress guard: %w", n.Name, err)
	}
	err := n.Do(func() error {
		for _, addr := range []string{"203.0.113.1:9", "127.0.0.1:53"} {
			conn, err := net.Dial("udp4", addr)
			if err != nil {
				return err
			}
			_, _ = conn.Write([]byte("guard check"))
			conn.Close()
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("node %s: test the egress guard: %w", n.Name, err)
	}
	out, err := n.Exec(ctx, "nft", "list", "table", "inet", "cpt_guard")
	if err != nil {
		return err
	}
	if s := string(out); !strings.Contains(s, "counter escaped {\n\t\tpackets 1 ") || !strings.Contains(s, "counter dns {\n\t\tpackets 1 ") ||
		!strings.Contains(s, "203.0.113.1") {
		return fmt.Errorf("node %s: the egress guard did not count the test packets:\n%s", n.Name, out)
	}
	if _, err := n.Exec(ctx, "nft", "reset", "counters", "table", "inet", "cpt_guard"); err != nil {
		return err
	}
	_, err = n.Exec(ctx, "nft", "flush", "set", "inet", "cpt_guard", "seen4")
	return err
}

// AllowEgress adds a network to the guard's allowed ones, e.g. a pod CIDR chosen later.
func (n *Node) AllowEgress(ctx context.Context, p netip.Prefix) error {
	_, err := n.Exec(ctx, "nft", "add", "element", "inet", "cpt_guard", "allowed4", "{ "+p.Masked().String()+" }")
	return err
}

// CheckEgress returns an error, with the guard's table (counters and the destinations it saw),
// when the guard counted a packet or a DNS query.
func (n *Node) CheckEgress(ctx context.Context) error {
	out, err := n.Exec(ctx, "nft", "list", "table", "inet", "cpt_guard")
	if err != nil {
		return fmt.Errorf("read the egress guard of node %s: %w", n.Name, err)
	}
	s := string(out)
	if !strings.Contains(s, "counter escaped {\n\t\tpackets 0 bytes 0") || !strings.Contains(s, "counter dns {\n\t\tpackets 0 bytes 0") {
		return fmt.Errorf("node %s tried to reach outside the test's networks or to resolve a name:\n%s", n.Name, s)
	}
	return nil
}
