package check

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Passes counts the passes over a set of checks. Whoever runs the checks starts each pass;
// whoever builds them hands the same Passes to every PassCache, so reads through those caches
// are shared by the checks of one pass and by anything the owner reads around it (the node
// report after the pass it describes). The zero value is ready to use; nil means no passes, and
// then a PassCache keeps nothing.
type Passes struct{ n atomic.Uint64 }

// Start begins a new pass: every PassCache of p reads again (or asks its Version).
func (p *Passes) Start() { p.n.Add(1) }

// current is the number of the pass under way; 0 before the first.
func (p *Passes) current() uint64 {
	if p == nil {
		return 0
	}
	return p.n.Load()
}

// PassCache holds a value read at most once per pass, for checks that share a costly read (one
// D-Bus round trip per check adds up to milliseconds a pass). A read outside a pass (Passes nil
// or not started), or one that fails, is not kept. It is safe for concurrent use.
//
// With Version set, a value also serves later passes: as long as Version returns the non-zero
// number it returned before the read, for at most MaxAge. Version is how a system says it has
// not changed, e.g. a count of its change signals (0: nobody is listening, assume anything).
type PassCache[T any] struct {
	Passes  *Passes
	Version func() uint64
	MaxAge  time.Duration

	mu      sync.Mutex
	pass    uint64 // the pass v was read in or last served; 0: none
	version uint64
	at      time.Time
	v       T
}

// Get returns the value read in this pass (or still valid from an earlier one), reading it
// with read when there is none.
func (c *PassCache[T]) Get(ctx context.Context, read func(context.Context) (T, error)) (T, error) {
	p := c.Passes.current()
	c.mu.Lock()
	defer c.mu.Unlock()
	if p != 0 && c.pass == p {
		return c.v, nil
	}
	var version uint64
	if c.Version != nil {
		version = c.Version()
	}
	if p != 0 && c.pass != 0 && version != 0 && version == c.version && time.Since(c.at) < c.MaxAge {
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
	c.pass, c.version, c.v = 0, 0, zero
}
