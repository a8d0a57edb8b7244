package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/calico-prep/calico-prep/pkg/agent"
	"github.com/calico-prep/calico-prep/pkg/config"
	"github.com/calico-prep/calico-prep/pkg/firewalld"
	"github.com/calico-prep/calico-prep/pkg/networkmanager"
)

// runCleanup removes exactly what calico-prep added: the firewalld rules, zone and policies its
// state file records, its NetworkManager drop-in and its systemd-networkd files. Everything else stays as it was.
func runCleanup(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	fs := newFlagSet("cleanup", stderr)
	hf := bindHostFlags(fs, false)
	cfg, err := hf.parse(fs, args, getenv)
	if err != nil {
		return err
	}
	var errs []error
	if cfg.Firewalld != config.ModeOff {
		errs = append(errs, cleanupFirewalld(ctx, cfg, stdout))
	}
	if cfg.NetworkManager != config.ModeOff {
		errs = append(errs, cleanupNetworkManager(ctx, cfg, stdout))
	}
	if cfg.Networkd != config.ModeOff {
		if err := agent.CleanupNetworkd(ctx, cfg); err != nil {
			errs = append(errs, err)
		} else {
			fmt.Fprintln(stdout, "systemd-networkd: removed the calico-prep .network file and networkd.conf drop-in")
		}
	}
	return errors.Join(errs...)
}

func cleanupFirewalld(ctx context.Context, cfg config.Config, stdout io.Writer) error {
	c, err := firewalld.Dial(ctx, "")
	if errors.Is(err, firewalld.ErrNotRunning) {
		fmt.Fprintln(stdout, "firewalld: not running; nothing removed (its record stays for a later cleanup)")
		return nil
	}
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	done, err := firewalld.Cleanup(ctx, c, cfg.StateDir)
	for _, z := range done.Restored {
		fmt.Fprintf(stdout, "firewalld: zone %s is its packaged version again (nothing but calico-prep's rules had changed it)\n", z)
	}
	for _, z := range done.Kept {
		fmt.Fprintf(stdout, "firewalld: zone %s keeps its copy in /etc/firewalld: it was changed by others since calico-prep first changed it, and their changes stay\n", z)
	}
	if err != nil {
		if errors.Is(err, firewalld.ErrNotRunning) {
			fmt.Fprintln(stdout, "firewalld: not running; nothing removed (its record stays for a later cleanup)")
			return nil
		}
		return err
	}
	fmt.Fprintln(stdout, "firewalld: removed what calico-prep added")
	return nil
}

func cleanupNetworkManager(ctx context.Context, cfg config.Config, stdout io.Writer) error {
	c, err := networkmanager.Dial(ctx, "")
	if err != nil {
		c = nil // no bus: the drop-in is still removed; NetworkManager reads it when it starts
	}
	if c != nil {
		defer func() { _ = c.Close() }()
	}
	if err := networkmanager.Cleanup(ctx, c, cfg.NetworkManagerConfDir); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "NetworkManager: removed the calico-prep drop-in")
	return nil
}
