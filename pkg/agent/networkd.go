package agent

import (
	"context"

	"github.com/calico-prep/calico-prep/pkg/check"
	"github.com/calico-prep/calico-prep/pkg/config"
	"github.com/calico-prep/calico-prep/pkg/networkd"
)

// networkdOptions are the networkd checks' options: the .network directory, networkd.conf next
// to it, and the host's /run and /usr/lib under --host-root.
func networkdOptions(cfg config.Config) networkd.Options {
	return networkd.Options{
		Mode:              cfg.Networkd,
		ConfDir:           cfg.NetworkdConfDir,
		Root:              cfg.HostRoot,
		KeepForeignRoutes: cfg.NetworkdKeepForeignRoutes,
	}
}

// networkdChecks are the networkd checks over the current client. Called with h.mu held.
func (h *Host) networkdChecks() []check.Check {
	return networkd.Checks(h.nd, networkdOptions(h.cfg))
}

// dialNetworkd dials the system bus for networkd when it is on and not connected. Called
// without h.mu: a hung bus must not block the host.
func (h *Host) dialNetworkd(ctx context.Context) *networkd.Client {
	h.mu.Lock()
	need := h.cfg.Networkd != config.ModeOff && h.nd == nil
	h.mu.Unlock()
	if !need {
		return nil
	}
	c, err := networkd.Dial(ctx, "")
	if err != nil {
		h.log.Debug("system bus not reachable for systemd-networkd", "err", err)
		return nil
	}
	return c
}

// networkdDisconnected reports whether networkd is on and has no connection. Called with h.mu held.
func (h *Host) networkdDisconnected() bool {
	return h.cfg.Networkd != config.ModeOff && h.nd == nil
}

// dropNetworkd closes client when it is the current one. Called with h.mu held.
func (h *Host) dropNetworkd(client any) bool {
	if h.nd == nil || client != h.nd {
		return false
	}
	_ = h.nd.Close()
	h.nd = nil
	return true
}

// CleanupNetworkd removes calico-prep's networkd files and reloads networkd when it runs.
func CleanupNetworkd(ctx context.Context, cfg config.Config) error {
	c, err := networkd.Dial(ctx, "")
	if err != nil {
		c = nil // no bus: the files are still removed; networkd reads them when it starts
	}
	if c != nil {
		defer func() { _ = c.Close() }()
	}
	return networkd.Cleanup(ctx, c, networkdOptions(cfg))
}
