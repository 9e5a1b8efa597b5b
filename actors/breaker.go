package actors

import (
	"errors"
	"fmt"
	"time"
)

// ErrCircuitOpen means the connection's circuit breaker is open: recent
// infrastructure failures make the broker look unreachable for this route.
var ErrCircuitOpen = errors.New("circuit breaker is open")

// CircuitOpenError is returned while a breaker is open; RetryAfter is the
// time until it lets a probe through.
type CircuitOpenError struct {
	RetryAfter time.Duration
}

func (e *CircuitOpenError) Error() string {
	return fmt.Sprintf("%v; retry after %v", ErrCircuitOpen, e.RetryAfter.Round(time.Millisecond))
}

func (e *CircuitOpenError) Unwrap() error { return ErrCircuitOpen }

// BreakerConfig sets a circuit breaker. Zero values take the defaults of
// withDefaults.
type BreakerConfig struct {
	// FailureThreshold failures within Window open the breaker.
	FailureThreshold int
	Window           time.Duration
	// RecoveryTimeout is how long the breaker stays open before it lets
	// HalfOpenRequests probe requests through.
	RecoveryTimeout  time.Duration
	HalfOpenRequests int
}

// BreakerState is closed (requests pass), open (requests fail at once) or
// half-open (a few probes pass; their outcome closes or reopens it).
type BreakerState int

const (
	BreakerClosed BreakerState = iota
	BreakerOpen
	BreakerHalfOpen
)

func (s BreakerState) String() string {
	switch s {
	case BreakerOpen:
		return "open"
	case BreakerHalfOpen:
		return "half_open"
	}
	return "closed"
}

// MarshalText writes the state as its name in JSON.
func (s BreakerState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads a state name written by MarshalText.
func (s *BreakerState) UnmarshalText(text []byte) error {
	switch string(text) {
	case "closed":
		*s = BreakerClosed
	case "open":
		*s = BreakerOpen
	case "half_open":
		*s = BreakerHalfOpen
	default:
		return fmt.Errorf("unknown breaker state %q", text)
	}
	return nil
}

// breaker counts infrastructure failures of one route. Client errors
// (401, 403, 404, unroutable) never reach it. It is owned by the supervisor
// actor and is not safe for concurrent use.
type breaker struct {
	cfg      BreakerConfig
	state    BreakerState
	failures []time.Time
	openedAt time.Time
	probes   int
	opened   int
}

func newBreaker(cfg BreakerConfig) *breaker { return &breaker{cfg: cfg} }

// allow reports whether a request may pass now, and whether it is a probe
// of a half-open breaker. When it may not, retryAfter is the time until the
// next probe.
func (b *breaker) allow(now time.Time) (ok, probe bool, retryAfter time.Duration) {
	switch b.state {
	case BreakerOpen:
		until := b.openedAt.Add(b.cfg.RecoveryTimeout)
		if now.Before(until) {
			return false, false, until.Sub(now)
		}
		b.state = BreakerHalfOpen
		b.probes = 0
		fallthrough
	case BreakerHalfOpen:
		if b.probes >= b.cfg.HalfOpenRequests {
			return false, false, time.Second
		}
		b.probes++
		return true, true, 0
	}
	return true, false, 0
}

// failure records an infrastructure failure and reports whether the
// breaker opened because of it.
func (b *breaker) failure(now time.Time) bool {
	if b.state == BreakerHalfOpen {
		b.open(now)
		return true
	}
	if b.state == BreakerOpen {
		return false
	}
	cutoff := now.Add(-b.cfg.Window)
	kept := b.failures[:0]
	for _, t := range b.failures {
		if t.After(cutoff) {
			kept = append(kept, t)
		}
	}
	b.failures = append(kept, now)
	if len(b.failures) >= b.cfg.FailureThreshold {
		b.open(now)
		return true
	}
	return false
}

func (b *breaker) open(now time.Time) {
	b.state = BreakerOpen
	b.openedAt = now
	b.failures = b.failures[:0]
	b.probes = 0
	b.opened++
}

// success closes a half-open or open breaker because the broker responded.
func (b *breaker) success() bool {
	if b.state == BreakerClosed {
		return false
	}
	b.state = BreakerClosed
	b.failures = b.failures[:0]
	b.probes = 0
	return true
}

// BreakerSnapshot is a breaker's state for introspection.
type BreakerSnapshot struct {
	State            BreakerState `json:"state"`
	FailuresInWindow int          `json:"failures_in_window"`
	OpenedAt         *time.Time   `json:"opened_at,omitempty"`
	TimesOpened      int          `json:"times_opened"`
}

func (b *breaker) snapshot(now time.Time) BreakerSnapshot {
	s := BreakerSnapshot{State: b.state, TimesOpened: b.opened}
	cutoff := now.Add(-b.cfg.Window)
	for _, t := range b.failures {
		if t.After(cutoff) {
			s.FailuresInWindow++
		}
	}
	if b.state != BreakerClosed {
		at := b.openedAt
		s.OpenedAt = &at
	}
	return s
}
