package actors

import (
	"errors"
	"log/slog"
	"strconv"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/rmqrouter/rmqrouter/transport"
)

// sessionActor is a consumer session on one queue: its own channel with a
// per-consumer prefetch, a buffer of deliveries not yet handed out, the
// clients waiting for one, and the deliveries handed out but not settled.
// It survives the loss of its channel or connection: it opens a new
// consumer with the next generation and marks the old tags stale.
type sessionActor struct {
	sys   *System
	route route
	queue string
	log   *slog.Logger

	conn       *transport.Connection
	consumer   *transport.Consumer
	generation uint64
	opening    bool
	attempt    int

	buffer  []transport.Delivery
	waiters []*fetchWaiter
	unacked map[uint64]unackedDelivery
}

type fetchWaiter struct {
	id    uint64
	cmd   *fetchCmd
	timer *time.Timer
}

type unackedDelivery struct {
	generation uint64
	brokerTag  uint64
	receivedAt time.Time
}

type consumerOpened struct {
	internal
	consumer   *transport.Consumer
	generation uint64
	err        error
}

type consumerClosed struct {
	internal
	generation uint64
	err        error
}

type deliveryArrived struct {
	internal
	delivery   transport.Delivery
	receivedAt time.Time
}

type waitExpired struct {
	internal
	id uint64
}

type reopenConsumer struct{ internal }

func newSessionActor(s *System, r route, queue string, conn *transport.Connection, connGeneration uint64) *sessionActor {
	return &sessionActor{
		sys:     s,
		route:   r,
		queue:   queue,
		log:     s.log.With("user", r.creds.User, "vhost", r.vhost, "queue", queue),
		conn:    conn,
		unacked: make(map[uint64]unackedDelivery),
	}
}

func (a *sessionActor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		ctx.SetReceiveTimeout(a.sys.cfg.SessionIdleTimeout)
		a.open(ctx)
	case *fetchCmd:
		a.fetch(ctx, msg)
	case *settleCmd:
		a.settle(msg)
	case *deliveryArrived:
		a.onDelivery(ctx, msg)
	case *waitExpired:
		a.expireWaiter(msg.id)
	case *consumerOpened:
		a.onOpened(ctx, msg)
	case *consumerClosed:
		a.onConsumerClosed(ctx, msg)
	case *reopenConsumer:
		a.open(ctx)
	case *connectionReady:
		a.conn = msg.conn
		a.attempt = 0
		a.open(ctx)
	case *connectionLost:
		a.conn = nil
		a.dropConsumer()
	case *actor.ReceiveTimeout:
		a.log.Info("closing idle consumer session", "unacked", len(a.unacked))
		ctx.Send(ctx.Parent(), &retire{key: a.queue, pid: ctx.Self()})
	case *actor.Stopping, *actor.Restarting:
		a.dropConsumer()
		for _, w := range a.waiters {
			w.timer.Stop()
			w.cmd.fail(ErrActorGone)
		}
		a.waiters = nil
	}
}

// open starts a consumer in a tracked goroutine unless one is open or
// opening, or there is no connection.
func (a *sessionActor) open(ctx actor.Context) {
	if a.consumer != nil || a.opening || a.conn == nil || a.conn.IsClosed() {
		return
	}
	a.opening = true
	a.generation++
	generation, conn, self, root := a.generation, a.conn, ctx.Self(), a.sys.root
	opts := transport.ConsumerOptions{
		Queue:      a.queue,
		Prefetch:   a.sys.cfg.Prefetch,
		Generation: generation,
		Tag:        "rmqrouter-" + self.Id + "-" + strconv.FormatUint(generation, 10),
	}
	a.sys.goTask(func() {
		c, err := transport.OpenConsumer(conn, opts, transport.ConsumerHandler{
			OnDelivery: func(d transport.Delivery) {
				root.Send(self, &deliveryArrived{delivery: d, receivedAt: time.Now()})
			},
			OnClose: func(err error) {
				root.Send(self, &consumerClosed{generation: generation, err: err})
			},
		})
		root.Send(self, &consumerOpened{consumer: c, generation: generation, err: err})
		if c != nil {
			// The actor sees consumerOpened before the first delivery.
			c.Start()
		}
	})
}

func (a *sessionActor) onOpened(ctx actor.Context, msg *consumerOpened) {
	a.opening = false
	if msg.err != nil {
		a.log.Info("consumer failed to start", "error", msg.err)
		a.failWaiters(msg.err)
		if errors.Is(msg.err, transport.ErrQueueNotFound) || errors.Is(msg.err, transport.ErrAccessRefused) {
			ctx.Send(ctx.Parent(), &retire{key: a.queue, pid: ctx.Self()})
		}
		return
	}
	if msg.generation != a.generation || a.conn == nil {
		msg.consumer.Close()
		return
	}
	a.consumer = msg.consumer
	a.attempt = 0
	a.sys.metrics.ChannelsOpen.WithLabelValues("consume").Inc()
}

