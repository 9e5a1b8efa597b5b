package actors

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rmqrouter/rmqrouter/metrics"
	"github.com/rmqrouter/rmqrouter/transport"
)

// publisherActor owns a pool of confirm-mode channels on one connection.
// It checks unknown exchanges on a separate channel before publishing to
// them, spreads publishings over the pool by the number in flight, and
// sends a publishing that never reached the socket once more on another
// channel.
type publisherActor struct {
	sys  *System
	conn *transport.Connection
	topo *transport.Topology
	// parentStopping is set when the connection actor stops for good:
	// publishings then get an error instead of a second attempt.
	parentStopping *atomic.Bool

	channels       []*transport.ConfirmChannel
	opening        int
	waiting        []*publishCmd
	waitingBatches []*heldBatch
	blocked        bool
	stopping       bool
}

type channelOpened struct {
	internal
	ch  *transport.ConfirmChannel
	err error
}

type channelClosed struct {
	internal
	id  uint64
	err error
}

type exchangeChecked struct {
	internal
	cmd *publishCmd
	err error
}

type reopenChannel struct{ internal }

func newPublisherActor(s *System, conn *transport.Connection, parentStopping *atomic.Bool) *publisherActor {
	return &publisherActor{sys: s, conn: conn, topo: transport.NewTopology(conn, s.cfg.TopologyTTL), parentStopping: parentStopping}
}

func (a *publisherActor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		for i := 0; i < a.sys.cfg.PublishChannels; i++ {
			a.openChannel(ctx)
		}
	case *publishCmd:
		a.publish(ctx, msg)
	case *publishBatchCmd:
		a.publishBatch(ctx, msg)
	case *batchChecked:
		a.dispatchBatch(ctx, msg.cmd, msg.errs)
	case *exchangeChecked:
		if msg.err != nil {
			a.answer(msg.cmd, msg.err)
			return
		}
		a.dispatch(ctx, msg.cmd)
	case *channelOpened:
		a.onChannelOpened(ctx, msg)
	case *channelClosed:
		a.onChannelClosed(ctx, msg)
	case *reopenChannel:
		if !a.stopping && len(a.channels)+a.opening < a.sys.cfg.PublishChannels {
			a.openChannel(ctx)
		}
	case *connectionBlocked:
		a.blocked = msg.blocked
		if msg.blocked {
			// Writes are stuck in the socket until the alarm clears:
			// fail what is in flight now instead of at its timeout.
			blocked := &transport.Error{Op: "basic.publish", Kind: transport.ErrBlocked, Reason: msg.reason, Retryable: true}
			for _, ch := range a.channels {
				ch.Abandon(blocked)
			}
		}
	case *actor.Stopping, *actor.Restarting:
		a.stop()
	}
}

func (a *publisherActor) publish(ctx actor.Context, cmd *publishCmd) {
	if cmd.expired() {
		cmd.fail(ErrConfirmTimeout)
		return
	}
	if a.blocked {
		a.answer(cmd, &transport.Error{Op: "basic.publish", Kind: transport.ErrBlocked, Retryable: true})
		return
	}
	if a.topo.ExchangeKnown(cmd.msg.Exchange) {
		a.dispatch(ctx, cmd)
		return
	}

	// The passive declare is a round trip: run it outside Receive.
	self, root, topo := ctx.Self(), a.sys.root, a.topo
	a.sys.goTask(func() {
		err := topo.CheckExchange(cmd.msg.Exchange)
		root.Send(self, &exchangeChecked{cmd: cmd, err: err})
	})
}

