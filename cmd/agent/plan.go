package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"
	"text/tabwriter"

	"github.com/calico-prep/calico-prep/pkg/calico"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

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
	switch *f.output {
	case "human", "env", "kustomize", "operator", "json":
	default:
		return o, fmt.Errorf("-o: unknown output format %q: want human, env, kustomize, operator or json", *f.output)
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
	rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: flagPath}
	field, source := "--kubeconfig", flagPath
	if flagPath == "" {
		field, source = "KUBECONFIG", getenv("KUBECONFIG")
		rules.Precedence = filepath.SplitList(source)
		if len(rules.Precedence) == 0 {
			return nil, errors.New("no kubeconfig: give --kubeconfig or set KUBECONFIG (plan runs on an operator's machine, not in a pod)")
		}
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: kubeContext}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("%s: load %q: %w", field, source, err)
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
		n := plan.Node{Name: info.Name, ControlPlane: info.ControlPlane}
		for _, s := range info.InternalIPs {
			if a, err := netip.ParseAddr(s); err == nil {
				n.InternalIPs = append(n.InternalIPs, a)
			}
		}
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

	p, err := plan.Make(ctx, nodes, opts)
	if errors.Is(err, plan.ErrImpossibleSize) {
		return usageError{err}
	}
	if err != nil {
		return err
	}
	if err := writePlan(stdout, *f.output, p); err != nil {
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

func writePlan(w io.Writer, format string, p plan.Plan) error {
	switch format {
	case "json":
		return writeJSON(w, p)
	case "env":
		var b strings.Builder
		writeComments(&b, format, p)
		for _, e := range p.Env() {
			fmt.Fprintf(&b, "%s=%s\n", e.Name, e.Value)
		}
		_, err := io.WriteString(w, b.String())
		return err
	case "kustomize":
		return writeYAML(w, format, p, p.DaemonSetPatch())
	case "operator":
		in, err := p.Installation()
		if err != nil {
			return err
		}
		return writeYAML(w, format, p, in)
	}
	return printPlan(w, p)
}

// writeComments heads the machine formats with what they cannot carry: Typha, WireGuard
// under the operator, and why the plan is partial.
func writeComments(b *strings.Builder, format string, p plan.Plan) {
	fmt.Fprintf(b, "# calico-prep plan for %d nodes (%d reported)\n", p.Nodes, p.Reported)
	if p.Typha.Recommended {
		fmt.Fprintf(b, "# Typha: %s.\n", p.Typha.Advice)
		if format == "operator" {
			b.WriteString("# The operator always runs Typha and scales it with the node count itself; Installation has no replica count.\n")
		} else {
			fmt.Fprintf(b, "# calico.yaml has no Typha: install from Calico's Typha manifest (calico-typha.yaml) and scale Deployment calico-typha to %d.\n", p.Typha.Replicas)
		}
	}
	if p.WireGuard && format == "operator" {
		b.WriteString("# WireGuard is not part of the Installation: set wireguardEnabled: true in FelixConfiguration default.\n")
	}
	for _, problem := range p.Problems {
		fmt.Fprintf(b, "# PARTIAL: %s\n", problem)
	}
}

func writeYAML(w io.Writer, format string, p plan.Plan, v any) error {
	out, err := yaml.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %T: %w", v, err)
	}
	var b strings.Builder
	writeComments(&b, format, p)
	b.Write(out)
	_, err = io.WriteString(w, b.String())
	return err
}