func (a *sessionActor) onConsumerClosed(ctx actor.Context, msg *consumerClosed) {
	if msg.generation != a.generation || a.consumer == nil {
		return
	}
	a.log.Info("consumer channel closed", "generation", msg.generation, "error", msg.err)
	a.dropConsumer()
	if errors.Is(msg.err, transport.ErrQueueNotFound) {
		a.failWaiters(msg.err)
		ctx.Send(ctx.Parent(), &retire{key: a.queue, pid: ctx.Self()})
		return
	}
	if a.conn != nil && !a.conn.IsClosed() {
		delay := backoff(a.sys.cfg.RetryBaseDelay, a.sys.cfg.RetryMaxDelay, a.attempt)
		a.attempt++
		self, root := ctx.Self(), a.sys.root
		time.AfterFunc(delay, func() { root.Send(self, &reopenConsumer{}) })
	}
}

// dropConsumer closes the consumer channel (the broker requeues what it
// delivered), forgets the buffer and marks handed-out tags stale.
func (a *sessionActor) dropConsumer() {
	if a.consumer != nil {
		a.consumer.Close()
		a.consumer = nil
		a.sys.metrics.ChannelsOpen.WithLabelValues("consume").Dec()
	}
	a.buffer = nil
	if len(a.unacked) > 0 {
		tags := make([]uint64, 0, len(a.unacked))
		for tag := range a.unacked {
			tags = append(tags, tag)
		}
		a.sys.tags.markStale(tags)
		clear(a.unacked)
	}
}

func (a *sessionActor) fetch(ctx actor.Context, cmd *fetchCmd) {
	if len(a.buffer) > 0 {
		d := a.buffer[0]
		a.buffer = a.buffer[1:]
		a.handOut(ctx, d, cmd)
		return
	}
	a.open(ctx)
	if cmd.wait <= 0 {
		cmd.result.send(fetchOutcome{})
		return
	}
	a.attempt = 0
	id := a.sys.tags.nextTag()
	self, root := ctx.Self(), a.sys.root
	w := &fetchWaiter{id: id, cmd: cmd}
	w.timer = time.AfterFunc(cmd.wait, func() { root.Send(self, &waitExpired{id: id}) })
	a.waiters = append(a.waiters, w)
}

func (a *sessionActor) expireWaiter(id uint64) {
	for i, w := range a.waiters {
		if w.id == id {
			a.waiters = append(a.waiters[:i], a.waiters[i+1:]...)
			w.cmd.result.send(fetchOutcome{})
			return
		}
	}
}

func (a *sessionActor) failWaiters(err error) {
	for _, w := range a.waiters {
		w.timer.Stop()
		w.cmd.fail(err)
	}
	a.waiters = nil
}

func (a *sessionActor) onDelivery(ctx actor.Context, msg *deliveryArrived) {
	if msg.delivery.Generation != a.generation || a.consumer == nil {
		return // from a channel that has closed; the broker redelivers it
	}
	a.sys.metrics.Messages.WithLabelValues("delivered").Inc()
	if len(a.waiters) > 0 {
		w := a.waiters[0]
		a.waiters = a.waiters[1:]
		w.timer.Stop()
		a.handOut(ctx, msg.delivery, w.cmd)
		return
	}
	a.buffer = append(a.buffer, msg.delivery)
}

// handOut gives d to the client of cmd under a new router tag. When the
// client has stopped waiting, d goes back to the queue.
func (a *sessionActor) handOut(ctx actor.Context, d transport.Delivery, cmd *fetchCmd) {
	if cmd.autoAck {
		tag := a.sys.tags.nextTag()
		if cmd.result.send(fetchOutcome{result: FetchResult{Delivery: &d, Tag: tag}}) {
			a.consumer.Ack(d.BrokerTag, func(error) {})
			a.sys.metrics.Messages.WithLabelValues("acked").Inc()
		} else {
			a.consumer.Nack(d.BrokerTag, true, func(error) {})
		}
		return
	}

	tag := a.sys.tags.issue(ctx.Self(), a.route.creds.Key)
	a.unacked[tag] = unackedDelivery{generation: d.Generation, brokerTag: d.BrokerTag, receivedAt: time.Now()}
	if !cmd.result.send(fetchOutcome{result: FetchResult{Delivery: &d, Tag: tag}}) {
		delete(a.unacked, tag)
		a.sys.tags.remove(tag)
		a.consumer.Nack(d.BrokerTag, true, func(error) {})
	}
}

func (a *sessionActor) settle(cmd *settleCmd) {
	entry, ok := a.unacked[cmd.tag]
	if !ok {
		cmd.fail(ErrDeliveryTagNotFound)
		return
	}
	delete(a.unacked, cmd.tag)
	if a.consumer == nil || entry.generation != a.consumer.Generation() {
		a.sys.tags.markStale([]uint64{cmd.tag})
		cmd.fail(ErrDeliveryTagStale)
		return
	}

	tags, m := a.sys.tags, a.sys.metrics
	done := func(err error) {
		if err != nil {
			// The channel closed before the frame went out: the broker
			// will redeliver the message under a new tag.
			tags.markStale([]uint64{cmd.tag})
			cmd.fail(ErrDeliveryTagStale)
			return
		}
		tags.remove(cmd.tag)
		m.ConsumeDuration.Observe(time.Since(entry.receivedAt).Seconds())
		if cmd.ack {
			m.Messages.WithLabelValues("acked").Inc()
		} else {
			m.Messages.WithLabelValues("rejected").Inc()
		}
		cmd.result.send(nil)
	}
	if cmd.ack {
		a.consumer.Ack(entry.brokerTag, done)
	} else {
		a.consumer.Nack(entry.brokerTag, cmd.requeue, done)
	}
}
