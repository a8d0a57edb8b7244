// Package backoff is capped exponential backoff for retrying failed connections and writes.
package backoff

import "time"

// Backoff yields Min, 2·Min, 4·Min, … up to Max. The zero value is not useful; set Min and Max.
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
	return b.cur
}

// Reset starts again from Min, after a success.
func (b *Backoff) Reset() { b.cur = 0 }