// printPlan is the human summary.
func printPlan(w io.Writer, p plan.Plan) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Calico plan for %d nodes (%d reported; %d not ready for Calico yet by their own checks)\n", p.Nodes, p.Reported, p.NotReady)
	for _, pool := range p.Pools {
		b.WriteString("\n")
		printPool(&b, pool)
	}
	for _, ad := range p.Autodetection {
		b.WriteString("\n")
		if err := printAutodetection(&b, ad); err != nil {
			return err
		}
	}
	fmt.Fprintf(&b, "\nDatastore: %s\n", p.Typha.Advice)
	fmt.Fprintf(&b, "Encapsulation: %s, BGP %t, WireGuard %t\n", p.Encapsulation, p.BGP, p.WireGuard)
	b.WriteString("Firewall openings on every node:\n")
	for _, o := range p.Firewall {
		fmt.Fprintf(&b, "  %-20s %s\n", o, o.For)
	}
	if len(p.Unreported) > 0 {
		fmt.Fprintf(&b, "\nNodes without a report (%d), not covered by this plan:\n", len(p.Unreported))
		for _, u := range p.Unreported[:min(len(p.Unreported), 10)] {
			fmt.Fprintf(&b, "  %s: %s\n", u.Node, u.Reason)
		}
		if more := len(p.Unreported) - 10; more > 0 {
			fmt.Fprintf(&b, "  … and %d more (-o json lists all)\n", more)
		}
	}
	if p.Partial {
		b.WriteString("\nThe plan is PARTIAL:\n")
		for _, problem := range p.Problems {
			fmt.Fprintf(&b, "  - %s\n", problem)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func printPool(b *strings.Builder, pool plan.Pool) {
	if pool.CIDR.IsValid() {
		fmt.Fprintf(b, "Pod CIDR (IPv%d): %s\n", pool.Family, pool.CIDR)
	} else {
		fmt.Fprintf(b, "Pod CIDR (IPv%d): none free of size /%d\n", pool.Family, pool.Bits)
	}
	if pool.Note != "" {
		fmt.Fprintf(b, "  note: %s\n", pool.Note)
	}
	c := pool.AskedCollisions
	if c == nil {
		return
	}
	fmt.Fprintf(b, "  the asked %s cannot be used:\n", pool.Asked)
	for _, s := range c.Cluster {
		fmt.Fprintf(b, "    %s\n", s)
	}
	if c.Nodes > 0 {
		fmt.Fprintf(b, "    it collides on %d nodes (%d collisions); by host network:\n", c.Nodes, c.Total)
		for _, n := range c.Networks {
			fmt.Fprintf(b, "      %-20s on %d nodes, e.g. %s\n", n.Network, n.Nodes, n.Example)
		}
		fmt.Fprintln(b, "    first collisions:")
		for _, n := range c.First {
			fmt.Fprintf(b, "      %s: %s\n", n.Node, n.Collision)
		}
		if more := c.Total - len(c.First); more > 0 {
			fmt.Fprintf(b, "      … and %d more (-o json for the summary, agent check on a node for its own)\n", more)
		}
	}
	if len(pool.Searched) > 0 {
		fmt.Fprintf(b, "  searched for a free /%d in %s\n", pool.Bits, strings.Join(prefixes(pool.Searched), ", "))
	}
}

func printAutodetection(b *strings.Builder, ad plan.Autodetect) error {
	variable := "IP_AUTODETECTION_METHOD"
	if ad.Family == 6 {
		variable = "IP6_AUTODETECTION_METHOD"
	}
	switch {
	case ad.Method != "":
		fmt.Fprintf(b, "IP autodetection (IPv%d): %s=%s\n", ad.Family, variable, ad.Method)
	case ad.Best != "":
		fmt.Fprintf(b, "IP autodetection (IPv%d): no method is right on every node; the best, %s, is in the other outputs\n", ad.Family, ad.Best)
	default:
		fmt.Fprintf(b, "IP autodetection (IPv%d): no node to check\n", ad.Family)
	}
	fmt.Fprintf(b, "  intended: %s; checked on %d nodes\n", ad.Intended, ad.Checked)
	for _, u := range ad.Undetermined[:min(len(ad.Undetermined), 5)] {
		fmt.Fprintf(b, "  not checked: %s: %s\n", u.Node, u.Reason)
	}
	if more := len(ad.Undetermined) - 5; more > 0 {
		fmt.Fprintf(b, "  not checked: … and %d more\n", more)
	}
	tw := tabwriter.NewWriter(b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  METHOD\tRIGHT\tWRONG\tBASIS")
	for _, c := range ad.Candidates {
		method := c.Method
		if c.Estimate {
			method += " (estimate from routes)"
		}
		fmt.Fprintf(tw, "  %s\t%d\t%d\t%s\n", method, c.Agrees, c.Wrong, c.Basis)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, c := range ad.Candidates {
		if c.Wrong == 0 {
			continue
		}
		fmt.Fprintf(b, "  %s is wrong on %d nodes:\n", c.Method, c.Wrong)
		for _, m := range c.Misses[:min(len(c.Misses), 5)] {
			what := "picks " + m.Picked
			if m.Error != "" {
				what = oneLine(m.Error)
			}
			fmt.Fprintf(b, "    %s: %s; intended %s\n", m.Node, what, m.Intended)
		}
		if more := c.Wrong - min(len(c.Misses), 5); more > 0 {
			fmt.Fprintf(b, "    … and %d more\n", more)
		}
	}
	return nil
}

func prefixes(ps []netip.Prefix) []string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return s
}
