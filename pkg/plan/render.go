package plan

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"sigs.k8s.io/yaml"

	"github.com/calico-prep/calico-prep/pkg/calico"
)

// Formats are the outputs Write knows.
var Formats = []string{"human", "env", "kustomize", "operator", "json"}

// Write renders p as format: "human" (a summary with every collision and candidate method),
// "env" (calico-node's environment as KEY=VALUE lines), "kustomize" (a strategic-merge patch for
// calico.yaml's calico-node DaemonSet), "operator" (the tigera-operator Installation) or "json".
// The machine formats start with comments for what they cannot carry.
func Write(w io.Writer, format string, p Plan) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(p)
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
func writeComments(b *strings.Builder, format string, p Plan) {
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

func writeYAML(w io.Writer, format string, p Plan, v any) error {
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

func printPlan(w io.Writer, p Plan) error {
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

func printPool(b *strings.Builder, pool Pool) {
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
		fmt.Fprintf(b, "  searched for a free /%d in %s\n", pool.Bits, strings.Join(prefixStrings(pool.Searched), ", "))
	}
}

func printAutodetection(b *strings.Builder, ad Autodetect) error {
	variable := calico.EnvIPAutodetection
	if ad.Family == 6 {
		variable = calico.EnvIP6Autodetection
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
				what = strings.Join(strings.Fields(m.Error), " ")
			}
			fmt.Fprintf(b, "    %s: %s; intended %s\n", m.Node, what, m.Intended)
		}
		if more := c.Wrong - min(len(c.Misses), 5); more > 0 {
			fmt.Fprintf(b, "    … and %d more\n", more)
		}
	}
	return nil
}
