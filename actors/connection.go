package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/rmqrouter/rmqrouter/transport"
)

type connState int

const (
	disconnected connState = iota
	connecting
	connected
)

// panicRequest makes a connection actor panic while it processes a
// request. Only tests send it, to check that supervision replies to the
// request once and restarts the actor.
type panicRequest struct {
	publishCmd
	reason string
}

// maxWaiting bounds the requests a connection actor holds while it dials.
const maxWaiting = 10000

// connectionActor owns one AMQP connection for one route (vhost, user,
// password key), its publisher child and its consumer-session children.
type connectionActor struct {
	sys   *System
	route route
	log   *slog.Logger

	state      connState
	conn       *transport.Connection
	generation uint64
	blocked    bool
	attempt    int // consecutive failed dials
	endpoint   int // index into cfg.Endpoints of the next dial
	reconnect  bool
	retiring   bool // a retire was sent to the supervisor
	waiting    []routed

	lastRequest time.Time
	idleTimer   *time.Timer

	publisher *actor.PID
	// stopping is set when the actor stops for good (not when it
	// restarts); its publisher then replies with an error instead of sending
	// again.
	stopping *atomic.Bool
	// sessions holds the consumer sessions by key: an implicit session by
	// its queue name, an explicit one by explicitSessionKey(id).
	sessions map[string]*actor.PID
	queues   map[string]string // session PID id → session key
}

func newConnectionActor(s *System, r route) *connectionActor {
	return &connectionActor{
		sys:      s,
		route:    r,
		log:      s.log.With("user", r.creds.User, "vhost", r.vhost),
		sessions: make(map[string]*actor.PID),
		queues:   make(map[string]string),
		stopping: new(atomic.Bool),
	}
}

func (a *connectionActor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		a.lastRequest = time.Now()
		a.armIdle(ctx, a.sys.cfg.ConnectionIdleTimeout)
	case *publishCmd:
		a.handle(ctx, msg)
	case *publishBatchCmd:
		a.handle(ctx, msg)
	case *fetchCmd:
		a.handle(ctx, msg)
	case *panicRequest:
		panic("injected panic: " + msg.reason)
	case *openSessionCmd:
		a.handle(ctx, msg)
	case *connectionWanted:
		a.onConnectionWanted(ctx, msg)
	case *dialResult:
		a.onDialResult(ctx, msg)
	case *connectionClosed:
		a.onClosed(ctx, msg)
	case *connectionBlocked:
		if msg.generation == a.generation {
			a.blocked = msg.blocked
			a.log.Warn("broker blocked state changed", "blocked", msg.blocked, "reason", msg.reason)
			if a.publisher != nil {
				ctx.Send(a.publisher, msg)
			}
		}
	case *redial:
		if a.state == disconnected && a.reconnect {
			a.dial(ctx)
		}
	case *retire:
		if pid, ok := a.sessions[msg.key]; ok && pid.Equal(msg.pid) {
			a.forgetSession(msg.pid)
			ctx.Poison(msg.pid)
		}
	case *actor.Terminated:
		a.forgetSession(msg.Who)
		if a.publisher != nil && a.publisher.Equal(msg.Who) {
			a.publisher = nil
		}
	case *connectionIdleCheck:
		a.onIdleCheck(ctx)
	case *actor.Restarting:
		a.stopIdle()
		a.release(ErrActorGone)
	case *actor.Stopping:
		a.stopIdle()
		a.stopping.Store(true)
		if !a.sys.stopping.Load() {
			// Retired, not shut down: held requests get a new actor.
			for _, msg := range a.waiting {
				ctx.Send(ctx.Parent(), msg)
			}
			a.waiting = nil
		}
		a.release(ErrShuttingDown)
	}
}

// HandleFailure makes the connection actor the strategy of its publisher
// and session children: restart with jittered backoff.
func (a *connectionActor) HandleFailure(_ *actor.ActorSystem, supervisor actor.Supervisor, child *actor.PID, rs *actor.RestartStatistics, reason, message any) {
	kind := "publisher"
	if _, ok := a.queues[child.Id]; ok {
		kind = "session"
	}
	restarter{sys: a.sys, log: a.log}.handle(supervisor, child, rs, reason, message, kind)
}

// connectionIdleCheck triggers the connection actor's idle check.
type connectionIdleCheck struct{ internal }

// armIdle schedules the next idle check after d. Like the sessions, the
// connection actor keeps its own timer instead of protoactor's
// ReceiveTimeout, whose timer goroutine writes the actor context without
// synchronisation.
func (a *connectionActor) armIdle(ctx actor.Context, d time.Duration) {
	self, root := ctx.Self(), a.sys.root
	a.idleTimer = time.AfterFunc(d, func() { root.Send(self, &connectionIdleCheck{}) })
}

func (a *connectionActor) stopIdle() {
	if a.idleTimer != nil {
		a.idleTimer.Stop()
	}
}

