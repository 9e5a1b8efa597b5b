package actors

import (
	"context"
	"sync/atomic"
	"time"
)

// bulkhead limits the requests of one connection actor before they reach
// its mailbox: at most maxConcurrent in flight and maxWaiting waiting for a
// slot; past that a request is rejected at once. It is safe for concurrent
// use.
type bulkhead struct {
	slots      chan struct{}
	maxWaiting int64
	waiting    atomic.Int64
	rejected   atomic.Uint64

	// openUntil mirrors the route's open breaker (Unix nanoseconds, 0 when
	// closed), so requests fail fast without a round trip to the
	// supervisor, which owns the breaker and writes this field.
	openUntil atomic.Int64
}

// circuitOpen returns an error while the route's breaker is open.
func (b *bulkhead) circuitOpen(now time.Time) error {
	until := b.openUntil.Load()
	if until == 0 || now.UnixNano() >= until {
		return nil
	}
	return &CircuitOpenError{RetryAfter: time.Duration(until - now.UnixNano())}
}

func newBulkhead(maxConcurrent, maxWaiting int) *bulkhead {
	return &bulkhead{slots: make(chan struct{}, maxConcurrent), maxWaiting: int64(maxWaiting)}
}

// acquire takes a slot, waiting while fewer than maxWaiting others wait.
// It returns ErrTooManyInFlight when the queue is full or when no slot frees
// before ctx ends; either way the request was not sent.
func (b *bulkhead) acquire(ctx context.Context) error {
	select {
	case b.slots <- struct{}{}:
		return nil
	default:
	}
	if b.waiting.Add(1) > b.maxWaiting {
		b.waiting.Add(-1)
		b.rejected.Add(1)
		return ErrTooManyInFlight
	}
	defer b.waiting.Add(-1)
	select {
	case b.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		b.rejected.Add(1)
		return ErrTooManyInFlight
	}
}

func (b *bulkhead) release() { <-b.slots }

// BulkheadSnapshot is a bulkhead's state for introspection.
type BulkheadSnapshot struct {
	InFlight int    `json:"in_flight"`
	Waiting  int    `json:"waiting"`
	Rejected uint64 `json:"rejected"`
}

func (b *bulkhead) snapshot() BulkheadSnapshot {
	return BulkheadSnapshot{InFlight: len(b.slots), Waiting: int(b.waiting.Load()), Rejected: b.rejected.Load()}
}
