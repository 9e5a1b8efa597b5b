package actors

import (
	"sort"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// supervisorActor creates one connection actor per route key on first use,
// forwards requests to it, and forgets it when it retires or stops. It owns
// the circuit breaker of every route and is the supervision strategy of the
// connection actors (restart with jittered backoff).
type supervisorActor struct {
	sys     *System
	entries map[string]*connEntry
	keys    map[string]string // PID id → route key
}

// connEntry is what the supervisor keeps per route. The entry, and so its
// breaker, outlives a connection actor that retires while the breaker is
// not closed, so a new actor cannot bypass an open breaker.
type connEntry struct {
	pid          *actor.PID
	user, vhost  string
	breaker      *breaker
	restarts     int
	restartUntil time.Time
}

// infraEvent reports an infrastructure failure or a sign of health of a
// route to the supervisor's breaker.
type infraEvent struct {
	internal
	key    string
	failed bool
	cause  string
}

// snapshotRequest requests the state of the tree from the supervisor.
type snapshotRequest struct{ internal }

func newSupervisorActor(s *System) *supervisorActor {
	return &supervisorActor{sys: s, entries: make(map[string]*connEntry), keys: make(map[string]string)}
}

func (a *supervisorActor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case routed:
		a.forward(ctx, msg)
	case *infraEvent:
		a.onInfraEvent(msg)
	case *retire:
		if e, ok := a.entries[msg.key]; ok && e.pid != nil && e.pid.Equal(msg.pid) {
			a.forget(msg.pid)
			ctx.Poison(msg.pid)
		}
	case *actor.Terminated:
		a.forget(msg.Who)
	case *snapshotRequest:
		ctx.Respond(a.snapshot())
	case *actor.Stopping:
		a.sys.log.Info("stopping connection actors", "connections", len(a.keys))
	}
}

// HandleFailure makes the supervisor the strategy of its children.
func (a *supervisorActor) HandleFailure(_ *actor.ActorSystem, supervisor actor.Supervisor, child *actor.PID, rs *actor.RestartStatistics, reason, message any) {
	delay, stopped := restarter{sys: a.sys, log: a.sys.log}.handle(supervisor, child, rs, reason, message, "connection")
	key, ok := a.keys[child.Id]
	if !ok {
		return
	}
	e := a.entries[key]
	e.restarts++
	if !stopped {
		e.restartUntil = time.Now().Add(delay)
	}
}

func (a *supervisorActor) forward(ctx actor.Context, msg routed) {
	r := msg.routeOf()
	now := time.Now()
	e, ok := a.entries[r.key]
	if !ok {
		e = &connEntry{user: r.creds.User, vhost: r.vhost, breaker: newBreaker(a.sys.cfg.Breaker)}
	}

	allowed, probe, retryAfter := e.breaker.allow(now)
	if !allowed {
		msg.fail(&CircuitOpenError{RetryAfter: retryAfter})
		return
	}
	if probe {
		if p, ok := msg.(prober); ok {
			p.markProbe()
		}
	}
	if now.Before(e.restartUntil) {
		msg.fail(ErrActorGone)
		return
	}

	if e.pid == nil {
		if len(a.keys) >= a.sys.cfg.MaxConnections {
			msg.fail(ErrCapacityExhausted)
			return
		}
		props := actor.PropsFromProducer(func() actor.Actor {
			return newConnectionActor(a.sys, r)
		})
		e.pid = ctx.Spawn(props)
		a.entries[r.key] = e
		a.keys[e.pid.Id] = r.key
	}
	ctx.Send(e.pid, msg)
}

func (a *supervisorActor) onInfraEvent(msg *infraEvent) {
	e, ok := a.entries[msg.key]
	if !ok {
		return
	}
	if !msg.failed {
		if e.breaker.success() {
			a.sys.bulkheadOf(msg.key).openUntil.Store(0)
			a.sys.log.Info("circuit breaker closed", "user", e.user, "vhost", e.vhost)
			a.sys.metrics.BreakerTransitions.WithLabelValues("closed").Inc()
			a.sys.metrics.BreakersOpen.Dec()
		}
		return
	}
	wasClosed := e.breaker.state == BreakerClosed
	if e.breaker.failure(time.Now()) {
		if wasClosed {
			a.sys.metrics.BreakersOpen.Inc()
		}
		until := e.breaker.openedAt.Add(a.sys.cfg.Breaker.RecoveryTimeout)
		a.sys.bulkheadOf(msg.key).openUntil.Store(until.UnixNano())
		a.sys.log.Warn("circuit breaker opened", "user", e.user, "vhost", e.vhost,
			"cause", msg.cause, "recovery_timeout", a.sys.cfg.Breaker.RecoveryTimeout.String())
		a.sys.metrics.BreakerTransitions.WithLabelValues("open").Inc()
	}
}

// forget drops the PID of a stopped or retired connection actor. The entry
// stays while its breaker is not closed.
func (a *supervisorActor) forget(pid *actor.PID) {
	key, ok := a.keys[pid.Id]
	if !ok {
		return
	}
	delete(a.keys, pid.Id)
	e := a.entries[key]
	if e.pid != nil && e.pid.Equal(pid) {
		e.pid = nil
	}
	if e.breaker.state == BreakerClosed {
		delete(a.entries, key)
		a.sys.dropBulkhead(key)
	}
}

// ConnectionSnapshot is one route's supervision state.
type ConnectionSnapshot struct {
	pid      *actor.PID
	User     string           `json:"user"`
	Vhost    string           `json:"vhost"`
	Running  bool             `json:"running"`
	Restarts int              `json:"restarts"`
	Breaker  BreakerSnapshot  `json:"breaker"`
	Bulkhead BulkheadSnapshot `json:"bulkhead"`
}

// Snapshot is the state of the supervision tree.
type Snapshot struct {
	Connections    []ConnectionSnapshot `json:"connections"`
	MaxConnections int                  `json:"max_connections"`
	TakenAt        time.Time            `json:"taken_at"`
}

func (a *supervisorActor) snapshot() *Snapshot {
	now := time.Now()
	s := &Snapshot{MaxConnections: a.sys.cfg.MaxConnections, TakenAt: now.UTC(), Connections: []ConnectionSnapshot{}}
	for key, e := range a.entries {
		var slots BulkheadSnapshot
		if b, ok := a.sys.bulkheads.Load(key); ok {
			slots = b.(*bulkhead).snapshot()
		}
		s.Connections = append(s.Connections, ConnectionSnapshot{
			pid:      e.pid,
			User:     e.user,
			Vhost:    e.vhost,
			Running:  e.pid != nil,
			Restarts: e.restarts,
			Breaker:  e.breaker.snapshot(now),
			Bulkhead: slots,
		})
	}
	sort.Slice(s.Connections, func(i, j int) bool {
		ci, cj := s.Connections[i], s.Connections[j]
		if ci.User != cj.User {
			return ci.User < cj.User
		}
		return ci.Vhost < cj.Vhost
	})
	return s
}
