package links

import (
	"context"
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Every netlink dump goes through this file. Since netlink v1.3 a dump the kernel interrupted
// (because the table changed meanwhile, e.g. while pods start) returns ErrDumpInterrupted
// alongside partial results; using those would make links, addresses or routes seem missing.

// maxDumpAttempts bounds the retries: under constant churn an interruption can repeat, and a
// failed check is better than a stuck agent.
const maxDumpAttempts = 5

// retryDump calls dump until it completes uninterrupted, at most maxDumpAttempts times.
func retryDump[T any](ctx context.Context, what string, dump func() (T, error)) (T, error) {
	var zero T
	var err error
	for range maxDumpAttempts {
		if ctx.Err() != nil {
			return zero, fmt.Errorf("dump %s: %w", what, ctx.Err())
		}
		var v T
		v, err = dump()
		if err == nil {
			return v, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return zero, fmt.Errorf("dump %s: %w", what, err)
		}
	}
	return zero, fmt.Errorf("dump %s: interrupted %d times in a row: %w", what, maxDumpAttempts, err)
}

func linkList(ctx context.Context, h *netlink.Handle) ([]netlink.Link, error) {
	return retryDump(ctx, "links", h.LinkList)
}

// addrList dumps the addresses of all links and both families in one request, in kernel order.
func addrList(ctx context.Context, h *netlink.Handle) ([]netlink.Addr, error) {
	return retryDump(ctx, "addresses", func() ([]netlink.Addr, error) { return h.AddrList(nil, netlink.FAMILY_ALL) })
}

// routeList dumps the main-table routes of both families.
func routeList(ctx context.Context, h *netlink.Handle) ([]netlink.Route, error) {
	return retryDump(ctx, "routes", func() ([]netlink.Route, error) {
		return h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	})
}
