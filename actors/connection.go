package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	attempt    int
	waiting    []routed

	publisher *actor.PID
	sessions  map[string]*actor.PID // queue → implicit session
	queues    map[string]string     // session PID id → queue
}

func newConnectionActor(s *System, r route) *connectionActor {
	return &connectionActor{
		sys:      s,
		route:    r,
		log:      s.log.With("user", r.creds.User, "vhost", r.vhost),
		sessions: make(map[string]*actor.PID),
		queues:   make(map[string]string),
	}
}

func (a *connectionActor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		ctx.SetReceiveTimeout(a.sys.cfg.ConnectionIdleTimeout)
	case *publishCmd:
		a.handle(ctx, msg)
	case *fetchCmd:
		a.handle(ctx, msg)
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
		if a.state == disconnected && len(a.sessions) > 0 {
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
	case *actor.ReceiveTimeout:
		if len(a.sessions) == 0 && len(a.waiting) == 0 {
			a.log.Info("closing idle connection")
			ctx.Send(ctx.Parent(), &retire{key: a.route.key, pid: ctx.Self()})
		}
	case *actor.Restarting:
		a.release(ErrActorGone)
	case *actor.Stopping:
		a.release(ErrShuttingDown)
	}
}

// handle serves a request now when connected, or holds it and dials.
func (a *connectionActor) handle(ctx actor.Context, msg routed) {
	switch a.state {
	case connected:
		a.dispatch(ctx, msg)
	default:
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
	case *fetchCmd:
		ctx.Send(a.session(ctx, m.queue), m)
	}
}

// session returns the implicit consumer session of queue, creating it.
func (a *connectionActor) session(ctx actor.Context, queue string) *actor.PID {
	if pid, ok := a.sessions[queue]; ok {
		return pid
	}
	conn, generation := a.conn, a.generation
	props := actor.PropsFromProducer(func() actor.Actor {
		return newSessionActor(a.sys, a.route, queue, conn, generation)
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
	endpoint := cfg.Endpoints[a.attempt%len(cfg.Endpoints)]
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
			ctx.Send(ctx.Parent(), &retire{key: a.route.key, pid: ctx.Self()})
			return
		}
		a.log.Warn("dial failed", "attempt", a.attempt+1, "error", msg.err)
		a.scheduleRedial(ctx)
		return
	}

	a.state = connected
	a.conn = msg.conn
	a.generation++
	a.attempt = 0
	a.blocked = false
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

	conn := msg.conn
	a.publisher = ctx.Spawn(actor.PropsFromProducer(func() actor.Actor {
		return newPublisherActor(a.sys, conn)
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

// scheduleRedial dials again after a jittered backoff while sessions wait
// for the connection; without sessions the next request dials.
func (a *connectionActor) scheduleRedial(ctx actor.Context) {
	if len(a.sessions) == 0 {
		return
	}
	if a.attempt >= a.sys.cfg.RetryMaxAttempts {
		a.log.Warn("giving up reconnecting; the next request dials again", "attempts", a.attempt)
		a.attempt = 0
		return
	}
	delay := backoff(a.sys.cfg.RetryBaseDelay, a.sys.cfg.RetryMaxDelay, a.attempt)
	a.attempt++
	a.log.Info("reconnecting", "attempt", fmt.Sprintf("%d of %d", a.attempt, a.sys.cfg.RetryMaxAttempts), "delay", delay.String())
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
	a.scheduleRedial(ctx)
}

func (a *connectionActor) failWaiting(err error) {
	for _, msg := range a.waiting {
		msg.fail(err)
	}
	a.waiting = nil
}

// release answers held requests and closes the connection in a tracked
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
