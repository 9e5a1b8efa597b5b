package transport

import (
	"slices"
	"strconv"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"
)

// SettleQueueLength is how many groups of acks and nacks may wait for a
// consumer's settle worker. Each slot costs memory in every idle session, so owners
// that settle many deliveries at once wait for room instead.
const SettleQueueLength = 256

// ConsumerOptions configures OpenConsumer.
type ConsumerOptions struct {
	Queue string
	// Prefetch is the per-consumer basic.qos prefetch count (never global:
	// quorum queues reject global QoS).
	Prefetch int
	// Generation is stamped on every Delivery of this consumer.
	Generation uint64
	// Tag is the consumer tag; it must be unique on the connection.
	Tag string
}

// ConsumerHandler receives a consumer's events. OnDelivery is called from one
// goroutine, in delivery order, only after Consumer.Start, and must not block. OnClose is called once,
// after the last OnDelivery, with the reason the consumer ended (nil when
// Close was called).
type ConsumerHandler struct {
	OnDelivery func(Delivery)
	OnClose    func(err error)
}

// Consumer is one channel with basic.qos and basic.consume on one queue, and
// a worker goroutine that sends basic.ack and basic.nack in order. It starts
// three goroutines (delivery pump, settle worker, close watcher) that end
// when the channel closes.
//
// The settle worker takes every queued settlement in one pass. A run of them
// that covers exactly the oldest unsettled deliveries of the channel goes out
// as one frame with the multiple flag. Any other run goes out as one frame per
// delivery. The frames of one pass leave in one write.
type Consumer struct {
	ch         *amqp.Channel
	corked     *corkedConn
	generation uint64
	settles    chan []settleOp

	// unsettled holds the broker tags delivered on the channel and not yet
	// settled, in increasing order. Only the pump appends and only the
	// settle worker removes.
	tagsMu    sync.Mutex
	unsettled []uint64

	mu      sync.Mutex
	stopped bool
	stop    chan struct{}

	startOnce sync.Once
	started   chan struct{}
}

type settleOp struct {
	tag     uint64
	ack     bool
	requeue bool
	done    func(error)
}

// OpenConsumer opens a channel on conn, checks that the queue exists, sets
// the prefetch and starts consuming. It blocks for those round trips. A
// missing queue is an error wrapping ErrQueueNotFound.
func OpenConsumer(conn *Connection, opts ConsumerOptions, h ConsumerHandler) (*Consumer, error) {
	ch, err := conn.raw.Channel()
	if err != nil {
		return nil, classify("channel.open", "", err)
	}
	if _, err := ch.QueueDeclarePassive(opts.Queue, false, false, false, false, nil); err != nil {
		_ = ch.Close()
		return nil, classify("queue.declare", "queue", err)
	}
	if opts.Prefetch > 0 {
		if err := ch.Qos(opts.Prefetch, 0, false); err != nil {
			_ = ch.Close()
			return nil, classify("basic.qos", "", err)
		}
	}
	if opts.Tag == "" {
		opts.Tag = "rmqrouter-" + strconv.FormatUint(opts.Generation, 10)
	}

	// Register the listeners before basic.consume, so that nothing the
	// broker sends is missed.
	closes := ch.NotifyClose(make(chan *amqp.Error, 1))
	cancels := ch.NotifyCancel(make(chan string, 4))
	deliveries, err := ch.Consume(opts.Queue, opts.Tag, false, false, false, false, nil)
	if err != nil {
		_ = ch.Close()
		return nil, classify("basic.consume", "queue", err)
	}

	c := &Consumer{
		ch:         ch,
		corked:     conn.corked,
		generation: opts.Generation,
		settles:    make(chan []settleOp, SettleQueueLength),
		stop:       make(chan struct{}),
		started:    make(chan struct{}),
	}
	pumpDone := make(chan struct{})
	go c.pump(deliveries, h.OnDelivery, pumpDone)
	go c.settle()
	go c.watch(closes, cancels, pumpDone, h.OnClose)
	return c, nil
}

// Generation returns the generation given to OpenConsumer.
func (c *Consumer) Generation() uint64 { return c.generation }

// Start lets deliveries flow to OnDelivery. Until it is called they wait in
// amqp091-go's buffer, so the owner can record the Consumer before the first
// delivery reaches it. Close and a closing channel start the flow too, so
// that it can drain.
func (c *Consumer) Start() {
	c.startOnce.Do(func() { close(c.started) })
}

func (c *Consumer) pump(deliveries <-chan amqp.Delivery, onDelivery func(Delivery), done chan<- struct{}) {
	defer close(done)
	<-c.started
	for d := range deliveries {
		c.tagsMu.Lock()
		c.unsettled = append(c.unsettled, d.DeliveryTag)
		c.tagsMu.Unlock()
		onDelivery(newDelivery(&d, c.generation))
	}
}

// maxSettleBatch bounds how many queued settlements one pass of the settle
// worker takes.
const maxSettleBatch = 1024

func (c *Consumer) settle() {
	batch := make([]settleOp, 0, 64)
	for {
		select {
		case ops := <-c.settles:
			batch = append(batch[:0], ops...)
		more:
			for len(batch) < maxSettleBatch {
				select {
				case ops := <-c.settles:
					batch = append(batch, ops...)
				default:
					break more
				}
			}
			c.settleBatch(batch)
			clear(batch)
		case <-c.stop:
			for {
				select {
				case ops := <-c.settles:
					for _, op := range ops {
						op.done(newError("basic.ack", ErrBrokerUnavailable, true))
					}
				default:
					return
				}
			}
		}
	}
}

