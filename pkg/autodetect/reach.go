package autodetect

import (
	"context"
	"fmt"
	"net"
	"net/netip"
)

// DialLocalAddr is the real can-reach probe in the calling thread's network namespace: it
// "connects" a UDP socket of the family to dest port 80 as calico-node does (network udp4 or
// udp6, address "[dest]:80", so a host name resolves to an address of that family only) and
// returns the source address the kernel chose. Connecting a UDP socket only looks up the
// route; no packet is sent.
func DialLocalAddr(ctx context.Context, dest string, family int) (netip.Addr, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, fmt.Sprintf("udp%d", family), "["+dest+"]:80")
	if err != nil {
		return netip.Addr{}, err
	}
	defer conn.Close() //nolint:errcheck // nothing was written
	ua, ok := conn.LocalAddr().(*net.UDPAddr)
	if !ok {
		return netip.Addr{}, fmt.Errorf("dial %q: local address %v is not a UDP address", dest, conn.LocalAddr())
	}
	a := ua.AddrPort().Addr()
	if family == 4 {
		a = a.Unmap()
	}
	return a.WithZone(""), nil
}
