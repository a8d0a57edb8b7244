//go:build calico

package calico

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/calico-prep/calico-prep/test/testbed"
)

// guardRules count, record and drop, in a node's network namespace, every packet the node
// sends or forwards to an address outside the test's networks and every DNS query (to any
// address: the node has no name server, so a query means something tried to resolve a name).
// Link-local multicast stays allowed: it never leaves the link.
const guardRules = `table inet cpt_guard {
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

// installGuard puts the guard into the node's namespace; allowed are the test's own networks.
func installGuard(t *testing.T, n *testbed.Node, allowed ...netip.Prefix) {
	t.Helper()
	var elems []string
	for _, p := range allowed {
		elems = append(elems, p.Masked().String())
	}
	path := filepath.Join(t.TempDir(), "guard.nft")
	if err := os.WriteFile(path, fmt.Appendf(nil, guardRules, strings.Join(elems, ", ")), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := n.Exec(t.Context(), "nft", "-f", path); err != nil {
		t.Fatalf("install the egress guard in node %s: %v\n%s", n.Name, err, out)
	}
	// The guard must see what it guards against: one datagram to a documentation address
	// (TEST-NET-3, never routed) and one DNS query to the node's loopback, then a clean slate.
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
		t.Fatal(err)
	}
	out, err := n.Exec(t.Context(), "nft", "list", "table", "inet", "cpt_guard")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "counter escaped {\n\t\tpackets 1 ") || !strings.Contains(string(out), "counter dns {\n\t\tpackets 1 ") ||
		!strings.Contains(string(out), "203.0.113.1") {
		t.Fatalf("node %s: the egress guard did not count the test packets:\n%s", n.Name, out)
	}
	if out, err := n.Exec(t.Context(), "nft", "reset", "counters", "table", "inet", "cpt_guard"); err != nil {
		t.Fatalf("reset the guard's counters: %v\n%s", err, out)
	}
	if out, err := n.Exec(t.Context(), "nft", "flush", "set", "inet", "cpt_guard", "seen4"); err != nil {
		t.Fatalf("flush the guard's record: %v\n%s", err, out)
	}
}

// checkGuard fails the test when the guard counted a packet, naming where it was going.
func checkGuard(t *testing.T, ctx context.Context, n *testbed.Node) {
	t.Helper()
	out, err := n.Exec(ctx, "nft", "list", "table", "inet", "cpt_guard")
	if err != nil {
		t.Errorf("read the egress guard of node %s: %v", n.Name, err)
		return
	}
	s := string(out)
	if !strings.Contains(s, "counter escaped {\n\t\tpackets 0 bytes 0") || !strings.Contains(s, "counter dns {\n\t\tpackets 0 bytes 0") {
		t.Errorf("node %s tried to reach outside the test's networks or to resolve a name:\n%s", n.Name, s)
	}
}
