package actors

import (
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/rmqrouter/rmqrouter/transport"
)

// sessionCloseWait bounds how long a DELETE waits for the broker to confirm
// the channel close. Past it the session replies anyway, and the broker
// requeues the messages when the close completes.
const sessionCloseWait = 5 * time.Second

// settleSlots bounds the acknowledgements one session has queued on its
// consumer. It is below transport.SettleQueueLength, so a large batch
// waits for room instead of failing.
const settleSlots = transport.SettleQueueLength * 3 / 4

// sessionConfig holds the settings of one consumer session.
type sessionConfig struct {
	// id is the id of an explicit session, empty for the implicit session
	// of /v1/fetch.
	id string
	// key is the session's key among the sessions of its connection actor.
	key         string
	queue       string
	prefetch    int
	idleTimeout time.Duration
	// autoAck acknowledges every message as it is handed out; the implicit
	// session takes this per request instead.
	autoAck bool
	// created receives the outcome of the first consumer open (nil or the
	// error). It is nil for the implicit session.
	created *reply[error]
}

func (c sessionConfig) explicit() bool { return c.id != "" }

// implicitSession returns the configuration of the implicit session of
// queue, which /v1/fetch creates on first use.
func implicitSession(cfg Config, queue string) sessionConfig {
	return sessionConfig{key: queue, queue: queue, prefetch: cfg.Prefetch, idleTimeout: cfg.SessionIdleTimeout}
}

// sessionActor is a consumer session on one queue. It owns a channel with a
// per-consumer prefetch, a buffer of deliveries not yet handed out, the
// requests waiting for one, and the deliveries handed out but not settled.
// The buffer never exceeds the prefetch, because the broker sends no more.
// The session survives the loss of its channel or connection: it opens a
// new consumer with the next generation and marks the old tags stale.
//
// The implicit session of /v1/fetch and the explicit sessions of
// /v1/sessions are the same actor; an explicit one also has an id in the
// System's session registry and ends visibly (see SessionEndReason).
type sessionActor struct {
	sys   *System
	route route
	cfg   sessionConfig
	log   *slog.Logger

	conn       *transport.Connection
	consumer   *transport.Consumer
	generation uint64
	opening    bool
	attempt    int
	// lastErr is the cause the last consumer failed or closed with; nil
	// while one is open.
	lastErr error

	lastRequest time.Time
	idleTimer   *time.Timer
	// ended is set once the session is ending; requests then get endedErr.
	ended      SessionEndReason
	closing    *closeSessionCmd
	closingGen uint64

	buffer         []bufferedDelivery
	serveScheduled bool
	waiters        []*fetchWaiter
	unacked        map[uint64]unackedDelivery
	settleSlots    chan struct{}
}

