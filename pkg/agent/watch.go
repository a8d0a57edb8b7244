package agent

import (
	"context"
	"math"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/calico-prep/calico-prep/pkg/firewalld"
	"github.com/calico-prep/calico-prep/pkg/networkd"
	"github.com/calico-prep/calico-prep/pkg/networkmanager"
)

// Watch calls poke whenever something happened that may change a check's outcome: a netlink
// event, a firewalld, NetworkManager or systemd-networkd signal, a connection to the system bus
// made or lost. It keeps the D-Bus connections that Connect made: a lost one is dialled again,
// with backoff while the bus is away. It returns when ctx ends.
func (h *Host) Watch(ctx context.Context, poke func()) {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { h.watchLinks(ctx, poke) })
	h.keepConnected(ctx, poke, &wg)
}

// redial spaces attempts to reach the system bus: soon after a restart of the bus, slower
// while it stays away.
func redial() wait.Backoff {
	return wait.Backoff{Duration: 250 * time.Millisecond, Factor: 2, Jitter: 0.5, Steps: math.MaxInt32, Cap: time.Minute}
}

// resubscribe spaces attempts to subscribe to netlink again after a failure.
func resubscribe() wait.Backoff {
	return wait.Backoff{Duration: 100 * time.Millisecond, Factor: 2, Jitter: 0.5, Steps: math.MaxInt32, Cap: 30 * time.Second}
}

// keepConnected watches every client and dials again what went away.
func (h *Host) keepConnected(ctx context.Context, poke func(), wg *sync.WaitGroup) {
	lost := make(chan struct{}, 3)
	var watchedFW *firewalld.Client
	var watchedNM *networkmanager.Client
	var watchedND *networkd.Client
	b := redial()
	for {
		fw, nm, nd := h.clients()
		started := false
		// Subscribe before the pass that poke asks for, so that nothing between them is missed.
		if fw != nil && fw != watchedFW {
			watchedFW, started = fw, true
			ch, err := fw.Watch(ctx)
			follow(ctx, h, "firewalld", fw, ch, err, poke, lost, wg)
		}
		if nm != nil && nm != watchedNM {
			watchedNM, started = nm, true
			ch, err := nm.Watch(ctx)
			follow(ctx, h, "NetworkManager", nm, ch, err, poke, lost, wg)
		}
		if nd != nil && nd != watchedND {
			watchedND, started = nd, true
			ch, err := nd.Watch(ctx)
			follow(ctx, h, "systemd-networkd", nd, ch, err, poke, lost, wg)
		}
		if started {
			poke() // what happened before the watch began is not lost
		}
		var retry <-chan time.Time
		if h.disconnected() {
			retry = time.After(b.Step())
		} else {
			b = redial()
		}
		select {
		case <-ctx.Done():
			return
		case <-lost:
			poke()
		case <-retry:
			h.Connect(ctx)
		}
	}
}

// follow pokes for every event of a client's watch (ch, or err when it could not start).
// When the watch ends before ctx, the connection is gone: the client is dropped and lost told.
func follow[E any](ctx context.Context, h *Host, name string, client any, ch <-chan E, err error, poke func(), lost chan<- struct{}, wg *sync.WaitGroup) {
	wg.Go(func() {
		if err == nil {
			for range ch {
				poke()
			}
		}
		if ctx.Err() != nil {
			return
		}
		h.log.Warn(name+" watch ended; reconnecting", "err", err)
		h.disconnect(client)
		select {
		case lost <- struct{}{}:
		case <-ctx.Done():
		}
	})
}

// watchLinks turns netlink events into pokes, subscribing again with backoff when the
// subscription fails (e.g. the socket's buffer overflowed under a burst).
func (h *Host) watchLinks(ctx context.Context, poke func()) {
	b := resubscribe()
	for ctx.Err() == nil {
		ch, err := h.links.Subscribe(ctx)
		if err == nil {
			for ev := range ch {
				if ev.Err != nil {
					err = ev.Err
					break
				}
				b = resubscribe()
				poke()
			}
		}
		if ctx.Err() != nil {
			return
		}
		d := b.Step()
		h.log.Warn("netlink subscription ended; subscribing again", "err", err, "retry_in", d)
		poke() // events may have been lost
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
	}
}