// onIdleCheck retires the actor when no request arrived for the idle
// timeout and nothing depends on it; otherwise it checks again later.
func (a *connectionActor) onIdleCheck(ctx actor.Context) {
	timeout := a.sys.cfg.ConnectionIdleTimeout
	idle := time.Since(a.lastRequest)
	busy := len(a.sessions) > 0 || len(a.waiting) > 0 || a.sys.bulkheadOf(a.route.key).snapshot().InFlight > 0
	if idle >= timeout && !busy {
		a.log.Info("closing idle connection", "idle", idle.Round(time.Second).String())
		a.retire(ctx)
		return
	}
	next := timeout - idle
	if next < time.Second {
		next = time.Second
	}
	a.armIdle(ctx, next)
}

// handle serves a request now when connected, or holds it and dials.
func (a *connectionActor) handle(ctx actor.Context, msg routed) {
	if a.retiring {
		ctx.Send(ctx.Parent(), msg)
		return
	}
	a.lastRequest = time.Now()
	switch {
	case a.state == connected && !a.conn.IsClosed():
		a.dispatch(ctx, msg)
	default:
		// Also while the connection has closed but its connectionClosed
		// message is still on the way: onClosed dials for held requests.
		if len(a.waiting) >= maxWaiting {
			msg.fail(ErrTooManyInFlight)
			return
		}
		a.waiting = append(a.waiting, msg)
		if a.state == disconnected {
			a.dial(ctx)
		}
	}
}

func (a *connectionActor) dispatch(ctx actor.Context, msg routed) {
	switch m := msg.(type) {
	case *publishCmd:
		if a.blocked {
			m.fail(&transport.Error{Op: "basic.publish", Kind: transport.ErrBlocked, Retryable: true})
			return
		}
		ctx.Send(a.publisher, m)
	case *publishBatchCmd:
		if a.blocked {
			m.fail(&transport.Error{Op: "basic.publish", Kind: transport.ErrBlocked, Retryable: true})
			return
		}
		ctx.Send(a.publisher, m)
	case *fetchCmd:
		ctx.Send(a.session(ctx, m.queue), m)
	case *openSessionCmd:
		a.openSession(ctx, m)
	}
}

// session returns the implicit consumer session of queue, creating it.
func (a *connectionActor) session(ctx actor.Context, queue string) *actor.PID {
	if pid, ok := a.sessions[queue]; ok {
		return pid
	}
	conn, cfg := a.conn, implicitSession(a.sys.cfg, queue)
	props := actor.PropsFromProducer(func() actor.Actor {
		return newSessionActor(a.sys, a.route, cfg, conn)
	})
	pid := ctx.Spawn(props)
	a.sessions[queue] = pid
	a.queues[pid.Id] = queue
	a.sys.metrics.SessionsOpen.Inc()
	return pid
}

func (a *connectionActor) forgetSession(pid *actor.PID) {
	queue, ok := a.queues[pid.Id]
	if !ok {
		return
	}
	delete(a.queues, pid.Id)
	if cur, ok := a.sessions[queue]; ok && cur.Equal(pid) {
		delete(a.sessions, queue)
		a.sys.metrics.SessionsOpen.Dec()
	}
}

// dial opens the connection in a tracked goroutine; the result comes back
// as a dialResult message.
func (a *connectionActor) dial(ctx actor.Context) {
	a.state = connecting
	self, root, cfg, creds := ctx.Self(), a.sys.root, a.sys.cfg, a.route.creds
	endpoint := cfg.Endpoints[a.endpoint%len(cfg.Endpoints)]
	vhost := a.route.vhost
	a.sys.goTask(func() {
		var conn *transport.Connection
		err := creds.WithPassword(func(password []byte) error {
			c, err := transport.Dial(context.Background(), transport.DialConfig{
				Endpoint:       endpoint,
				Vhost:          vhost,
				User:           creds.User,
				Password:       password,
				Heartbeat:      cfg.Heartbeat,
				DialTimeout:    cfg.DialTimeout,
				ConnectionName: "rmqrouter " + creds.User,
			})
			conn = c
			return err
		})
		root.Send(self, &dialResult{conn: conn, err: err})
	})
}

