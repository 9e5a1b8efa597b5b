package actors

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// restartWindow is how far back failures of a child count as consecutive
// restart attempts.
const restartWindow = 5 * time.Minute

// restarter decides how a failed (panicked) child is restarted: after a
// full-jitter backoff delay, at most RetryMaxAttempts times within
// restartWindow, then it is stopped and the next request starts a fresh one.
// protoactor's ExponentialBackoffStrategy is not used because its delay has
// no cap and only nanoseconds of jitter.
//
// The request that was being processed when the child failed is answered
// with ErrActorGone, so its caller gets exactly one answer.
type restarter struct {
	sys *System
	log *slog.Logger
}

// handle applies the policy and returns the restart delay, or stopped when
// the child was stopped for good. It runs on the parent's goroutine.
func (r restarter) handle(supervisor actor.Supervisor, child *actor.PID, rs *actor.RestartStatistics, reason, message any, kind string) (delay time.Duration, stopped bool) {
	if f, ok := message.(failer); ok {
		f.fail(ErrActorGone)
	}
	rs.Fail()
	attempt := rs.NumberOfFailures(restartWindow)
	max := r.sys.cfg.RetryMaxAttempts
	if attempt > max {
		rs.Reset()
		r.log.Error("actor failed too often; stopping it", "kind", kind, "actor", child.Id, "attempts", max, "reason", fmt.Sprint(reason))
		supervisor.StopChildren(child)
		return 0, true
	}

	delay = backoff(r.sys.cfg.RetryBaseDelay, r.sys.cfg.RetryMaxDelay, attempt-1)
	r.log.Warn("actor failed; restarting it", "kind", kind, "actor", child.Id,
		"attempt", fmt.Sprintf("%d of %d", attempt, max), "delay", delay.String(), "reason", fmt.Sprint(reason))
	r.sys.metrics.ActorRestarts.WithLabelValues(kind).Inc()
	if delay <= 0 {
		supervisor.RestartChildren(child)
		return 0, false
	}
	// The child's mailbox stays suspended until the restart; sending the
	// restart later is safe from any goroutine.
	time.AfterFunc(delay, func() { supervisor.RestartChildren(child) })
	return delay, false
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