// dispatch hands cmd to the open channel with the fewest publishings in
// flight. With no channel open yet, cmd waits for one.
func (a *publisherActor) dispatch(ctx actor.Context, cmd *publishCmd) {
	if len(a.channels) == 0 {
		if a.opening == 0 {
			a.openChannel(ctx)
		}
		a.waiting = append(a.waiting, cmd)
		return
	}

	root, supervisor, parentStopping := a.sys.root, a.sys.supervisor, a.parentStopping
	p := &transport.Publish{
		Msg:      cmd.msg,
		Deadline: cmd.deadline,
		Done: func(err error) {
			// A publishing that never reached the socket is safe to send
			// again. One whose channel or connection closed before the
			// confirm may be stored or not: it is sent once more too, so
			// the client may see a duplicate but never a lost 202. Both
			// go through the supervisor, because this publisher may be
			// stopping with its connection.
			retryable := errors.Is(err, transport.ErrNotSent) || errors.Is(err, transport.ErrOutcomeUnknown)
			if retryable && !cmd.retried && !cmd.expired() && !parentStopping.Load() {
				cmd.retried = true
				cmd.uncertain = errors.Is(err, transport.ErrOutcomeUnknown)
				root.Send(supervisor, cmd)
				return
			}
			a.answer(cmd, err)
		},
	}

	// Try the open channels in order of preference (see pickChannel). A channel
	// that the broker closed stays in the pool until its channelClosed
	// message arrives, so closed ones are skipped. When all are closed,
	// cmd waits for a new one.
	open := 0
	for tried := uint64(0); ; {
		best := pickChannel(a.channels, tried)
		if best < 0 {
			break
		}
		open++
		tried |= 1 << best
		if a.channels[best].Enqueue(p) {
			return
		}
	}
	if open == 0 {
		if a.opening == 0 {
			a.openChannel(ctx)
		}
		a.waiting = append(a.waiting, cmd)
		return
	}
	a.answer(cmd, ErrTooManyInFlight)
}

// channelFill is how many publishings the first open channel carries before
// the others share the load. Publishings queued on one channel leave in one
// socket write, and the broker confirms them together. In one bench run with
// 64 clients on one connection, one channel published about 7 % more than
// four channels sharing the load evenly (docs/benchmarks.md).
const channelFill = 128

// channelLoad is what pickChannel reads of a channel.
type channelLoad interface {
	Closed() bool
	InFlight() int
}

// pickChannel returns the index of the first open channel not in tried (a
// bit per index) with fewer than channelFill publishings in flight, else of
// the open one not in tried with the fewest. It returns -1 when every
// channel is closed or tried.
func pickChannel[C channelLoad](channels []C, tried uint64) int {
	best, fewest := -1, 0
	for i, ch := range channels {
		if tried&(1<<i) != 0 || ch.Closed() {
			continue
		}
		load := ch.InFlight()
		if load < channelFill {
			return i
		}
		if best < 0 || load < fewest {
			best, fewest = i, load
		}
	}
	return best
}

// publishSeries holds the metric series that every publish result is recorded
// on. They are resolved once, because a label lookup hashes and checks each value.
type publishSeries struct {
	vecs      *metrics.Metrics
	published prometheus.Counter
	returned  prometheus.Counter
	duration  map[string]prometheus.Observer // by outcome
}

func newPublishSeries(m *metrics.Metrics) publishSeries {
	ps := publishSeries{
		vecs:      m,
		published: m.Messages.WithLabelValues("published"),
		returned:  m.Messages.WithLabelValues("returned"),
		duration:  make(map[string]prometheus.Observer, len(metrics.PublishOutcomes)),
	}
	for _, outcome := range metrics.PublishOutcomes {
		ps.duration[outcome] = m.PublishDuration.WithLabelValues(outcome)
	}
	return ps
}

// observe records the duration of a publish with outcome. An outcome missing
// from metrics.PublishOutcomes is looked up by label instead.
func (ps *publishSeries) observe(outcome string, elapsed time.Duration) {
	observer, ok := ps.duration[outcome]
	if !ok {
		observer = ps.vecs.PublishDuration.WithLabelValues(outcome)
	}
	observer.Observe(elapsed.Seconds())
}

