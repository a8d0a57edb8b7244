package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"k8s.io/client-go/rest"

	"github.com/calico-prep/calico-prep/pkg/calico"
	"github.com/calico-prep/calico-prep/pkg/calicoconfig"
	"github.com/calico-prep/calico-prep/pkg/plan"
)

// calicoReadTimeout bounds the plan's read of Calico's resources: a kubeconfig that may not
// read them should not hold the plan up for long.
const calicoReadTimeout = 10 * time.Second

// clusterDefaults fills in what the operator's flags left open from the cluster itself, and
// says so on stderr: kubeadm's serviceSubnet and podSubnet (kube-system/kubeadm-config), and,
// once Calico is installed, its enabled IP pools (the plan then checks those on every node),
// their encapsulation and whether Calico uses BGP.
func clusterDefaults(ctx context.Context, restCfg *rest.Config, fs *flag.FlagSet, o *plan.Options, stderr io.Writer) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	note := func(format string, args ...any) { fmt.Fprintf(stderr, "agent: plan: "+format+"\n", args...) }
	c, err := calicoconfig.New(restCfg, "", slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	if !given["service-cidr"] || !given["kubeadm-pod-subnet"] {
		k, ok, err := c.Kubeadm(ctx)
		switch {
		case err != nil:
			note("%v; using the flags", err)
		case ok:
			if !given["service-cidr"] && len(k.ServiceSubnets) > 0 {
				o.ServiceCIDRs = k.ServiceSubnets
				note("service CIDR %s from kube-system/kubeadm-config", prefixList(k.ServiceSubnets))
			}
			if !given["kubeadm-pod-subnet"] && len(k.PodSubnets) > 0 {
				o.KubeadmSubnets = k.PodSubnets
				note("kubeadm podSubnet %s from kube-system/kubeadm-config", prefixList(k.PodSubnets))
			}
		}
	}

	rctx, cancel := context.WithTimeout(ctx, calicoReadTimeout)
	st, err := c.Read(rctx)
	cancel()
	if err != nil {
		note("%v; planning without Calico's IP pools", err)
		return nil
	}
	var v4, v6 []calicoconfig.Pool
	for _, p := range st.Pools {
		switch {
		case p.Disabled:
		case p.CIDR.Addr().Is4():
			v4 = append(v4, p)
		default:
			v6 = append(v6, p)
		}
	}
	if !given["pod-cidr"] && len(v4) > 0 {
		o.PodCIDR = v4[0].CIDR
		note("pod CIDR %s from IPPool %s (Calico is installed): the plan checks it on every node", v4[0].CIDR, v4[0].Name)
		if !given["encapsulation"] {
			o.Encapsulation = calico.Encapsulation(v4[0].Encapsulation)
		}
	}
	if !given["pod-cidr-v6"] && !given["ipv6"] && len(v6) > 0 {
		o.IPv6, o.PodCIDRv6 = true, v6[0].CIDR
		note("IPv6 pod CIDR %s from IPPool %s", v6[0].CIDR, v6[0].Name)
	}
	if !given["bgp"] {
		o.BGP = o.Encapsulation != calico.EncapVXLAN
		switch {
		case st.Installation != nil && st.Installation.BGP != nil:
			o.BGP = *st.Installation.BGP
		case st.CalicoBackend == "bird":
			o.BGP = true
		case st.CalicoBackend == "vxlan" || st.CalicoBackend == "none":
			o.BGP = false
		}
	}
	return nil
}

func prefixList(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}
