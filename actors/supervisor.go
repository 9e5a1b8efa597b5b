package actors

import (
	"github.com/asynkron/protoactor-go/actor"
)

// supervisorActor creates one connection actor per route key on first use,
// forwards requests to it and forgets it when it retires or stops.
type supervisorActor struct {
	sys   *System
	conns map[string]*actor.PID
	keys  map[string]string // PID id → route key
}

func newSupervisorActor(s *System) *supervisorActor {
	return &supervisorActor{sys: s, conns: make(map[string]*actor.PID), keys: make(map[string]string)}
}

func (a *supervisorActor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case routed:
		a.forward(ctx, msg)
	case *retire:
		if pid, ok := a.conns[msg.key]; ok && pid.Equal(msg.pid) {
			a.forget(msg.pid)
			ctx.Poison(msg.pid)
		}
	case *actor.Terminated:
		a.forget(msg.Who)
	case *actor.Stopping:
		a.sys.log.Info("stopping connection actors", "connections", len(a.conns))
	}
}

func (a *supervisorActor) forward(ctx actor.Context, msg routed) {
	r := msg.routeOf()
	pid, ok := a.conns[r.key]
	if !ok {
		if len(a.conns) >= a.sys.cfg.MaxConnections {
			msg.fail(ErrCapacityExhausted)
			return
		}
		props := actor.PropsFromProducer(func() actor.Actor {
			return newConnectionActor(a.sys, r)
		}, actor.WithSupervisor(childStrategy(a.sys, "connection_child")))
		pid = ctx.Spawn(props)
		a.conns[r.key] = pid
		a.keys[pid.Id] = r.key
	}
	ctx.Send(pid, msg)
}

func (a *supervisorActor) forget(pid *actor.PID) {
	key, ok := a.keys[pid.Id]
	if !ok {
		return
	}
	delete(a.keys, pid.Id)
	if cur, ok := a.conns[key]; ok && cur.Equal(pid) {
		delete(a.conns, key)
	}
}