// settleBatch sends the frames of ops, in order, holding the connection's
// writes so that they leave together, and then calls every done.
func (c *Consumer) settleBatch(ops []settleOp) {
	if len(ops) > 1 && c.corked != nil {
		c.corked.hold()
	}
	errs := make([]error, len(ops))
	for start := 0; start < len(ops); {
		// A run is a sequence of settlements of the same kind.
		end := start + 1
		for end < len(ops) && ops[end].ack == ops[start].ack && ops[end].requeue == ops[start].requeue {
			end++
		}
		c.settleRun(ops[start:end], errs[start:end])
		start = end
	}
	if len(ops) > 1 && c.corked != nil {
		c.corked.release()
	}
	for i, op := range ops {
		op.done(errs[i])
	}
}

// settleRun settles ops, all acks or all nacks with the same requeue flag.
func (c *Consumer) settleRun(ops []settleOp, errs []error) {
	frame := func(tag uint64, multiple bool) error {
		var err error
		if ops[0].ack {
			err = c.ch.Ack(tag, multiple)
		} else {
			err = c.ch.Nack(tag, multiple, ops[0].requeue)
		}
		if err != nil {
			return classify("basic.ack", "", err)
		}
		return nil
	}

	if len(ops) > 1 {
		if last, ok := c.takeOldest(ops); ok {
			err := frame(last, true)
			for i := range errs {
				errs[i] = err
			}
			return
		}
	}
	for i, op := range ops {
		c.forget(op.tag)
		errs[i] = frame(op.tag, false)
	}
}

// takeOldest reports whether the tags of ops are exactly the oldest
// unsettled deliveries, so that one frame with the multiple flag settles
// them and nothing else. If so it removes them and returns the highest.
func (c *Consumer) takeOldest(ops []settleOp) (uint64, bool) {
	tags := make([]uint64, len(ops))
	for i, op := range ops {
		tags[i] = op.tag
	}
	slices.Sort(tags)
	c.tagsMu.Lock()
	defer c.tagsMu.Unlock()
	if len(tags) > len(c.unsettled) || !slices.Equal(tags, c.unsettled[:len(tags)]) {
		return 0, false
	}
	c.unsettled = slices.Delete(c.unsettled, 0, len(tags))
	return tags[len(tags)-1], true
}

// forget removes tag from the unsettled deliveries.
func (c *Consumer) forget(tag uint64) {
	c.tagsMu.Lock()
	defer c.tagsMu.Unlock()
	if i, ok := slices.BinarySearch(c.unsettled, tag); ok {
		c.unsettled = slices.Delete(c.unsettled, i, i+1)
	}
}

// watch waits for the channel to close or the broker to cancel the consumer,
// closes the channel in the second case, and reports once.
func (c *Consumer) watch(closes <-chan *amqp.Error, cancels <-chan string, pumpDone <-chan struct{}, onClose func(error)) {
	var reason error
	select {
	case e, ok := <-closes:
		if ok && e != nil {
			reason = classify("channel", "queue", e)
		}
	case _, ok := <-cancels:
		if ok {
			reason = &Error{Op: "basic.cancel", Kind: ErrQueueNotFound, Reason: "the broker cancelled the consumer (queue deleted?)"}
		}
		_ = c.ch.Close()
		for range closes {
		}
	}
	for range cancels {
	}
	c.Start()
	<-pumpDone
	c.mu.Lock()
	c.stopped = true
	close(c.stop)
	c.mu.Unlock()
	if onClose != nil {
		onClose(reason)
	}
}

// Settlement is one delivery to settle, by its broker tag. Done is called
// once, from the settle worker, after the frame was written or with an
// error. It must not block.
type Settlement struct {
	Tag  uint64
	Done func(error)
}

// Ack queues basic.ack for a broker delivery tag of this consumer's channel.
// It does not block.
func (c *Consumer) Ack(tag uint64, done func(error)) {
	c.Settle([]Settlement{{Tag: tag, Done: done}}, true, false)
}

// Nack queues basic.nack for one delivery, with or without requeue; see Ack.
func (c *Consumer) Nack(tag uint64, requeue bool, done func(error)) {
	c.Settle([]Settlement{{Tag: tag, Done: done}}, false, requeue)
}

// Settle queues basic.ack (ack true) or basic.nack for every settlement of
// ss as one group. The settle worker takes a group together, so deliveries
// acknowledged in one request can share one frame. Settle does not block:
// when the queue is full, every Done gets an error.
func (c *Consumer) Settle(ss []Settlement, ack, requeue bool) {
	if len(ss) == 0 {
		return
	}
	ops := make([]settleOp, len(ss))
	for i, st := range ss {
		ops[i] = settleOp{tag: st.Tag, ack: ack, requeue: requeue, done: st.Done}
	}
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		for _, op := range ops {
			op.done(newError("basic.ack", ErrBrokerUnavailable, true))
		}
		return
	}
	select {
	case c.settles <- ops:
		c.mu.Unlock()
	default:
		c.mu.Unlock()
		for _, op := range ops {
			op.done(&Error{Op: "basic.ack", Kind: ErrBrokerUnavailable, Reason: "too many acknowledgements waiting", Retryable: true})
		}
	}
}

// Close closes the channel without blocking for the broker; the broker
// requeues every unacknowledged delivery. OnClose follows with nil.
func (c *Consumer) Close() {
	c.Start()
	go func() { _ = c.ch.Close() }()
}
