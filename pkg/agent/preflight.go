package agent

import (
	"context"
	"fmt"

	"github.com/calico-prep/calico-prep/pkg/config"
	"github.com/calico-prep/calico-prep/pkg/networkmanager"
)

// Preflight checks, before a pass that may change the host, what only the host can tell: the
// NetworkManager drop-in directory must be writable when the drop-in will be written (mode on,
// or auto with NetworkManager running), so that nothing is half-applied.
func (h *Host) Preflight(ctx context.Context) error {
	h.mu.Lock()
	nm := h.nm
	h.mu.Unlock()
	write := h.cfg.NetworkManager == config.ModeOn
	if h.cfg.NetworkManager == config.ModeAuto && nm != nil {
		running, err := nm.Running(ctx)
		write = err == nil && running
	}
	if !write {
		return nil
	}
	if err := networkmanager.ValidateConfDir(h.cfg.NetworkManagerConfDir); err != nil {
		return fmt.Errorf("--networkmanager-conf-dir: %w", err)
	}
	return nil
}