type bufferedDelivery struct {
	transport.Delivery
	receivedAt time.Time
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

// serveWaiters makes the session reply to waiting requests from the
// buffer. A session sends it to itself after the first delivery for a
// waiter, so that deliveries already in its mailbox join the same reply.
type serveWaiters struct{ internal }

type reopenConsumer struct{ internal }

type closeTimedOut struct{ internal }

// idleCheck triggers the session's check of its idle timeout.
type idleCheck struct{ internal }

// errConnectionLost is a session's lastErr while its connection is closed.
var errConnectionLost = &transport.Error{Op: "basic.consume", Kind: transport.ErrBrokerUnavailable, Reason: "the connection to the broker closed; reconnecting", Retryable: true}

func newSessionActor(s *System, r route, cfg sessionConfig, conn *transport.Connection) *sessionActor {
	log := s.log.With("user", r.creds.User, "vhost", r.vhost, "queue", cfg.queue)
	if cfg.explicit() {
		log = log.With("session_id", cfg.id)
	}
	return &sessionActor{
		sys:         s,
		route:       r,
		cfg:         cfg,
		log:         log,
		conn:        conn,
		unacked:     make(map[uint64]unackedDelivery),
		settleSlots: make(chan struct{}, settleSlots),
	}
}

func (a *sessionActor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		a.lastRequest = time.Now()
		a.armIdle(ctx, a.cfg.idleTimeout)
		a.open(ctx)
	case *fetchCmd:
		a.lastRequest = time.Now()
		a.fetch(ctx, msg)
	case *settleCmd:
		a.lastRequest = time.Now()
		a.settle(ctx, msg)
	case *settleBatchCmd:
		a.lastRequest = time.Now()
		a.settleBatch(ctx, msg)
	case *closeSessionCmd:
		a.close(ctx, msg)
	case *deliveryArrived:
		a.onDelivery(ctx, msg)
	case *serveWaiters:
		a.serveWaiters(ctx)
	case *waitExpired:
		a.expireWaiter(msg.id)
	case *consumerOpened:
		a.onOpened(ctx, msg)
	case *consumerClosed:
		a.onConsumerClosed(ctx, msg)
	case *reopenConsumer:
		a.open(ctx)
	case *closeTimedOut:
		a.finishClose(ctx)
	case *connectionReady:
		a.conn = msg.conn
		a.attempt = 0
		a.open(ctx)
	case *connectionLost:
		a.conn = nil
		// A consumer still opening belongs to the closed connection.
		a.generation++
		a.opening = false
		a.lastErr = errConnectionLost
		a.dropConsumer()
	case *idleCheck:
		a.onIdle(ctx)
	case *actor.Restarting:
		a.stopIdle()
		a.release(ErrActorGone)
		if a.ended != "" {
			// The new instance must not consume for an ended session.
			ctx.Send(ctx.Parent(), &retire{key: a.cfg.key, pid: ctx.Self()})
		}
	case *actor.Stopping:
		a.stopIdle()
		a.onStopping()
	}
}

// armIdle schedules the next idleCheck after d. The session keeps its own
// timer instead of protoactor's ReceiveTimeout, whose timer goroutine
// writes the actor context without synchronisation (a data race under
// -race), and checks lastRequest when it fires instead of resetting a
// timer on every request.
func (a *sessionActor) armIdle(ctx actor.Context, d time.Duration) {
	self, root := ctx.Self(), a.sys.root
	a.idleTimer = time.AfterFunc(d, func() { root.Send(self, &idleCheck{}) })
}

func (a *sessionActor) stopIdle() {
	if a.idleTimer != nil {
		a.idleTimer.Stop()
	}
}

// onIdle ends the session when no request arrived for its idle timeout and
// none is waiting; otherwise it checks again when the timeout could pass.
func (a *sessionActor) onIdle(ctx actor.Context) {
	if a.ended != "" {
		return
	}
	if len(a.waiters) > 0 {
		a.armIdle(ctx, a.cfg.idleTimeout)
		return
	}
	if idle := time.Since(a.lastRequest); idle < a.cfg.idleTimeout {
		a.armIdle(ctx, a.cfg.idleTimeout-idle)
		return
	}
	if a.cfg.explicit() {
		a.log.Info("session expired", "idle_timeout", a.cfg.idleTimeout.String(), "unacked", len(a.unacked))
		a.sys.metrics.SessionsExpired.Inc()
	} else {
		a.log.Info("closing idle consumer session", "unacked", len(a.unacked))
	}
	a.end(ctx, EndExpired, ErrActorGone)
}

// end stops the session. It removes an explicit session's id from the
// registry (recording the reason) and fails waiting requests with err, or
// with a SessionEndedError for an explicit session. It closes the channel,
// so the broker requeues every unacknowledged message, and sends the parent
// a retire request.
func (a *sessionActor) end(ctx actor.Context, reason SessionEndReason, err error) {
	if a.ended != "" {
		return
	}
	a.ended = reason
	if a.cfg.explicit() {
		a.sys.sessions.end(a.cfg.id, reason)
		if reason != EndExpired {
			a.log.Info("session ended", "reason", string(reason), "unacked", len(a.unacked))
		}
		err = a.endedErr()
	}
	a.failWaiters(err)
	a.dropConsumer()
	ctx.Send(ctx.Parent(), &retire{key: a.cfg.key, pid: ctx.Self()})
}

// endedErr is the error returned to a request that reaches an ending session. The
// caller of an implicit session retries and gets a new one.
func (a *sessionActor) endedErr() error {
	if a.cfg.explicit() {
		return &SessionEndedError{Reason: a.ended}
	}
	return ErrActorGone
}

