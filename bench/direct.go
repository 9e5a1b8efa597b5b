package main

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// amqpPublisher is a direct worker with its own confirm-mode channel. With batch 1 it
// waits for the confirm of each message before publishing the next, as a router request
// does. With a larger batch it publishes batch messages and then waits for all their
// confirms, which is the pipelined baseline for the router's batch endpoint.
type amqpPublisher struct {
	conn  *amqp.Connection
	topo  topology
	msg   amqp.Publishing
	batch int
	// ids makes every message carry a new message id, correlation id and
	// timestamp, the properties the router sets.
	ids     bool
	ch      *amqp.Channel
	pending []*amqp.DeferredConfirmation

	returns  sync.WaitGroup // the goroutine counting basic.return
	returned *atomic.Int64
}

func newAMQPPublisher(conn *amqp.Connection, topo topology, msg amqp.Publishing, batch int, ids bool, returned *atomic.Int64) (*amqpPublisher, error) {
	p := &amqpPublisher{conn: conn, topo: topo, msg: msg, batch: batch, ids: ids, returned: returned}
	if err := p.open(); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *amqpPublisher) open() error {
	ch, err := p.conn.Channel()
	if err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return fmt.Errorf("enable publisher confirms: %w", err)
	}

	// The library closes the return channel when the AMQP channel closes, which ends
	// this goroutine. close waits for it, so the count is complete.
	returns := ch.NotifyReturn(make(chan amqp.Return, 64))
	p.returns.Add(1)
	go func() {
		defer p.returns.Done()
		for range returns {
			p.returned.Add(1)
		}
	}()

	p.ch = ch
	return nil
}

func (p *amqpPublisher) step(rc *roundCtx, st *workerStats) {
	if p.ch == nil || p.ch.IsClosed() {
		p.ch = nil
		if err := p.open(); err != nil {
			rc.r.recordError(st, "amqp channel: "+amqpErrorKind(err))
			rc.pause()
			return
		}
	}

	began := time.Now()
	p.pending = p.pending[:0]
	for range p.batch {
		msg := p.msg
		if p.ids {
			msg.MessageId, msg.CorrelationId, msg.Timestamp = newID(), newID(), time.Now()
		}
		dc, err := p.ch.PublishWithDeferredConfirmWithContext(rc.hard, p.topo.exchange, p.topo.routingKey, true, false, msg)
		if err != nil {
			rc.r.recordError(st, "amqp publish: "+amqpErrorKind(err))
			break
		}
		p.pending = append(p.pending, dc)
	}

	acked := 0
	for _, dc := range p.pending {
		ok, err := dc.WaitContext(rc.hard)
		switch {
		case err != nil:
			rc.r.recordError(st, "amqp confirm timeout")
		case !ok:
			rc.r.recordError(st, "amqp nack")
		default:
			acked++
		}
	}
	if acked > 0 {
		rc.r.recordSuccess(st, began, acked, 0)
	}
}

// newID returns a random id of the form and length the router generates by
// default (--generated-ids compact): 16 URL-safe characters.
func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func (p *amqpPublisher) close() {
	if p.ch != nil {
		_ = p.ch.Close()
	}
	p.returns.Wait()
}

// amqpConsumer is a direct worker with its own channel, basic.qos prefetch and
// basic.consume. Each step takes the first delivery, waiting for it, plus whatever further
// deliveries are already buffered up to max, and acknowledges them with one
// basic.ack(multiple), the same unit of work as a router fetch followed by an ack.
type amqpConsumer struct {
	conn       *amqp.Connection
	queue      string
	prefetch   int
	max        int
	ch         *amqp.Channel
	deliveries <-chan amqp.Delivery
}

func newAMQPConsumer(conn *amqp.Connection, queue string, prefetch, max int) (*amqpConsumer, error) {
	c := &amqpConsumer{conn: conn, queue: queue, prefetch: prefetch, max: max}
	if err := c.open(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *amqpConsumer) open() error {
	ch, err := c.conn.Channel()
	if err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	if err := ch.Qos(c.prefetch, 0, false); err != nil {
		_ = ch.Close()
		return fmt.Errorf("set prefetch %d: %w", c.prefetch, err)
	}
	deliveries, err := ch.Consume(c.queue, "", false, false, false, false, nil)
	if err != nil {
		_ = ch.Close()
		return fmt.Errorf("consume from queue %s: %w", c.queue, err)
	}
	c.ch, c.deliveries = ch, deliveries
	return nil
}

func (c *amqpConsumer) step(rc *roundCtx, st *workerStats) {
	if c.ch == nil {
		if err := c.open(); err != nil {
			rc.r.recordError(st, "amqp channel: "+amqpErrorKind(err))
			rc.pause()
			return
		}
	}

	began := time.Now()
	var first amqp.Delivery
	var ok bool
	select {
	case first, ok = <-c.deliveries:
	case <-rc.soft.Done():
		return
	}
	if !ok {
		rc.r.recordError(st, "amqp consumer channel closed")
		c.ch = nil
		return
	}

	last, count := first.DeliveryTag, 1
drain:
	for count < c.max {
		select {
		case d, ok := <-c.deliveries:
			if !ok {
				break drain
			}
			last = d.DeliveryTag
			count++
		default:
			break drain
		}
	}

	if err := c.ch.Ack(last, true); err != nil {
		rc.r.recordError(st, "amqp ack: "+amqpErrorKind(err))
		return
	}
	rc.r.recordSuccess(st, began, 0, count)
}

// close closes the channel, so the broker requeues the deliveries not yet acknowledged.
func (c *amqpConsumer) close() {
	if c.ch != nil {
		_ = c.ch.Close()
	}
}

// amqpErrorKind names an amqp091-go error by its reply code and text, which are few and
// fixed, so that errors group into a small number of report lines.
func amqpErrorKind(err error) string {
	var amqpErr *amqp.Error
	if errors.As(err, &amqpErr) {
		return fmt.Sprintf("%d %s", amqpErr.Code, amqpErr.Reason)
	}
	return err.Error()
}
