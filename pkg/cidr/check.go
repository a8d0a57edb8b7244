package cidr

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"

	"github.com/calico-prep/calico-prep/pkg/check"
	"github.com/calico-prep/calico-prep/pkg/host"
)

// Checks returns one read-only check per IP family that has a pool: "cidr/ipv4-pool" and
// "cidr/ipv6-pool". Each fails with the first collision of its family as the message (and how
// many more there are) and reason PodCIDROverlap, or PodCIDROutsideKubeadmSubnet when the only
// problem is kubeadm's podSubnet. snapshot reads the node's addresses and routes.
func Checks(in Input, snapshot func(ctx context.Context) (host.Snapshot, error)) []check.Check {
	var checks []check.Check
	for _, fam := range []int{4, 6} {
		var pools []netip.Prefix
		for _, p := range in.Pools {
			if family(p) == fam {
				pools = append(pools, p)
			}
		}
		if len(pools) == 0 {
			continue
		}
		famIn := Input{Pools: pools, ServiceCIDRs: in.ServiceCIDRs, KubeadmSubnets: in.KubeadmSubnets}
		checks = append(checks, check.Check{
			Name: fmt.Sprintf("cidr/ipv%d-pool", fam),
			Verify: func(ctx context.Context) check.Result {
				snap, err := snapshot(ctx)
				if err != nil {
					return check.Errored(fmt.Errorf("read addresses and routes: %w", err))
				}
				return result(famIn, Collisions(famIn, snap))
			},
		})
	}
	return checks
}

func result(in Input, cs []Collision) check.Result {
	pools := joinPrefixes(in.Pools)
	if len(cs) == 0 {
		msg := fmt.Sprintf("pod CIDR %s overlaps no host address, route or service CIDR", pools)
		if len(in.KubeadmSubnets) > 0 {
			msg += " and lies inside kubeadm's podSubnet"
		}
		return check.Passed("%s", msg).With("pools", pools).With("collisions", "0")
	}
	reason := "PodCIDROverlap"
	overlaps := 0
	for _, c := range cs {
		if c.Kind != OutsideKubeadm {
			overlaps++
		}
	}
	if overlaps == 0 {
		reason = "PodCIDROutsideKubeadmSubnet"
	}
	msg := cs[0].String()
	if len(cs) > 1 {
		msg += fmt.Sprintf(" (and %d more)", len(cs)-1)
	}
	return check.Failed(reason, "%s", msg).With("pools", pools).With("collisions", strconv.Itoa(len(cs)))
}
