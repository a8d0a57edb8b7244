package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"slices"
	"strings"

	"github.com/calico-prep/calico-prep/pkg/calico"

	"k8s.io/client-go/rest"

	"github.com/calico-prep/calico-prep/pkg/config"
	"github.com/calico-prep/calico-prep/pkg/nodestatus"
	"github.com/calico-prep/calico-prep/pkg/plan"
	"github.com/calico-prep/calico-prep/pkg/report"
)

const planHelp = `usage: agent plan --kubeconfig FILE [flags]

Reads every Node's calico-prep.io/report annotation and prints the Calico install settings that
fit every node: a pod CIDR that overlaps no host address or route on any node, the service CIDR
or kubeadm's podSubnet; the IP autodetection method that picks the intended address on every
node; Typha advice from the node count; the firewalld openings that follow.

Run it on an operator's machine, not in a pod: it needs a kubeconfig allowed to list nodes.
Without --service-cidr and --kubeadm-pod-subnet it reads them from kube-system/kubeadm-config;
once Calico is installed, without --pod-cidr it checks Calico's enabled IP pool (and its
encapsulation and BGP) on every node. Each value taken from the cluster is named on stderr.

output formats (-o):
  human      a summary with every collision and every candidate method
  env        calico-node environment, KEY=VALUE lines: agent plan -o env | kubectl set env -n kube-system daemonset/calico-node -c calico-node -e -
  kustomize  a strategic-merge patch for the calico-node DaemonSet of calico.yaml
  operator   the tigera-operator Installation "default" with spec.calicoNetwork
  json       the whole plan

exit status:
  0  the plan is complete: every node reported, a free pod CIDR, a method right on every node
  1  the plan is partial (printed, with the reasons on standard error): nodes without a report,
     nodes without a known intended address, no method right everywhere or no free pod CIDR;
     or the cluster could not be read
  2  bad usage: a bad flag, no kubeconfig, an impossible pod CIDR size, no report on any node

flags:`

// planPageSize keeps each list response around a few MiB however many nodes there are.
const planPageSize = 500

// errPlanPartial is a plan that was printed but does not cover everything.
var errPlanPartial = fmt.Errorf("plan is partial: %w", errNotReady)

type planFlags struct {
	kubeconfig, kubeContext         *string
	podCIDR, podCIDRv6              *string
	podCIDRSize, podCIDRv6Size      *int
	ipv6                            *bool
	serviceCIDR, kubeadmSubnet      *string
	encapsulation, intended, output *string
	bgp, wireguard                  *bool
	pageSize                        *int64
}

func bindPlanFlags(fs *flag.FlagSet) planFlags {
	return planFlags{
		kubeconfig:    fs.String("kubeconfig", "", "kubeconfig file (env KUBECONFIG, which may list several); required"),
		kubeContext:   fs.String("context", "", "kubeconfig context (default: the current one)"),
		podCIDR:       fs.String("pod-cidr", "192.168.0.0/16", "preferred IPv4 pod CIDR"),
		podCIDRSize:   fs.Int("pod-cidr-size", 0, "IPv4 pod CIDR prefix length (default: that of --pod-cidr)"),
		ipv6:          fs.Bool("ipv6", false, "plan an IPv6 pool and IPv6 autodetection too"),
		podCIDRv6:     fs.String("pod-cidr-v6", "", "preferred IPv6 pod CIDR; implies --ipv6 (default: the first free one in fd00::/8)"),
		podCIDRv6Size: fs.Int("pod-cidr-v6-size", 0, fmt.Sprintf("IPv6 pod CIDR prefix length (default: that of --pod-cidr-v6, else %d)", plan.DefaultIPv6Bits)),
		serviceCIDR:   fs.String("service-cidr", "", "service CIDR(s), comma-separated; the pod CIDR must not overlap them"),
		kubeadmSubnet: fs.String("kubeadm-pod-subnet", "", "kubeadm's podSubnet (--pod-network-cidr), comma-separated; the pod CIDR must lie inside"),
		encapsulation: fs.String("encapsulation", "ipip", "ipip, vxlan or none"),
		bgp:           fs.Bool("bgp", true, "Calico peers with BGP; false by default with --encapsulation vxlan"),
		wireguard:     fs.Bool("wireguard", false, "Calico encrypts with WireGuard"),
		intended:      fs.String("intended-interface", "internal-ip", `the interface Calico should take each node's address from: a regex matched against interface names, or "internal-ip" for the one holding the Node's InternalIP`),
		output:        fs.String("o", "human", "output format: human, env, kustomize, operator or json"),
		pageSize:      fs.Int64("page-size", planPageSize, "nodes per list request"),
	}
}

