package autodetect

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/calico-prep/calico-prep/pkg/check"
	"github.com/calico-prep/calico-prep/pkg/host"
)

// NewCheck returns the read-only check "autodetect/ipv4" or "autodetect/ipv6": it passes
// naming the address calico-node would pick with m (warnings appended to the message) and
// fails with reason NoAddressDetected when calico-node would find none, which makes
// calico-node exit at startup on a new node. snapshot reads the node's interfaces; env, which
// may be nil, supplies the Node's InternalIPs and the can-reach probe.
func NewCheck(m Method, family int, snapshot func(ctx context.Context) (host.Snapshot, error), env func(ctx context.Context) Env) check.Check {
	return check.Check{
		Name: fmt.Sprintf("autodetect/ipv%d", family),
		Verify: func(ctx context.Context) check.Result {
			snap, err := snapshot(ctx)
			if err != nil {
				return check.Errored(fmt.Errorf("read interfaces: %w", err))
			}
			var e Env
			if env != nil {
				e = env(ctx)
			}
			res, err := Detect(ctx, m, family, snap.Interfaces, e)
			switch {
			case errors.Is(err, ErrNoAddress):
				return check.Failed("NoAddressDetected", "%s", err.Error()).With("method", m.String())
			case err != nil:
				return check.Errored(err).With("method", m.String())
			}
			msg := fmt.Sprintf("%s picks %s %s", res.Method, res.Interface, res.CIDR)
			if len(res.Warnings) > 0 {
				msg += "; " + strings.Join(res.Warnings, "; ")
			}
			return check.Passed("%s", msg).
				With("method", res.Method).
				With("interface", res.Interface).
				With("cidr", res.CIDR.String()).
				With("warnings", strconv.Itoa(len(res.Warnings)))
		},
	}
}