func (a *sessionActor) onStopping() {
	if a.ended == "" {
		a.ended = EndConnection
		if a.sys.stopping.Load() {
			a.ended = EndShutdown
		}
		if a.cfg.explicit() {
			a.sys.sessions.end(a.cfg.id, a.ended)
			a.log.Info("session ended", "reason", string(a.ended), "unacked", len(a.unacked))
		}
	}
	err := a.endedErr()
	if a.ended == EndShutdown {
		// The client should retry on another instance, not open a session.
		err = ErrShuttingDown
	}
	if a.cfg.created != nil {
		// A session that stops before its consumer opened was never found
		// by anyone, so its creation fails as unavailable.
		if a.ended == EndShutdown {
			a.cfg.created.send(ErrShuttingDown)
		} else {
			a.cfg.created.send(ErrActorGone)
		}
	}
	a.release(err)
}

// release fails waiting requests with err, closes the consumer and replies
// to a pending DELETE.
func (a *sessionActor) release(err error) {
	a.failWaiters(err)
	a.dropConsumer()
	if a.closing != nil {
		a.closing.result.send(nil)
		a.closing = nil
	}
}

// open starts a consumer in a tracked goroutine unless one is open or
// opening, there is no connection, or the session is ending.
func (a *sessionActor) open(ctx actor.Context) {
	if a.ended != "" || a.consumer != nil || a.opening || a.conn == nil || a.conn.IsClosed() {
		return
	}
	a.opening = true
	a.generation++
	generation, conn, self, root := a.generation, a.conn, ctx.Self(), a.sys.root
	opts := transport.ConsumerOptions{
		Queue:      a.cfg.queue,
		Prefetch:   a.cfg.prefetch,
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
			// The actor receives consumerOpened before the first delivery.
			c.Start()
		}
	})
}

func (a *sessionActor) onOpened(ctx actor.Context, msg *consumerOpened) {
	if msg.generation != a.generation {
		// Opened on a connection that has closed since, or for a session
		// that is closing.
		if msg.consumer != nil {
			msg.consumer.Close()
		}
		return
	}
	a.opening = false
	if msg.err != nil {
		a.onOpenFailed(ctx, msg.err)
		return
	}
	if a.conn == nil || a.ended != "" {
		msg.consumer.Close()
		return
	}
	a.consumer = msg.consumer
	a.lastErr = nil
	a.attempt = 0
	a.sys.metrics.ChannelsOpen.WithLabelValues("consume").Inc()

	if created := a.cfg.created; created != nil && created.state.Load() == 0 {
		if !a.sys.sessions.activate(a.cfg.id, ctx.Self()) || !created.send(nil) {
			// The client stopped waiting for the session.
			a.ended = EndClosed
			a.sys.sessions.release(a.cfg.id)
			a.dropConsumer()
			ctx.Send(ctx.Parent(), &retire{key: a.cfg.key, pid: ctx.Self()})
			return
		}
		a.log.Info("session opened", "prefetch", a.cfg.prefetch, "idle_timeout", a.cfg.idleTimeout.String(), "auto_ack", a.cfg.autoAck)
	}
}

func (a *sessionActor) onOpenFailed(ctx actor.Context, err error) {
	a.lastErr = err
	a.log.Info("consumer failed to start", "error", err)
	if created := a.cfg.created; created != nil && created.state.Load() == 0 {
		// The creating request reports the error and releases the id.
		created.send(err)
		a.ended = EndConsumeFailed
		ctx.Send(ctx.Parent(), &retire{key: a.cfg.key, pid: ctx.Self()})
		return
	}
	switch {
	case errors.Is(err, transport.ErrQueueNotFound):
		a.end(ctx, EndQueueDeleted, err)
	case errors.Is(err, transport.ErrAccessRefused):
		a.end(ctx, EndAccessRefused, err)
	default:
		a.failWaiters(err)
		a.scheduleReopen(ctx)
	}
}

