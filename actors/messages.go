package actors

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/rmqrouter/rmqrouter/security"
	"github.com/rmqrouter/rmqrouter/transport"
)

// reply is a one-shot result channel. The first of send, abandon and fail
// wins; later calls do nothing, so every request gets exactly one reply.
type reply[T any] struct {
	ch    chan T
	state atomic.Int32 // 0 open, 1 replied, 2 abandoned by the waiter
}

func newReply[T any]() *reply[T] { return &reply[T]{ch: make(chan T, 1)} }

// send delivers v and reports whether the waiter will see it.
func (r *reply[T]) send(v T) bool {
	if r.state.CompareAndSwap(0, 1) {
		r.ch <- v
		return true
	}
	return false
}

// abandon marks the reply as no longer awaited. It returns false when a
// result was already sent, which the waiter must then read.
func (r *reply[T]) abandon() bool { return r.state.CompareAndSwap(0, 2) }

// await returns r's result. When ctx ends before one was sent, it marks r
// abandoned and returns answered false, and a later result is dropped.
func await[T any](ctx context.Context, r *reply[T]) (v T, answered bool) {
	select {
	case v = <-r.ch:
		return v, true
	case <-ctx.Done():
		if r.abandon() {
			return v, false
		}
		return <-r.ch, true
	}
}

// failer is a request that anyone holding it can fail with an error, holding
// it, such as the dead-letter handler.
type failer interface {
	fail(err error)
}

// route names the connection actor a request goes to.
type route struct {
	key   string
	vhost string
	creds *security.Credentials
}

// routed is a request that the supervisor forwards by route.
type routed interface {
	failer
	routeOf() route
}

type publishCmd struct {
	route    route
	msg      *transport.Message
	deadline time.Time
	start    time.Time
	retried  bool
	// uncertain is set when the first attempt ended without knowing
	// whether the broker stored the message.
	uncertain bool
	probe     atomic.Bool
	result    *reply[error]
}

// prober is a request the supervisor can mark as the probe of a half-open
// breaker.
type prober interface{ markProbe() }

func (c *publishCmd) markProbe()    { c.probe.Store(true) }
func (c *publishCmd) isProbe() bool { return c.probe.Load() }

// fail sends the request its result. When an earlier attempt may have stored the
// message, a later infrastructure failure must not read as "not carried
// out", so it is reported as ErrOutcomeUnknown.
func (c *publishCmd) fail(err error) {
	if c.uncertain && err != nil && isInfraFailure(err) && !errors.Is(err, transport.ErrOutcomeUnknown) {
		err = &transport.Error{Op: "basic.publish", Kind: transport.ErrOutcomeUnknown, Reason: "the retry after a lost confirm failed too: " + err.Error(), Retryable: true}
	}
	c.result.send(err)
}
func (c *publishCmd) routeOf() route           { return c.route }
func (c *publishCmd) IgnoreDeadLetterLogging() {}
func (c *publishCmd) expired() bool            { return !c.deadline.IsZero() && time.Now().After(c.deadline) }

type fetchOutcome struct {
	results []FetchResult
	err     error
}

// fetchCmd requests from a session up to max messages (1 when zero). The
// implicit session of /v1/fetch gets it through the supervisor by route and
// queue; an explicit session gets it directly.
type fetchCmd struct {
	route   route
	queue   string
	max     int
	wait    time.Duration
	autoAck bool
	result  *reply[fetchOutcome]
}

func (c *fetchCmd) fail(err error)           { c.result.send(fetchOutcome{err: err}) }
func (c *fetchCmd) routeOf() route           { return c.route }
func (c *fetchCmd) IgnoreDeadLetterLogging() {}

type settleCmd struct {
	tag     uint64
	ack     bool
	requeue bool
	result  *reply[error]
}

func (c *settleCmd) fail(err error)           { c.result.send(err) }
func (c *settleCmd) IgnoreDeadLetterLogging() {}

// internal is embedded by messages that actors send to themselves or to
// each other; they do not count as activity for idle timeouts.
type internal struct{}

func (internal) NotInfluenceReceiveTimeout() {}
func (internal) IgnoreDeadLetterLogging()    {}

// retire requests that a parent forget and poison a child.
type retire struct {
	internal
	key string
	pid *actor.PID
}

type dialResult struct {
	internal
	conn *transport.Connection
	err  error
}

type connectionClosed struct {
	internal
	generation uint64
	err        error
}

type connectionBlocked struct {
	internal
	generation uint64
	blocked    bool
	reason     string
}

type redial struct{ internal }

// connectionReady notifies children that a connection is open.
type connectionReady struct {
	internal
	conn       *transport.Connection
	generation uint64
}

// connectionLost notifies children that the connection closed.
type connectionLost struct{ internal }
