package main

import (
	"context"
	"errors"
	"io"
	"runtime"
	"runtime/debug"

	"k8s.io/klog/v2"

	"github.com/calico-prep/calico-prep/pkg/agent"
	"github.com/calico-prep/calico-prep/pkg/calicoconfig"
	"github.com/calico-prep/calico-prep/pkg/config"
	"github.com/calico-prep/calico-prep/pkg/metrics"
	"github.com/calico-prep/calico-prep/pkg/nodestatus"
)

// daemonGCPercent is the daemon's GOGC unless the environment sets one.
const daemonGCPercent = 50

func runDaemon(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := newFlagSet("run", stderr)
	hf := bindHostFlags(fs, true)
	cfg, err := hf.parse(fs, args, getenv)
	if err != nil {
		return err
	}
	log := hf.logger(stderr)
	// The daemon's live heap is about 1.5 MiB and it allocates little between events; the
	// runtime's default lets the heap grow to 4 MiB before it collects. Half of that costs a few
	// more collections (milliseconds per hour idle). It does one thing at a time and waits on
	// I/O: one P is enough, and each further one (a node's core count by default, without a CPU
	// limit) adds threads and caches. Together about 2 MiB less RSS on every node; the
	// environment's GOGC and GOMAXPROCS still win.
	if getenv("GOGC") == "" {
		debug.SetGCPercent(daemonGCPercent)
	}
	if getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	// client-go logs through klog (throttling, server warnings): send it to the same handler.
	klog.SetSlogLogger(log.With("component", "client-go"))

	restCfg, err := nodestatus.LoadConfig(cfg.Kubeconfig, "")
	// Interfaces holding a nil pointer are not nil: these stay nil without a cluster.
	var node agent.Publisher
	var calicoCfg agent.CalicoSource
	switch {
	case errors.Is(err, nodestatus.ErrStandalone):
		log.Info("standalone: no kubeconfig and not in a cluster; preparing the host without Node reporting")
	case err != nil:
		return usageError{err}
	default:
		c, err := nodestatus.New(restCfg, cfg.NodeName, log)
		if err != nil {
			return usageError{err}
		}
		node = c
		if cfg.CalicoConfig == config.ModeAuto {
			cc, err := calicoconfig.New(restCfg, cfg.NodeName, log)
			if err != nil {
				return usageError{err}
			}
			calicoCfg = cc
		}
	}

	h, err := agent.Open(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer h.Close()
	if !cfg.DryRun {
		if err := h.Preflight(ctx); err != nil {
			return usageError{err}
		}
	}
	if calicoCfg == nil {
		h.SetEffective(calicoconfig.FromFlags(cfg))
	}
	h.Connect(ctx)
	m := metrics.New(version)
	a := agent.New(cfg, agent.Deps{Passes: h, Node: node, Calico: calicoCfg, Metrics: m, Sources: []agent.Source{h.Watch}, Log: log})

	if cfg.Once {
		rep, err := a.Once(ctx)
		if len(rep.Entries) == 0 {
			return err // no pass ran: there is nothing to print
		}
		if perr := printReport(stdout, *hf.output, rep); perr != nil {
			return perr
		}
		if err != nil {
			return err
		}
		if !rep.Ready {
			return errNotReady
		}
		return nil
	}

	if cfg.MetricsBindAddress != "" {
		wait, err := a.Serve(ctx, cfg.MetricsBindAddress, m.Handler())
		if err != nil {
			return err
		}
		defer func() { _ = wait() }()
	}
	log.Info("calico-prep agent running", "version", version, "node", cfg.NodeName, "dry_run", cfg.DryRun)
	return a.Run(ctx)
}
