package agent

import (
	"context"

	"github.com/calico-prep/calico-prep/pkg/check"
	"github.com/calico-prep/calico-prep/pkg/config"
	"github.com/calico-prep/calico-prep/pkg/networkd"
)

// networkdConn is the host's connection for systemd-networkd; Host.mu guards it.
type networkdConn struct {
	client *networkd.Client // nil while there is no system bus or networkd is off
	// fresh is a client Connect dialed that nobody watches yet.
	fresh *networkd.Client
}

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
	return networkd.Checks(h.networkd.client, networkdOptions(h.cfg))
}

// dialNetworkd dials the system bus for networkd when it is on and not connected. Called
// without h.mu: a hung bus must not block the host.
func (h *Host) dialNetworkd(ctx context.Context) *networkd.Client {
	h.mu.Lock()
	need := h.cfg.Networkd != config.ModeOff && h.networkd.client == nil
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

// setNetworkd records a client dialed by dialNetworkd. Called with h.mu held.
func (h *Host) setNetworkd(c *networkd.Client) {
	if c != nil {
		h.networkd.client, h.networkd.fresh = c, c
	}
}

// takeFreshNetworkd returns the client Connect dialed last, once, so that the daemon watches it.
func (h *Host) takeFreshNetworkd() *networkd.Client {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.networkd.fresh
	h.networkd.fresh = nil
	return c
}

// networkdDisconnected reports whether networkd is on and has no connection. Called with h.mu held.
func (h *Host) networkdDisconnected() bool {
	return h.cfg.Networkd != config.ModeOff && h.networkd.client == nil
}

// dropNetworkd closes client when it is the current one. Called with h.mu held.
func (h *Host) dropNetworkd(client any) bool {
	if h.networkd.client == nil || client != h.networkd.client {
		return false
	}
	_ = h.networkd.client.Close()
	h.networkd.client = nil
	return true
}

// watchNetworkd pokes the loop when networkd restarts or a link's state changes (a new link
// networkd has matched, one it took over); a closed watch drops the client.
func (a *Agent) watchNetworkd(spawn func(func(context.Context)), c *networkd.Client) {
	if c == nil {
		return
	}
	spawn(func(ctx context.Context) {
		ch, err := c.Watch(ctx)
		if err == nil {
			for range ch {
				a.Poke()
			}
		}
		if ctx.Err() == nil {
			a.log.Warn("systemd-networkd watch ended; reconnecting", "err", err)
			a.host.Disconnect(c)
			a.Poke()
		}
	})
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
