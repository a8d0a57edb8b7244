package calicoconfig

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/calico-prep/calico-prep/pkg/check"
)

// CheckName is the check that reports where the configuration comes from.
const CheckName = "calico/config"

// NewCheck returns the read-only check calico/config over the current effective configuration:
// not applicable while Calico is not installed, failing when one of Calico's resources holds
// an invalid value (which then changed nothing), and otherwise passing with the settings
// Calico's resources decide, the disagreements with explicit settings as warnings, and what the
// dataplane needs from the node.
func NewCheck(current func() Effective) check.Check {
	return check.Check{
		Name: CheckName,
		Verify: func(context.Context) check.Result {
			e := current()
			var fromCalico []string
			for _, s := range e.Settings {
				if s.Calico {
					fromCalico = append(fromCalico, fmt.Sprintf("%s %s (%s)", s.Name, s.Value, s.From))
				}
			}
			var res check.Result
			switch {
			case len(e.Problems) > 0:
				res = check.Failed("InvalidCalicoConfig", "invalid values in Calico's resources, which change nothing here: %s", strings.Join(e.Problems, "; "))
			case e.Group == "" && len(fromCalico) == 0 && !e.Synced:
				res = check.Skipped("CalicoConfigNotRead", "Calico's resources are not read yet: settings from flags, environment and defaults")
			case e.Group == "" && len(fromCalico) == 0:
				res = check.Skipped("CalicoNotInstalled", "Calico's resources are not installed: settings from flags, environment and defaults")
			default:
				msg := "following Calico's resources"
				if e.Group != "" {
					msg += " (" + e.Group + ")"
				}
				if len(fromCalico) > 0 {
					msg += ": " + strings.Join(fromCalico, ", ")
				}
				res = check.Passed("%s", msg)
			}
			if len(e.Warnings) > 0 {
				res.Message += "; warning: " + strings.Join(e.Warnings, "; warning: ")
			}
			if len(e.Notes) > 0 {
				res.Message += "; " + strings.Join(e.Notes, "; ")
			}
			return res.With("group", e.Group).With("warnings", strconv.Itoa(len(e.Warnings))).With("synced", strconv.FormatBool(e.Synced))
		},
	}
}