func (a *connectionActor) onDialResult(ctx actor.Context, msg *dialResult) {
	if msg.err != nil {
		a.state = disconnected
		a.failWaiting(msg.err)
		if errors.Is(msg.err, transport.ErrAuthenticationFailed) || errors.Is(msg.err, transport.ErrAccessRefused) {
			a.log.Info("broker refused the connection", "error", msg.err)
			a.retire(ctx)
			return
		}
		// Fail over: the next dial goes to the next endpoint.
		a.endpoint++
		a.attempt++
		ctx.Send(ctx.Parent(), &infraEvent{key: a.route.key, failed: true, cause: "dial failed: " + msg.err.Error()})
		a.scheduleRedial(ctx, msg.err)
		return
	}

	a.state = connected
	a.conn = msg.conn
	a.generation++
	if a.attempt > 0 {
		a.log.Info("reconnected", "attempts", a.attempt)
	}
	a.attempt = 0
	a.reconnect = false
	a.blocked = false
	ctx.Send(ctx.Parent(), &infraEvent{key: a.route.key})
	a.sys.metrics.ActiveConnections.Inc()
	a.log.Info("connection open", "generation", a.generation)

	self, root, generation := ctx.Self(), a.sys.root, a.generation
	transport.WatchConnection(msg.conn,
		func(blocked bool, reason string) {
			root.Send(self, &connectionBlocked{generation: generation, blocked: blocked, reason: reason})
		},
		func(err error) {
			root.Send(self, &connectionClosed{generation: generation, err: err})
		})

	conn, stopping := msg.conn, a.stopping
	a.publisher = ctx.Spawn(actor.PropsFromProducer(func() actor.Actor {
		return newPublisherActor(a.sys, conn, stopping)
	}))
	ready := &connectionReady{conn: conn, generation: generation}
	for _, pid := range a.sessions {
		ctx.Send(pid, ready)
	}

	waiting := a.waiting
	a.waiting = nil
	for _, msg := range waiting {
		a.dispatch(ctx, msg)
	}
}

// scheduleRedial dials again after a full-jitter backoff while the actor
// is reconnecting after a lost connection. Requests that arrive meanwhile
// dial at once, so a new request is never held for a backoff delay. After
// RetryMaxAttempts failed dials the actor retires; the next request starts
// a fresh one. The first attempt and every fifth are logged at warn level,
// the others at debug.
func (a *connectionActor) scheduleRedial(ctx actor.Context, cause error) {
	if !a.reconnect {
		return
	}
	max := a.sys.cfg.RetryMaxAttempts
	if a.attempt >= max {
		a.log.Warn("giving up reconnecting; the next request dials again", "attempts", a.attempt, "error", cause)
		a.failWaiting(cause)
		a.retire(ctx)
		return
	}
	delay := backoff(a.sys.cfg.RetryBaseDelay, a.sys.cfg.RetryMaxDelay, a.attempt)
	level := slog.LevelDebug
	if a.attempt <= 1 || a.attempt%5 == 0 {
		level = slog.LevelWarn
	}
	a.log.Log(context.Background(), level, "reconnecting",
		"attempt", fmt.Sprintf("%d of %d", a.attempt+1, max), "delay", delay.String(), "error", fmt.Sprint(cause))
	self, root := ctx.Self(), a.sys.root
	time.AfterFunc(delay, func() { root.Send(self, &redial{}) })
}

func (a *connectionActor) onClosed(ctx actor.Context, msg *connectionClosed) {
	if msg.generation != a.generation || a.state != connected {
		return
	}
	a.log.Warn("connection closed", "generation", msg.generation, "error", msg.err)
	a.sys.metrics.ActiveConnections.Dec()
	a.sys.metrics.ActorRestarts.WithLabelValues("connection").Inc()
	a.state = disconnected
	a.conn = nil
	a.blocked = false
	if a.publisher != nil {
		ctx.Poison(a.publisher)
		a.publisher = nil
	}
	for _, pid := range a.sessions {
		ctx.Send(pid, &connectionLost{})
	}
	// A connection lost while requests were in flight counts against the
	// breaker; an idle one closed by an operator does not.
	if a.sys.bulkheadOf(a.route.key).snapshot().InFlight > 0 || len(a.sessions) > 0 {
		ctx.Send(ctx.Parent(), &infraEvent{key: a.route.key, failed: true, cause: fmt.Sprint("connection lost: ", msg.err)})
	}
	a.reconnect = true
	if len(a.waiting) > 0 {
		a.dial(ctx)
		return
	}
	a.scheduleRedial(ctx, msg.err)
}

func (a *connectionActor) failWaiting(err error) {
	for _, msg := range a.waiting {
		msg.fail(err)
	}
	a.waiting = nil
}

// retire asks the supervisor to forget and stop this actor. Requests that
// still reach it go back to the supervisor, which handles the retire
// first (both come from this actor, in order) and starts a new actor.
func (a *connectionActor) retire(ctx actor.Context) {
	a.retiring = true
	ctx.Send(ctx.Parent(), &retire{key: a.route.key, pid: ctx.Self()})
}

// release replies to held requests and closes the connection in a tracked
// goroutine. Children are stopped by protoactor before the actor stops.
func (a *connectionActor) release(err error) {
	a.failWaiting(err)
	if a.conn != nil {
		conn := a.conn
		a.conn = nil
		a.sys.metrics.ActiveConnections.Dec()
		a.sys.goTask(func() { conn.Close(5 * time.Second) })
	}
	a.state = disconnected
}
