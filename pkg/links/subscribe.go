package links

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// EventKind says what changed.
type EventKind string

const (
	EventLink  EventKind = "link"
	EventAddr  EventKind = "addr"
	EventRoute EventKind = "route"
)

// Event is one change, or the end of a subscription when Err is set.
type Event struct {
	Kind EventKind
	// Name is the interface the change concerns, when known; empty e.g. for blackhole routes.
	Name string
	Err  error
}

const (
	// updateBuffer absorbs bursts (a pod start is a few link, address and route changes).
	updateBuffer = 64
	// receiveBuffer asks for a larger socket buffer so that bursts overflow (ENOBUFS, which
	// ends the subscription) less often; the kernel caps it at net.core.rmem_max.
	receiveBuffer = 1 << 20
)

// Subscribe streams link, address and main-table route changes made after the call until ctx
// is done, then closes the channel. If the kernel side fails (e.g. the socket overflowed and
// events were lost), the channel delivers one Event with Err set and closes; the caller should
// take a fresh snapshot and subscribe again.
func (c *Client) Subscribe(ctx context.Context) (<-chan Event, error) {
	if c.h == nil {
		return nil, errClosed
	}
	ctx, cancel := context.WithCancel(ctx)
	var errs lastErrors
	links := make(chan netlink.LinkUpdate, updateBuffer)
	addrs := make(chan netlink.AddrUpdate, updateBuffer)
	routes := make(chan netlink.RouteUpdate, updateBuffer)

	// The library goroutines close their channel once ctx.Done closes their socket, but only
	// after any pending send went through: whatever was subscribed must be drained.
	// No ListExisting: the library sends that dump request to the multicast socket, which the
	// kernel allows only with CAP_NET_ADMIN. The name cache is filled from a dump below.
	if err := netlink.LinkSubscribeWithOptions(links, ctx.Done(), netlink.LinkSubscribeOptions{
		Namespace: c.ns, ErrorCallback: errs.recorder(EventLink), ReceiveBufferSize: receiveBuffer,
	}); err != nil {
		cancel()
		return nil, fmt.Errorf("subscribe to link changes: %w", err)
	}
	if err := netlink.AddrSubscribeWithOptions(addrs, ctx.Done(), netlink.AddrSubscribeOptions{
		Namespace: c.ns, ErrorCallback: errs.recorder(EventAddr), ReceiveBufferSize: receiveBuffer,
	}); err != nil {
		cancel()
		go drain(links)
		return nil, fmt.Errorf("subscribe to address changes: %w", err)
	}
	if err := netlink.RouteSubscribeWithOptions(routes, ctx.Done(), netlink.RouteSubscribeOptions{
		Namespace: c.ns, ErrorCallback: errs.recorder(EventRoute), ReceiveBufferSize: receiveBuffer,
	}); err != nil {
		cancel()
		go drain(links)
		go drain(addrs)
		return nil, fmt.Errorf("subscribe to route changes: %w", err)
	}

	// Names for address and route events, which carry only an ifindex. Dumped after subscribing,
	// so a link that appears in between is named by its own event.
	names := map[int]string{}
	existing, err := linkList(ctx, c.h)
	if err != nil {
		cancel()
		go drain(links)
		go drain(addrs)
		go drain(routes)
		return nil, err
	}
	for _, l := range existing {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	// nameOf names an ifindex. The three subscriptions are separate sockets, so a new link's
	// address or route event can arrive before its link event: then the kernel is asked.
	h := c.h
	nameOf := func(index int) string {
		if n, ok := names[index]; ok || index == 0 {
			return n
		}
		if l, err := h.LinkByIndex(index); err == nil {
			names[index] = l.Attrs().Name
			return l.Attrs().Name
		}
		return ""
	}

	out := make(chan Event, updateBuffer)
	go func() {
		defer close(out)
		defer cancel()
		emit := func(ev Event) {
			if ctx.Err() != nil {
				return
			}
			select {
			case out <- ev:
			case <-ctx.Done():
			}
		}
		// ended reports the first subscription that ends before ctx does and stops the others.
		ended := func(kind EventKind) {
			if ctx.Err() != nil {
				return
			}
			err := errs.get(kind)
			if err == nil {
				err = errors.New("closed by the kernel side")
			}
			emit(Event{Kind: kind, Err: fmt.Errorf("%s subscription: %w", kind, err)})
			cancel()
		}
		for links != nil || addrs != nil || routes != nil {
			select {
			case u, ok := <-links:
				if !ok {
					links = nil
					ended(EventLink)
					continue
				}
				a := u.Attrs()
				if u.Header.Type == unix.RTM_DELLINK {
					delete(names, a.Index)
				} else {
					names[a.Index] = a.Name
				}
				emit(Event{Kind: EventLink, Name: a.Name})
			case u, ok := <-addrs:
				if !ok {
					addrs = nil
					ended(EventAddr)
					continue
				}
				emit(Event{Kind: EventAddr, Name: nameOf(u.LinkIndex)})
			case u, ok := <-routes:
				if !ok {
					routes = nil
					ended(EventRoute)
					continue
				}
				// Snapshot reports the main table only; other tables' changes (local routes
				// that come with every address) would only cause needless passes.
				if u.Table == unix.RT_TABLE_MAIN {
					emit(Event{Kind: EventRoute, Name: nameOf(u.LinkIndex)})
				}
			}
		}
	}()
	return out, nil
}

func drain[T any](ch <-chan T) {
	for range ch {
	}
}

// lastErrors keeps the last error each subscription's goroutine reported; the library reports
// the fatal one just before it closes the channel.
type lastErrors struct {
	mu   sync.Mutex
	errs map[EventKind]error
}

func (l *lastErrors) recorder(kind EventKind) func(error) {
	return func(err error) {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.errs == nil {
			l.errs = map[EventKind]error{}
		}
		l.errs[kind] = err
	}
}

func (l *lastErrors) get(kind EventKind) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.errs[kind]
}
