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

// MaxBatch is the most messages one batch publish may carry.
const MaxBatch = 1000

// publishBatchCmd publishes several messages on one channel, back to back,
// and replies once every confirm (or error) is in. results[i] is nil when
// message i was confirmed.
type publishBatchCmd struct {
	route    route
	msgs     []*transport.Message
	deadline time.Time
	start    time.Time
	results  []error
	pending  atomic.Int64
	probe    atomic.Bool
	result   *reply[[]error]
}

func (c *publishBatchCmd) markProbe() { c.probe.Store(true) }

// fail replies with err for every message of the batch.
func (c *publishBatchCmd) fail(err error) {
	out := make([]error, len(c.msgs))
	for i := range out {
		out[i] = err
	}
	c.result.send(out)
}
func (c *publishBatchCmd) routeOf() route           { return c.route }
func (c *publishBatchCmd) IgnoreDeadLetterLogging() {}

// done records the outcome of message i. The last one sends the reply.
func (c *publishBatchCmd) done(i int, err error) {
	c.results[i] = err
	if c.pending.Add(-1) == 0 {
		c.result.send(c.results)
	}
}

type batchChecked struct {
	internal
	cmd  *publishBatchCmd
	errs map[string]error // exchange → check error
}

// PublishBatch publishes msgs in order on one channel of the connection of
// (vhost, creds) and waits for all their confirms. It returns one error per
// message, nil for a confirmed one. The batch takes one bulkhead slot.
func (s *System) PublishBatch(ctx context.Context, creds *security.Credentials, vhost string, msgs []*transport.Message) []error {
	fill := func(err error) []error {
		out := make([]error, len(msgs))
		for i := range out {
			out[i] = err
		}
		return out
	}
	if len(msgs) == 0 {
		return nil
	}
	if s.stopping.Load() {
		return fill(ErrShuttingDown)
	}
	s.inFlight.Add(1)
	defer s.inFlight.Done()

	r := s.route(creds, vhost)
	bh := s.bulkheadOf(r.key)
	if err := bh.circuitOpen(time.Now()); err != nil {
		return fill(err)
	}
	if err := bh.acquire(ctx); err != nil {
		s.metrics.BulkheadRejections.Inc()
		return fill(err)
	}
	defer bh.release()

	cmd := &publishBatchCmd{
		route:   r,
		msgs:    msgs,
		start:   time.Now(),
		results: make([]error, len(msgs)),
		result:  newReply[[]error](),
	}
	cmd.pending.Store(int64(len(msgs)))
	if dl, ok := ctx.Deadline(); ok {
		cmd.deadline = dl
	}
	s.root.Send(s.supervisor, cmd)
	out, answered := await(ctx, cmd.result)
	if !answered {
		out = fill(ErrConfirmTimeout)
	}
	s.report(r.key, batchOutcome(out), cmd.probe.Load())
	return out
}

// batchOutcome returns what a batch reports to the breaker: an infrastructure error
// when no message got past one, else nil.
func batchOutcome(errs []error) error {
	var infra error
	for _, err := range errs {
		if err == nil || !isInfraFailure(err) {
			return nil
		}
		infra = err
	}
	return infra
}

// publishBatch checks the batch's unknown exchanges in a goroutine, then
// dispatches it.
func (a *publisherActor) publishBatch(ctx actor.Context, cmd *publishBatchCmd) {
	if a.blocked {
		cmd.fail(&transport.Error{Op: "basic.publish", Kind: transport.ErrBlocked, Retryable: true})
		return
	}
	var unknown []string
	seen := map[string]bool{}
	for _, m := range cmd.msgs {
		if !seen[m.Exchange] && !a.topo.ExchangeKnown(m.Exchange) {
			unknown = append(unknown, m.Exchange)
		}
		seen[m.Exchange] = true
	}
	if len(unknown) == 0 {
		a.dispatchBatch(ctx, cmd, nil)
		return
	}
	self, root, topo := ctx.Self(), a.sys.root, a.topo
	a.sys.goTask(func() {
		errs := make(map[string]error)
		for _, ex := range unknown {
			if err := topo.CheckExchange(ex); err != nil {
				errs[ex] = err
			}
		}
		root.Send(self, &batchChecked{cmd: cmd, errs: errs})
	})
}

// dispatchBatch fails the messages whose exchange check failed and puts
// the others on the open channel with the fewest in flight, all together.
func (a *publisherActor) dispatchBatch(ctx actor.Context, cmd *publishBatchCmd, errs map[string]error) {
	var ps []*transport.Publish
	var index []int
	for i, m := range cmd.msgs {
		if err := errs[m.Exchange]; err != nil {
			cmd.done(i, err)
			continue
		}
		i := i
		ps = append(ps, &transport.Publish{
			Msg:      m,
			Deadline: cmd.deadline,
			Done: func(err error) {
				a.recordBatchOutcome(m.Exchange, err)
				cmd.done(i, err)
			},
		})
		index = append(index, i)
	}
	if len(ps) == 0 {
		return
	}

	a.enqueueBatch(ctx, &heldBatch{cmd: cmd, ps: ps, index: index})
}

// heldBatch is a batch's publishings ready for a channel.
type heldBatch struct {
	cmd   *publishBatchCmd
	ps    []*transport.Publish
	index []int
}

func (b *heldBatch) fail(err error) {
	for _, i := range b.index {
		b.cmd.done(i, err)
	}
}

// enqueueBatch puts b on the open channel with the fewest in flight; with
// no channel open it waits for one, and with no room it fails.
func (a *publisherActor) enqueueBatch(ctx actor.Context, b *heldBatch) {
	var best *transport.ConfirmChannel
	for _, ch := range a.channels {
		if !ch.Closed() && (best == nil || ch.InFlight() < best.InFlight()) {
			best = ch
		}
	}
	if best == nil {
		if a.opening == 0 {
			a.openChannel(ctx)
		}
		a.waitingBatches = append(a.waitingBatches, b)
		return
	}
	if !best.EnqueueBatch(b.ps) {
		b.fail(ErrTooManyInFlight)
	}
}

func (a *publisherActor) recordBatchOutcome(exchange string, err error) {
	switch {
	case err == nil:
		a.sys.publishes.published.Inc()
	case errors.Is(err, transport.ErrUnroutable):
		a.sys.publishes.returned.Inc()
	case errors.Is(err, transport.ErrExchangeNotFound):
		a.topo.Forget(exchange)
	}
}