func (a *sessionActor) onConsumerClosed(ctx actor.Context, msg *consumerClosed) {
	if a.closing != nil && msg.generation == a.closingGen {
		a.finishClose(ctx)
		return
	}
	if msg.generation != a.generation || a.consumer == nil {
		return
	}
	a.log.Info("consumer channel closed", "generation", msg.generation, "error", msg.err)
	a.lastErr = msg.err
	if a.lastErr == nil {
		a.lastErr = errConnectionLost
	}
	a.dropConsumer()
	switch {
	case errors.Is(msg.err, transport.ErrQueueNotFound):
		a.end(ctx, EndQueueDeleted, msg.err)
	case errors.Is(msg.err, transport.ErrAccessRefused):
		a.end(ctx, EndAccessRefused, msg.err)
	default:
		a.scheduleReopen(ctx)
	}
}

// scheduleReopen opens a new consumer after a jittered backoff while the
// connection is open; a new connection reopens it through connectionReady.
// After RetryMaxAttempts failures in a row the session ends.
func (a *sessionActor) scheduleReopen(ctx actor.Context) {
	if a.conn == nil || a.conn.IsClosed() {
		return
	}
	if a.attempt >= a.sys.cfg.RetryMaxAttempts {
		a.log.Warn("giving up reopening the consumer", "attempts", a.attempt, "error", a.lastErr)
		a.end(ctx, EndConsumeFailed, a.lastErr)
		return
	}
	delay := backoff(a.sys.cfg.RetryBaseDelay, a.sys.cfg.RetryMaxDelay, a.attempt)
	a.attempt++
	self, root := ctx.Self(), a.sys.root
	time.AfterFunc(delay, func() { root.Send(self, &reopenConsumer{}) })
}

// dropConsumer closes the consumer channel (the broker requeues what it
// delivered), clears the buffer and marks handed-out tags stale.
func (a *sessionActor) dropConsumer() {
	if a.consumer != nil {
		a.consumer.Close()
		a.consumer = nil
		a.sys.metrics.ChannelsOpen.WithLabelValues("consume").Dec()
	}
	if n := len(a.buffer); n > 0 {
		a.sys.metrics.DeliveriesBuffered.Sub(float64(n))
		a.buffer = nil
	}
	if len(a.unacked) > 0 {
		tags := make([]uint64, 0, len(a.unacked))
		for tag := range a.unacked {
			tags = append(tags, tag)
		}
		a.sys.tags.markStale(tags)
		clear(a.unacked)
	}
}

// close serves DELETE: the session ends at once, and the answer waits for
// the broker to confirm the channel close, so that the unacknowledged
// messages are back in the queue when the client reads it.
func (a *sessionActor) close(ctx actor.Context, cmd *closeSessionCmd) {
	if a.ended != "" {
		cmd.fail(a.endedErr())
		return
	}
	a.ended = EndClosed
	a.sys.sessions.end(a.cfg.id, EndClosed)
	a.log.Info("session closed by the client", "unacked", len(a.unacked))
	a.failWaiters(&SessionEndedError{Reason: EndClosed})
	if a.consumer == nil {
		// A consumer still opening is closed when it arrives.
		a.generation++
		cmd.result.send(nil)
		ctx.Send(ctx.Parent(), &retire{key: a.cfg.key, pid: ctx.Self()})
		return
	}
	a.closing = cmd
	a.closingGen = a.consumer.Generation()
	a.dropConsumer()
	self, root := ctx.Self(), a.sys.root
	time.AfterFunc(sessionCloseWait, func() { root.Send(self, &closeTimedOut{}) })
}

func (a *sessionActor) finishClose(ctx actor.Context) {
	if a.closing == nil {
		return
	}
	a.closing.result.send(nil)
	a.closing = nil
	ctx.Send(ctx.Parent(), &retire{key: a.cfg.key, pid: ctx.Self()})
}

// wantConnection requests the current connection from the connection actor
// when this session has none. While the connection actor is reconnecting it
// sends nothing, and connectionReady follows the reconnect.
func (a *sessionActor) wantConnection(ctx actor.Context) {
	if a.conn == nil || a.conn.IsClosed() {
		ctx.Send(ctx.Parent(), &connectionWanted{session: ctx.Self()})
	}
}

