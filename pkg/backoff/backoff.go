// Package backoff is capped exponential backoff for retrying failed connections and writes.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Backoff yields Min, 2·Min, 4·Min, … up to Max, each spread by up to ±25% so that the agents
// of a whole cluster do not retry against the API server in step after an outage. The zero
// value is not useful; set Min and Max.
type Backoff struct {
	Min, Max time.Duration
	cur      time.Duration
}

// Next returns the next delay.
func (b *Backoff) Next() time.Duration {
	if b.cur == 0 {
		b.cur = b.Min
	} else {
		b.cur = min(2*b.cur, b.Max)
	}
	return time.Duration(float64(b.cur) * (0.75 + rand.Float64()/2))
}

// Reset starts again from Min, after a success.
func (b *Backoff) Reset() { b.cur = 0 }