// answer sends cmd its result and records its outcome. It runs on the actor or
// on a channel goroutine.
func (a *publisherActor) answer(cmd *publishCmd, err error) {
	outcome := "accepted"
	switch {
	case err == nil:
		a.sys.publishes.published.Inc()
	case errors.Is(err, transport.ErrUnroutable):
		outcome = "unroutable"
		a.sys.publishes.returned.Inc()
	case errors.Is(err, transport.ErrExchangeNotFound):
		outcome = "exchange_not_found"
		a.topo.Forget(cmd.msg.Exchange)
	case errors.Is(err, transport.ErrNacked):
		outcome = "nacked"
	case errors.Is(err, transport.ErrAccessRefused):
		outcome = "access_refused"
	case errors.Is(err, transport.ErrBlocked):
		outcome = "blocked"
	default:
		outcome = "failed"
	}
	a.sys.publishes.observe(outcome, time.Since(cmd.start))
	cmd.fail(err)
}

func (a *publisherActor) openChannel(ctx actor.Context) {
	a.opening++
	self, root, conn := ctx.Self(), a.sys.root, a.conn
	id := a.sys.channelIDs.Add(1)
	opts := transport.ChannelOptions{QueueLength: a.sys.cfg.ChannelQueueLength}
	a.sys.goTask(func() {
		ch, err := transport.OpenConfirmChannel(conn, id, opts, func(err error) {
			root.Send(self, &channelClosed{id: id, err: err})
		})
		root.Send(self, &channelOpened{ch: ch, err: err})
	})
}

func (a *publisherActor) onChannelOpened(ctx actor.Context, msg *channelOpened) {
	a.opening--
	if msg.err != nil {
		a.sys.log.Warn("publishing channel failed to open", "error", msg.err)
		if len(a.channels) == 0 && a.opening == 0 {
			for _, cmd := range a.waiting {
				a.answer(cmd, msg.err)
			}
			a.waiting = nil
			for _, b := range a.waitingBatches {
				b.fail(msg.err)
			}
			a.waitingBatches = nil
		}
		if !a.conn.IsClosed() {
			self, root := ctx.Self(), a.sys.root
			time.AfterFunc(time.Second, func() { root.Send(self, &reopenChannel{}) })
		}
		return
	}
	if a.stopping {
		msg.ch.Close(time.Second)
		return
	}
	a.channels = append(a.channels, msg.ch)
	a.sys.metrics.ChannelsOpen.WithLabelValues("publish").Inc()

	waiting := a.waiting
	a.waiting = nil
	for _, cmd := range waiting {
		a.dispatch(ctx, cmd)
	}
	batches := a.waitingBatches
	a.waitingBatches = nil
	for _, b := range batches {
		a.enqueueBatch(ctx, b)
	}
}

func (a *publisherActor) onChannelClosed(ctx actor.Context, msg *channelClosed) {
	for i, ch := range a.channels {
		if ch.ID() == msg.id {
			a.channels = append(a.channels[:i], a.channels[i+1:]...)
			a.sys.metrics.ChannelsOpen.WithLabelValues("publish").Dec()
			break
		}
	}
	if msg.err != nil {
		a.sys.log.Info("publishing channel closed by the broker", "error", msg.err)
	}
	if !a.stopping && !a.conn.IsClosed() {
		a.openChannel(ctx)
	}
}

// stop answers every publishing the channels hold at once, since closing a
// channel waits for the broker and the network may be what failed, then
// closes the channels in a tracked goroutine. A publishing without its
// confirm is sent once more through the supervisor when its deadline
// allows; otherwise its outcome is reported unknown.
func (a *publisherActor) stop() {
	a.stopping = true
	for _, cmd := range a.waiting {
		a.answer(cmd, ErrActorGone)
	}
	a.waiting = nil
	for _, b := range a.waitingBatches {
		b.fail(ErrActorGone)
	}
	a.waitingBatches = nil
	unknown := &transport.Error{Op: "basic.publish", Kind: transport.ErrOutcomeUnknown, Reason: "the publisher stopped before the confirm arrived", Retryable: true}
	for _, ch := range a.channels {
		ch.Abandon(unknown)
	}
	channels := a.channels
	a.channels = nil
	for range channels {
		a.sys.metrics.ChannelsOpen.WithLabelValues("publish").Dec()
	}
	topo := a.topo
	a.sys.goTask(func() {
		for _, ch := range channels {
			ch.Close(5 * time.Second)
		}
		topo.Close()
	})
}
