package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/calico-prep/calico-prep/pkg/agent"
	"github.com/calico-prep/calico-prep/pkg/check"
)

func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := newFlagSet("check", stderr)
	hf := bindHostFlags(fs, false)
	cfg, err := hf.parse(fs, args, getenv)
	if err != nil {
		return err
	}
	h, err := agent.Open(ctx, cfg, hf.logger(stderr))
	if err != nil {
		return err
	}
	defer h.Close()
	h.Connect(ctx)
	rep, _ := h.Pass(ctx, check.Runner{Mode: check.VerifyOnly, Disabled: cfg.DisableChecks})
	if err := printReport(stdout, *hf.output, rep); err != nil {
		return err
	}
	if !rep.Ready {
		return errNotReady
	}
	return nil
}

// printReport writes a report as JSON or as a table with one line per check.
func printReport(w io.Writer, output string, rep check.Report) error {
	if output == "json" {
		return writeJSON(w, rep)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tSTATUS\tMESSAGE")
	for _, e := range rep.Entries {
		status := string(e.Status)
		switch {
		case e.Applied:
			status += " (applied)"
		case e.WouldApply:
			status += " (would apply)"
		case e.ApplyError != "":
			status += " (apply failed: " + oneLine(e.ApplyError) + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", e.Name, status, oneLine(e.Message))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if f, ok := rep.FirstFailure(); ok {
		_, err := fmt.Fprintf(w, "\nnot ready for Calico: %s (%s)\n", f.Message, f.Name)
		return err
	}
	_, err := fmt.Fprintln(w, "\nready for Calico")
	return err
}
