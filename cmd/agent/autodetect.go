package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"regexp"
	"text/tabwriter"

	"github.com/calico-prep/calico-prep/pkg/autodetect"
	"github.com/calico-prep/calico-prep/pkg/config"
	"github.com/calico-prep/calico-prep/pkg/host"
	"github.com/calico-prep/calico-prep/pkg/links"
)

// autodetectOutput is the JSON contract of "agent autodetect -o json"; scripts depend on it.
type autodetectOutput struct {
	Method    string        `json:"method"`
	Interface string        `json:"interface,omitempty"`
	CIDR      *netip.Prefix `json:"cidr,omitempty"`
	Warnings  []string      `json:"warnings"`
	Error     string        `json:"error,omitempty"`
}

func runAutodetect(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := newFlagSet("autodetect", stderr)
	method := fs.String("method", "", "Calico autodetection method (default: $IP_AUTODETECTION_METHOD or $IP6_AUTODETECTION_METHOD, else first-found)")
	version := fs.Int("ip-version", 4, "4 or 6")
	internalIP := fs.String("node-internal-ip", "", "the Node's InternalIP, for kubernetes-internal-ip without a cluster")
	all := fs.Bool("all", false, "show what every method would pick on this host")
	output := fs.String("o", "table", "output format: table or json")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := validOutput(*output); err != nil {
		return err
	}
	if *version != 4 && *version != 6 {
		return usageError{fmt.Errorf("--ip-version: unknown IP version %d: want 4 or 6", *version)}
	}
	if *method == "" {
		*method = getenv(map[int]string{4: "IP_AUTODETECTION_METHOD", 6: "IP6_AUTODETECTION_METHOD"}[*version])
	}
	m, err := autodetect.ParseMethod(*method)
	if err != nil {
		return usageError{fmt.Errorf("--method: %w", err)}
	}
	ips, err := config.ParseAddrList("--node-internal-ip", *internalIP)
	if err != nil {
		return usageError{err}
	}

	lc, err := links.New(links.Options{})
	if err != nil {
		return err
	}
	defer func() { _ = lc.Close() }()
	snap, err := lc.Snapshot(ctx)
	if err != nil {
		return err
	}
	env := autodetect.Env{NodeInternalIPs: ips}

	methods := []autodetect.Method{m}
	if *all {
		methods = candidateMethods(snap, *version, len(ips) > 0)
	}
	outs := make([]autodetectOutput, 0, len(methods))
	found := false
	for _, m := range methods {
		res, err := autodetect.Detect(ctx, m, *version, snap.Interfaces, env)
		out := autodetectOutput{Method: m.String(), Warnings: res.Warnings}
		if out.Warnings == nil {
			out.Warnings = []string{}
		}
		switch {
		case err == nil:
			out.Interface, out.CIDR = res.Interface, &res.CIDR
			found = true
		case errors.Is(err, autodetect.ErrNoAddress):
			out.Error = err.Error()
		default:
			return err
		}
		outs = append(outs, out)
	}

	if *output == "json" {
		if *all {
			err = writeJSON(stdout, outs)
		} else {
			err = writeJSON(stdout, outs[0])
		}
	} else {
		err = printAutodetect(stdout, outs)
	}
	if err != nil {
		return err
	}
	if !found {
		return errNotReady
	}
	return nil
}

func printAutodetect(w io.Writer, outs []autodetectOutput) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "METHOD\tINTERFACE\tCIDR\tNOTE")
	for _, o := range outs {
		iface, cidr, note := o.Interface, "", o.Error
		if o.CIDR != nil {
			cidr = o.CIDR.String()
		}
		if iface == "" {
			iface = "-"
			cidr = "-"
		}
		if len(o.Warnings) > 0 {
			note = o.Warnings[0]
			if len(o.Warnings) > 1 {
				note += fmt.Sprintf(" (+%d more warnings)", len(o.Warnings)-1)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", o.Method, iface, cidr, oneLine(note))
	}
	return tw.Flush()
}

// candidateMethods lists, for --all, the methods worth comparing on this host: first-found,
// kubernetes-internal-ip when an InternalIP is known, can-reach= the default gateway, and for
// every interface with a usable address the anchored interface= and the cidr= that select it.
func candidateMethods(snap host.Snapshot, family int, haveInternalIP bool) []autodetect.Method {
	texts := []string{"first-found"}
	if haveInternalIP {
		texts = append(texts, "kubernetes-internal-ip")
	}
	for _, r := range snap.Routes {
		if r.Dst.Bits() == 0 && r.Gateway.IsValid() && (r.Gateway.Is4() == (family == 4)) {
			texts = append(texts, "can-reach="+r.Gateway.String())
			break
		}
	}
	for _, i := range snap.Interfaces {
		for _, a := range i.Addrs {
			if a.Addr().Is4() != (family == 4) || !a.Addr().IsGlobalUnicast() {
				continue
			}
			texts = append(texts, "interface=^"+regexp.QuoteMeta(i.Name)+"$", "cidr="+a.Masked().String())
			break
		}
	}
	methods := make([]autodetect.Method, 0, len(texts))
	for _, t := range texts {
		if m, err := autodetect.ParseMethod(t); err == nil {
			methods = append(methods, m)
		}
	}
	return methods
}