// options validates the flags into plan options; every error names the flag and the value.
func (f planFlags) options(fs *flag.FlagSet) (plan.Options, error) {
	given := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { given[fl.Name] = true })
	var o plan.Options
	var err error
	if !slices.Contains(plan.Formats, *f.output) {
		return o, fmt.Errorf("-o: unknown output format %q: want %s", *f.output, strings.Join(plan.Formats, ", "))
	}
	if *f.pageSize < 1 {
		return o, fmt.Errorf("--page-size: %d is not a positive number", *f.pageSize)
	}
	if o.PodCIDR, err = config.ParseCIDR("--pod-cidr", *f.podCIDR, 4); err != nil {
		return o, err
	}
	if o.PodCIDRBits, err = prefixLength("--pod-cidr-size", *f.podCIDRSize, 32); err != nil {
		return o, err
	}
	o.IPv6 = *f.ipv6 || *f.podCIDRv6 != ""
	if *f.podCIDRv6 != "" {
		if o.PodCIDRv6, err = config.ParseCIDR("--pod-cidr-v6", *f.podCIDRv6, 6); err != nil {
			return o, err
		}
	}
	if o.PodCIDRv6Bits, err = prefixLength("--pod-cidr-v6-size", *f.podCIDRv6Size, 128); err != nil {
		return o, err
	}
	if o.ServiceCIDRs, err = config.ParseCIDRList("--service-cidr", *f.serviceCIDR); err != nil {
		return o, err
	}
	if o.KubeadmSubnets, err = config.ParseCIDRList("--kubeadm-pod-subnet", *f.kubeadmSubnet); err != nil {
		return o, err
	}
	if o.Encapsulation, err = config.ParseEncapsulation("--encapsulation", *f.encapsulation); err != nil {
		return o, err
	}
	o.BGP = *f.bgp
	if !given["bgp"] {
		o.BGP = o.Encapsulation != calico.EncapVXLAN
	}
	switch {
	case !o.BGP && o.Encapsulation == calico.EncapIPIP:
		return o, errors.New("--bgp: false with --encapsulation ipip: IP-in-IP routes are distributed by BGP; use --encapsulation vxlan")
	case !o.BGP && o.Encapsulation == calico.EncapNone:
		return o, errors.New("--bgp: false with --encapsulation none: without encapsulation only BGP routes pod traffic")
	}
	o.WireGuard = *f.wireguard
	if *f.intended != "internal-ip" {
		if o.IntendedInterface, err = regexp.Compile(*f.intended); err != nil {
			return o, fmt.Errorf("--intended-interface: invalid regex %q", *f.intended)
		}
	}
	flags := map[int]string{4: "--pod-cidr-size", 6: "--pod-cidr-v6-size"}
	for _, fam := range []int{4, 6} {
		if fam == 6 && !o.IPv6 {
			continue
		}
		if err := o.CheckSize(fam); err != nil {
			return o, fmt.Errorf("%s: %w", flags[fam], err)
		}
	}
	return o, nil
}

func prefixLength(field string, n, max int) (int, error) {
	if n < 0 || n > max {
		return 0, fmt.Errorf("%s: invalid prefix length %d: want 1 to %d", field, n, max)
	}
	return n, nil
}

// loadPlanConfig reads the kubeconfig: the flag's file, else the files KUBECONFIG lists. There
// is deliberately no in-cluster fallback: the plan is an operator's tool.
func loadPlanConfig(flagPath, kubeContext string, getenv func(string) string) (*rest.Config, error) {
	field, source := "--kubeconfig", flagPath
	if flagPath == "" {
		field, source = "KUBECONFIG", getenv("KUBECONFIG")
	}
	if source == "" {
		return nil, errors.New("no kubeconfig: give --kubeconfig or set KUBECONFIG (plan runs on an operator's machine, not in a pod)")
	}
	cfg, err := nodestatus.LoadConfig(source, kubeContext)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	return cfg, nil
}

func runPlan(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := newFlagSet("plan", stderr)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), planHelp)
		fs.PrintDefaults()
	}
	f := bindPlanFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	opts, err := f.options(fs)
	if err != nil {
		return usageError{err}
	}
	restCfg, err := loadPlanConfig(*f.kubeconfig, *f.kubeContext, getenv)
	if err != nil {
		return usageError{err}
	}
	client, err := nodestatus.New(restCfg, "", slog.New(slog.NewTextHandler(stderr, nil)))
	if err != nil {
		return usageError{err}
	}

	var nodes []plan.Node
	reported := 0
	err = client.ListNodes(ctx, *f.pageSize, func(info nodestatus.NodeInfo) error {
		n := plan.Node{Name: info.Name, InternalIPs: info.InternalIPs, ControlPlane: info.ControlPlane}
		if info.Report != "" {
			r, err := report.Decode(info.Report)
			if err != nil {
				n.ReportError = err.Error()
			} else {
				n.Report = &r
				reported++
			}
		}
		nodes = append(nodes, n)
		return nil
	})
	if err != nil {
		return err
	}
	if reported == 0 {
		return usageError{fmt.Errorf("no node has a readable %s annotation (%d nodes listed): deploy the calico-prep agent first", nodestatus.AnnotationReport, len(nodes))}
	}

	if err := clusterDefaults(ctx, restCfg, fs, &opts, stderr); err != nil {
		return err
	}
	p, err := plan.Make(ctx, nodes, opts)
	if errors.Is(err, plan.ErrImpossibleSize) {
		return usageError{err}
	}
	if err != nil {
		return err
	}
	if err := plan.Write(stdout, *f.output, p); err != nil {
		return err
	}
	if p.Partial {
		for _, problem := range p.Problems {
			fmt.Fprintln(stderr, "agent: plan:", problem)
		}
		return errPlanPartial
	}
	return nil
}
