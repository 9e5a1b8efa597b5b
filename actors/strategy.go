package actors

import (
	"math/rand/v2"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// connectionStrategy restarts a failed connection actor (a panic in
// Receive) at most 10 times in 10 s, then stops it; the next request for its
// key starts a new one. The actor closes its connection in Restarting, so
// the new instance starts without one.
func connectionStrategy(s *System) actor.SupervisorStrategy {
	return actor.NewOneForOneStrategy(10, 10*time.Second, func(reason any) actor.Directive {
		s.log.Error("actor failed; restarting it", "reason", reason)
		s.metrics.ActorRestarts.WithLabelValues("connection").Inc()
		return actor.RestartDirective
	})
}

// childStrategy restarts a failed publisher or session actor the same way;
// kind labels its restarts.
func childStrategy(s *System, kind string) actor.SupervisorStrategy {
	return actor.NewOneForOneStrategy(10, 10*time.Second, func(reason any) actor.Directive {
		s.log.Error("actor failed; restarting it", "kind", kind, "reason", reason)
		s.metrics.ActorRestarts.WithLabelValues(kind).Inc()
		return actor.RestartDirective
	})
}

// backoff returns the full-jitter delay before retry number attempt
// (counting from 0): a uniform random duration in [0, min(max, base·2^attempt)).
func backoff(base, max time.Duration, attempt int) time.Duration {
	ceiling := max
	if attempt < 62 {
		if d := base << attempt; d > 0 && d < max {
			ceiling = d
		}
	}
	if ceiling <= 0 {
		return 0
	}
	return rand.N(ceiling)
}
