package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/calico-prep/calico-prep/pkg/config"
	"github.com/calico-prep/calico-prep/pkg/networkmanager"
)

// Preflight checks, before a pass that may change the host, what only the host can tell, so
// that nothing is half-applied: the state directory must be writable when firewalld may be
// changed (a rule added but not recorded could never be cleaned up), and the NetworkManager
// drop-in directory when the drop-in will be written (mode on, or auto with NetworkManager
// running).
func (h *Host) Preflight(ctx context.Context) error {
	if h.cfg.Firewalld != config.ModeOff {
		if err := writableDir(h.cfg.StateDir); err != nil {
			return fmt.Errorf("--state-dir: %w", err)
		}
	}
	write := h.cfg.NetworkManager == config.ModeOn
	if h.cfg.NetworkManager == config.ModeAuto {
		if nm, err := networkmanager.Dial(ctx, ""); err == nil {
			running, err := nm.Running(ctx)
			write = err == nil && running
			_ = nm.Close()
		}
	}
	if !write {
		return nil
	}
	if err := networkmanager.ValidateConfDir(h.cfg.NetworkManagerConfDir); err != nil {
		return fmt.Errorf("--networkmanager-conf-dir: %w", err)
	}
	return nil
}

// writableDir checks that dir, or the nearest existing directory above it (the state
// directory is created on first use), can be written.
func writableDir(dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if errors.Is(err, fs.ErrNotExist) && d != filepath.Dir(d) {
			continue
		}
		if err != nil {
			return fmt.Errorf("check %q: %w", dir, err)
		}
		if !st.IsDir() {
			return fmt.Errorf("check %q: %q is not a directory", dir, d)
		}
		if err := unix.Access(d, unix.W_OK|unix.X_OK); err != nil {
			return fmt.Errorf("check %q: %q is not writable: %w", dir, d, err)
		}
		return nil
	}
}
