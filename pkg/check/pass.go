package check

import (
	"context"
	"sync"
	"time"
)

// pass identifies one Runner.Run; PassCache keys on it. It has a field so that two passes
// never share an address.
type pass struct{ _ byte }

type passKey struct{}

// StartPass returns ctx carrying a pass: the one it carries already, or a new one. Runner.Run
// starts one; a caller that reads through PassCaches before or after the run (the node report
// after the pass it describes) starts the pass itself and hands the same ctx to all of them.
func StartPass(ctx context.Context) context.Context {
	if _, ok := ctx.Value(passKey{}).(*pass); ok {
		return ctx
	}
	return context.WithValue(ctx, passKey{}, &pass{})
}

// PassCache holds a value read at most once per pass, for checks that share a costly read (one
// D-Bus round trip per check adds up to milliseconds a pass). A read outside a pass, or one
// that fails, is not kept. The zero value is ready to use and safe for concurrent use.
//
// With Version set, a value also serves later passes: as long as Version returns the non-zero
// number it returned before the read, for at most MaxAge. Version is how a system says it has
// not changed, e.g. a count of its change signals (0: nobody is listening, assume anything).
type PassCache[T any] struct {
	Version func() uint64
	MaxAge  time.Duration

	mu      sync.Mutex
	pass    *pass
	version uint64
	at      time.Time
	v       T
}

// Get returns the value read in this pass (or still valid from an earlier one), reading it
// with read when there is none.
func (c *PassCache[T]) Get(ctx context.Context, read func(context.Context) (T, error)) (T, error) {
	p, _ := ctx.Value(passKey{}).(*pass)
	c.mu.Lock()
	defer c.mu.Unlock()
	if p != nil && c.pass == p {
		return c.v, nil
	}
	var version uint64
	if c.Version != nil {
		version = c.Version()
	}
	if p != nil && c.pass != nil && version != 0 && version == c.version && time.Since(c.at) < c.MaxAge {
		c.pass = p
		return c.v, nil
	}
	v, err := read(ctx)
	if err != nil {
		var zero T
		return zero, err
	}
	c.pass, c.version, c.at, c.v = p, version, time.Now(), v
	return v, nil
}

// Forget drops the value, e.g. after an apply changed what it was read from.
func (c *PassCache[T]) Forget() {
	c.mu.Lock()
	defer c.mu.Unlock()
	var zero T
	c.pass, c.version, c.v = nil, 0, zero
}
