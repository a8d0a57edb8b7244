package check

import (
	"context"
	"sync"
)

// pass identifies one Runner.Run; PassCache keys on it. It has a field so that two passes
// never share an address.
type pass struct{ _ byte }

type passKey struct{}

// withPass returns ctx carrying a new pass.
func withPass(ctx context.Context) context.Context {
	return context.WithValue(ctx, passKey{}, &pass{})
}

// PassCache holds a value read at most once per pass, for checks that share a costly read (one
// D-Bus round trip per check adds up to milliseconds a pass). A read outside a pass, or one
// that fails, is not kept. The zero value is ready to use and safe for concurrent use.
type PassCache[T any] struct {
	mu   sync.Mutex
	pass *pass
	v    T
}

// Get returns the value read in this pass, reading it with read on first use.
func (c *PassCache[T]) Get(ctx context.Context, read func(context.Context) (T, error)) (T, error) {
	p, _ := ctx.Value(passKey{}).(*pass)
	c.mu.Lock()
	defer c.mu.Unlock()
	if p != nil && c.pass == p {
		return c.v, nil
	}
	v, err := read(ctx)
	if err != nil {
		var zero T
		return zero, err
	}
	c.pass, c.v = p, v
	return v, nil
}

// Forget drops the value, e.g. after an apply changed what it was read from.
func (c *PassCache[T]) Forget() {
	c.mu.Lock()
	defer c.mu.Unlock()
	var zero T
	c.pass, c.v = nil, zero
}
