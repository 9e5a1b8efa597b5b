package transport

import (
	"strconv"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"
)

// SettleQueueLength is how many acks and nacks may wait for a consumer's
// settle worker. Each slot costs memory in every idle session, so owners
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
type Consumer struct {
	ch         *amqp.Channel
	generation uint64
	settles    chan settleOp

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
		generation: opts.Generation,
		settles:    make(chan settleOp, SettleQueueLength),
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
		onDelivery(newDelivery(&d, c.generation))
	}
}

func (c *Consumer) settle() {
	for {
		select {
		case op := <-c.settles:
			var err error
			if op.ack {
				err = c.ch.Ack(op.tag, false)
			} else {
				err = c.ch.Nack(op.tag, false, op.requeue)
			}
			if err != nil {
				op.done(classify("basic.ack", "", err))
			} else {
				op.done(nil)
			}
		case <-c.stop:
			for {
				select {
				case op := <-c.settles:
					op.done(newError("basic.ack", ErrBrokerUnavailable, true))
				default:
					return
				}
			}
		}
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

// Ack queues basic.ack for a broker delivery tag of this consumer's channel.
// done is called once, from the settle worker, after the frame was written or
// with an error. It does not block.
func (c *Consumer) Ack(tag uint64, done func(error)) {
	c.enqueue(settleOp{tag: tag, ack: true, done: done})
}

// Nack queues basic.nack for one delivery, with or without requeue; see Ack.
func (c *Consumer) Nack(tag uint64, requeue bool, done func(error)) {
	c.enqueue(settleOp{tag: tag, requeue: requeue, done: done})
}

func (c *Consumer) enqueue(op settleOp) {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		op.done(newError("basic.ack", ErrBrokerUnavailable, true))
		return
	}
	select {
	case c.settles <- op:
		c.mu.Unlock()
	default:
		c.mu.Unlock()
		op.done(&Error{Op: "basic.ack", Kind: ErrBrokerUnavailable, Reason: "too many acknowledgements waiting", Retryable: true})
	}
}

// Close closes the channel without blocking for the broker; the broker
// requeues every unacknowledged delivery. OnClose follows with nil.
func (c *Consumer) Close() {
	c.Start()
	go func() { _ = c.ch.Close() }()
}
