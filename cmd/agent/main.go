// Command agent prepares a Kubernetes node for Calico and reports whether it is ready.
//
//	agent check       one read-only pass over this host (exit 0 ready, 1 not ready, 2 bad usage)
//	agent autodetect  preview of Calico's IP autodetection on this host
//	agent run         the daemon; --once for one reconcile pass
//	agent cleanup     remove exactly what calico-prep added
//	agent plan        cluster-wide Calico install settings from every node's report
//	agent version
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit codes shared by every subcommand.
const (
	exitOK       = 0
	exitNotReady = 1
	exitUsage    = 2
)

// usageError is bad input: a flag, a value or an environment variable. It exits 2 before
// anything on the host is read or touched.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// errNotReady is returned when a pass finished and at least one check failed.
var errNotReady = errors.New("node is not ready for Calico")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

func exitCode(err error, stderr io.Writer) int {
	var ue usageError
	switch {
	case err == nil, errors.Is(err, errHelp):
		return exitOK
	case errors.Is(err, errNotReady):
		return exitNotReady
	case errors.As(err, &ue):
		fmt.Fprintln(stderr, "agent:", err)
		return exitUsage
	default:
		fmt.Fprintln(stderr, "agent:", err)
		return exitNotReady
	}
}

const usage = `usage: agent <command> [flags]

commands:
  check       one read-only pass over this host; exit 0 when ready, 1 when not
  autodetect  preview Calico's IP autodetection (--method, --all)
  run         the daemon; --once for one reconcile pass, --dry-run to change nothing
  cleanup     remove exactly what calico-prep added (firewalld rules, zone, policy; NetworkManager drop-in; networkd files)
  plan        compute Calico install settings from every node's report (needs a kubeconfig)
  version     print the version

"agent <command> -h" lists the command's flags.`

func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return usageError{errors.New("no command given")}
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "check":
		return runCheck(ctx, args, stdout, stderr, getenv)
	case "autodetect":
		return runAutodetect(ctx, args, stdout, stderr, getenv)
	case "run":
		return runDaemon(ctx, args, stdout, stderr, getenv)
	case "cleanup":
		return runCleanup(ctx, args, stdout, stderr, getenv)
	case "plan":
		return runPlan(ctx, args, stdout, stderr, getenv)
	case "version", "--version":
		fmt.Fprintln(stdout, version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, usage)
		return nil
	}
	fmt.Fprintln(stderr, usage)
	return usageError{fmt.Errorf("unknown command %q", cmd)}
}