func (a *sessionActor) fetch(ctx actor.Context, cmd *fetchCmd) {
	if a.ended != "" {
		cmd.fail(a.endedErr())
		return
	}
	if cmd.max <= 0 {
		cmd.max = 1
	}
	a.wantConnection(ctx)
	if len(a.waiters) == 0 && len(a.buffer) > 0 {
		a.handOut(ctx, cmd)
		return
	}
	a.open(ctx)
	if cmd.wait <= 0 {
		a.answerEmpty(cmd)
		return
	}
	id := a.sys.tags.nextTag()
	self, root := ctx.Self(), a.sys.root
	w := &fetchWaiter{id: id, cmd: cmd}
	w.timer = time.AfterFunc(cmd.wait, func() { root.Send(self, &waitExpired{id: id}) })
	a.waiters = append(a.waiters, w)
}

// answerEmpty replies to a request for which no message came. Without a
// consumer (and none opening) that is the reason there is none, so the
// request gets the error instead of an empty answer.
func (a *sessionActor) answerEmpty(cmd *fetchCmd) {
	if a.consumer == nil && !a.opening {
		err := a.lastErr
		if err == nil {
			err = errConnectionLost
		}
		cmd.fail(err)
		return
	}
	cmd.result.send(fetchOutcome{})
}

func (a *sessionActor) expireWaiter(id uint64) {
	for i, w := range a.waiters {
		if w.id == id {
			a.waiters = slices.Delete(a.waiters, i, i+1)
			a.lastRequest = time.Now()
			a.answerEmpty(w.cmd)
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
	a.sys.metrics.DeliveriesBuffered.Inc()
	a.buffer = append(a.buffer, bufferedDelivery{Delivery: msg.delivery, receivedAt: msg.receivedAt})
	if len(a.waiters) > 0 && !a.serveScheduled {
		a.serveScheduled = true
		ctx.Send(ctx.Self(), &serveWaiters{})
	}
}

func (a *sessionActor) serveWaiters(ctx actor.Context) {
	a.serveScheduled = false
	for len(a.waiters) > 0 && len(a.buffer) > 0 {
		w := a.waiters[0]
		a.waiters = slices.Delete(a.waiters, 0, 1)
		w.timer.Stop()
		a.handOut(ctx, w.cmd)
	}
}

// handOut gives up to cmd.max buffered deliveries to the client of cmd,
// each under a new router tag. When the client has stopped waiting, the
// deliveries go back to the front of the buffer.
func (a *sessionActor) handOut(ctx actor.Context, cmd *fetchCmd) {
	n := min(cmd.max, len(a.buffer))
	taken := make([]bufferedDelivery, n)
	copy(taken, a.buffer[:n])
	a.buffer = slices.Delete(a.buffer, 0, n)
	a.sys.metrics.DeliveriesBuffered.Sub(float64(n))

	autoAck := cmd.autoAck || a.cfg.autoAck
	results := make([]FetchResult, n)
	for i := range taken {
		d := &taken[i]
		var tag uint64
		if autoAck {
			tag = a.sys.tags.nextTag()
		} else {
			tag = a.sys.tags.issue(ctx.Self(), a.route.creds.Key)
			a.unacked[tag] = unackedDelivery{generation: d.Generation, brokerTag: d.BrokerTag, receivedAt: d.receivedAt}
		}
		results[i] = FetchResult{Delivery: &d.Delivery, Tag: tag}
	}

	if !cmd.result.send(fetchOutcome{results: results}) {
		if !autoAck {
			for _, r := range results {
				delete(a.unacked, r.Tag)
				a.sys.tags.remove(r.Tag)
			}
		}
		a.buffer = append(taken, a.buffer...)
		a.sys.metrics.DeliveriesBuffered.Add(float64(n))
		return
	}
	a.lastRequest = time.Now()
	if autoAck {
		group := make([]transport.Settlement, len(taken))
		for i, d := range taken {
			group[i] = transport.Settlement{Tag: d.BrokerTag, Done: func(error) {}}
		}
		a.consumer.Settle(group, true, false)
		a.sys.metrics.Messages.WithLabelValues("acked").Add(float64(n))
	}
}

// tagError is the error for a tag this session does not hold unsettled:
// stale when it issued the tag on a channel that has closed since, else
// not found.
func (a *sessionActor) tagError(self *actor.PID, tag uint64) error {
	if e, ok := a.sys.tags.lookup(tag); ok && e.stale && e.session.Equal(self) {
		return ErrDeliveryTagStale
	}
	return ErrDeliveryTagNotFound
}

// pendingSettle is one basic.ack or basic.nack to send.
type pendingSettle struct {
	tag   uint64
	entry unackedDelivery
	done  func(error)
}

// take removes tag from the unacked deliveries and returns it ready to
// settle, or returns the error that answers it without the broker.
func (a *sessionActor) take(self *actor.PID, tag uint64) (unackedDelivery, error) {
	entry, ok := a.unacked[tag]
	if !ok {
		return unackedDelivery{}, a.tagError(self, tag)
	}
	delete(a.unacked, tag)
	if a.consumer == nil || entry.generation != a.consumer.Generation() {
		a.sys.tags.markStale([]uint64{tag})
		return unackedDelivery{}, ErrDeliveryTagStale
	}
	return entry, nil
}

func (a *sessionActor) settle(ctx actor.Context, cmd *settleCmd) {
	entry, err := a.take(ctx.Self(), cmd.tag)
	if err != nil {
		cmd.fail(err)
		return
	}
	a.sendSettles([]pendingSettle{{tag: cmd.tag, entry: entry, done: func(err error) { cmd.result.send(err) }}}, cmd.ack, cmd.requeue)
}

// settleBatch settles every tag of cmd it holds and answers once the
// frames of all of them were written, with one result per tag.
func (a *sessionActor) settleBatch(ctx actor.Context, cmd *settleBatchCmd) {
	if a.ended != "" {
		cmd.fail(a.endedErr())
		return
	}
	results := make([]TagResult, len(cmd.tags))
	// pending counts the unanswered settles plus one for this loop; the
	// callback that brings it to zero sends the answer.
	var pending atomic.Int64
	pending.Store(1)
	finish := func() {
		if pending.Add(-1) == 0 {
			cmd.result.send(settleBatchOutcome{results: results})
		}
	}
	var ops []pendingSettle
	for i, tag := range cmd.tags {
		results[i].Tag = tag
		entry, err := a.take(ctx.Self(), tag)
		if err != nil {
			results[i].Err = err
			continue
		}
		pending.Add(1)
		ops = append(ops, pendingSettle{tag: tag, entry: entry, done: func(err error) {
			results[i].Err = err
			finish()
		}})
	}
	if len(ops) > 0 {
		a.sendSettles(ops, cmd.ack, cmd.requeue)
	}
	finish()
}

// sendSettles queues basic.ack or basic.nack for ops on the current
// consumer, which a.take checked. Each op's done gets nil once its frame
// was written, or ErrDeliveryTagStale when the channel closed first (the
// broker then redelivers the message). Ops that find no free settle slot
// are queued from a tracked goroutine, so Receive does not wait for a slot.
func (a *sessionActor) sendSettles(ops []pendingSettle, ack, requeue bool) {
	consumer, slots, tags, m := a.consumer, a.settleSlots, a.sys.tags, a.sys.metrics
	send := func(ops []pendingSettle) {
		group := make([]transport.Settlement, len(ops))
		for i, op := range ops {
			group[i] = transport.Settlement{Tag: op.entry.brokerTag, Done: func(err error) {
				<-slots
				if err != nil {
					tags.markStale([]uint64{op.tag})
					op.done(ErrDeliveryTagStale)
					return
				}
				tags.remove(op.tag)
				m.ConsumeDuration.Observe(time.Since(op.entry.receivedAt).Seconds())
				if ack {
					m.Messages.WithLabelValues("acked").Inc()
				} else {
					m.Messages.WithLabelValues("rejected").Inc()
				}
				op.done(nil)
			}}
		}
		consumer.Settle(group, ack, requeue)
	}

	// Take a slot per settlement. The settlements that found one go as one
	// group.
	n := 0
free:
	for n < len(ops) {
		select {
		case slots <- struct{}{}:
			n++
		default:
			break free
		}
	}
	if n > 0 {
		send(ops[:n])
	}
	if rest := ops[n:]; len(rest) > 0 {
		a.sys.goTask(func() {
			for i := range rest {
				slots <- struct{}{}
				send(rest[i : i+1])
			}
		})
	}
}
