package transport

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Publish is one publishing handed to a ConfirmChannel. Done is called exactly
// once, from a goroutine of the channel: with nil after basic.ack, or with an
// error that wraps ErrUnroutable, ErrNacked, ErrNotSent, ErrOutcomeUnknown,
// ErrExchangeNotFound or ErrAccessRefused. Done must not block.
type Publish struct {
	Msg *Message
	// Deadline, when set, is the time after which the publishing is not
	// sent any more (its caller has stopped waiting); Done then receives
	// ErrNotSent.
	Deadline time.Time
	Done     func(err error)

	returned  *Error
	abandoned bool // replied to by Abandon; a late confirm is ignored

	// publishID is the id a return of this publishing carries, set under the
	// channel's lock. Empty for a mandatory publishing means that a return
	// finds it by returnKey instead.
	publishID string
}

// returnKey holds the fields of a basic.return that identify the publishing it
// returns, apart from its headers and body.
type returnKey struct {
	exchange, routingKey, messageID string
}

func (m *Message) returnKey() returnKey {
	return returnKey{exchange: m.Exchange, routingKey: m.RoutingKey, messageID: m.MessageID}
}

// ConfirmChannel is a channel in confirm mode that pipelines many
// publishings: one writer goroutine sends them in order and one monitor
// goroutine matches each confirm with its publishing by delivery tag, and
// each return by exchange, routing key and message id, or by the publish id
// header where those three do not tell two waiting publishings apart. Both
// goroutines end when the channel closes, and every Publish still waiting then
// receives exactly one Done call.
type ConfirmChannel struct {
	id      uint64
	ch      *amqp.Channel
	corked  *corkedConn
	queue   chan *Publish
	stopped chan struct{}
	ended   chan struct{}
	onClose func(err error)

	inFlight atomic.Int64

	mu      sync.Mutex
	pending map[uint64]*Publish
	// Delivery tags of waiting mandatory publishings, for matching returns.
	// At most one per returnKey is in byKey, and the others are in byID.
	byKey  map[returnKey]uint64
	byID   map[string]uint64
	closed bool
}

// ChannelOptions sizes a ConfirmChannel.
type ChannelOptions struct {
	// QueueLength is how many publishings may wait for the writer.
	QueueLength int
	// NotifyBuffer is the buffer of the confirm listener.
	NotifyBuffer int
	// ReturnBuffer is the buffer of the return listener. It is small because
	// returns come only for unroutable mandatory publishings and an
	// amqp.Return takes a few hundred bytes. When it is full, amqp091-go's
	// reader waits for the monitor, which drains it continuously. amqp091-go
	// v1.17.0 drops a notification that waits 5 s, so the monitor must not
	// stall: Done callbacks must not block.
	ReturnBuffer int
}

// OpenConfirmChannel opens a channel on conn, puts it in confirm mode and
// starts its writer and monitor goroutines. id identifies the channel to its
// owner (see ID) and must be unique within the process. onClose is called once, after
// every pending Publish was answered, with the reason the channel closed (nil
// when Close was called). It blocks for the channel.open and confirm.select
// round trips.
func OpenConfirmChannel(conn *Connection, id uint64, opts ChannelOptions, onClose func(err error)) (*ConfirmChannel, error) {
	if opts.QueueLength <= 0 {
		opts.QueueLength = 256
	}
	if opts.NotifyBuffer <= 0 {
		opts.NotifyBuffer = 1024
	}
	if opts.ReturnBuffer <= 0 {
		opts.ReturnBuffer = 64
	}
	ch, err := conn.raw.Channel()
	if err != nil {
		return nil, classify("channel.open", "", err)
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, classify("confirm.select", "", err)
	}

	c := &ConfirmChannel{
		id:      id,
		ch:      ch,
		corked:  conn.corked,
		queue:   make(chan *Publish, opts.QueueLength),
		stopped: make(chan struct{}),
		ended:   make(chan struct{}),
		onClose: onClose,
		pending: make(map[uint64]*Publish),
		byKey:   make(map[returnKey]uint64),
		byID:    make(map[string]uint64),
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, opts.NotifyBuffer))
	returns := ch.NotifyReturn(make(chan amqp.Return, opts.ReturnBuffer))
	closes := ch.NotifyClose(make(chan *amqp.Error, 1))

	writerDone := make(chan struct{})
	go c.write(writerDone)
	go c.monitor(confirms, returns, closes, writerDone)
	return c, nil
}

// ID returns the id given to OpenConfirmChannel.
func (c *ConfirmChannel) ID() uint64 { return c.id }

// InFlight returns the number of publishings queued or waiting for a confirm.
func (c *ConfirmChannel) InFlight() int { return int(c.inFlight.Load()) }

// EnqueueBatch hands every publishing of ps to the writer, in order, or
// none of them when the queue lacks room or the channel is closed. It does
// not block.
func (c *ConfirmChannel) EnqueueBatch(ps []*Publish) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	// Only the writer takes from the queue while c.mu is held here, so
	// the free room can only grow between this check and the sends.
	if c.closed || cap(c.queue)-len(c.queue) < len(ps) {
		return false
	}
	for _, p := range ps {
		c.queue <- p
	}
	c.inFlight.Add(int64(len(ps)))
	return true
}

// Enqueue hands p to the writer without blocking. It returns false when the
// channel is closed or its queue is full; p.Done is then not called.
func (c *ConfirmChannel) Enqueue(p *Publish) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	select {
	case c.queue <- p:
		c.inFlight.Add(1)
		return true
	default:
		return false
	}
}

// Closed reports whether the channel has closed or is closing.
func (c *ConfirmChannel) Closed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// Close closes the AMQP channel. Publishings without a confirm receive
// ErrOutcomeUnknown and queued ones ErrNotSent. It blocks until the channel's
// goroutines have ended or timeout passes.
func (c *ConfirmChannel) Close(timeout time.Duration) {
	_ = c.ch.Close()
	select {
	case <-c.ended:
	case <-time.After(timeout):
	}
}

func (c *ConfirmChannel) finish(p *Publish, err error) {
	c.inFlight.Add(-1)
	p.Done(err)
}

// Abandon calls Done with err now for every publishing of the channel, queued or
// waiting for a confirm, without closing the channel. A confirm that arrives
// later is ignored. It is used when the broker blocks the connection: the
// writes are stuck in the socket and the outcome is unknown until the alarm
// clears, which may take far longer than a request may wait.
func (c *ConfirmChannel) Abandon(err error) {
	for drained := false; !drained; {
		select {
		case p := <-c.queue:
			c.finish(p, err)
		default:
			drained = true
		}
	}

	c.mu.Lock()
	var waiting []*Publish
	for _, p := range c.pending {
		if !p.abandoned {
			p.abandoned = true
			waiting = append(waiting, p)
		}
	}
	c.mu.Unlock()
	for _, p := range waiting {
		c.finish(p, err)
	}
}

// write sends queued publishings in order until the channel stops, then
// answers what is still queued with ErrNotSent.
func (c *ConfirmChannel) write(done chan<- struct{}) {
	defer close(done)
	for {
		select {
		case p := <-c.queue:
			if len(c.queue) == 0 {
				// Let handlers that are already runnable queue their
				// publishings first, so that more of them share a write.
				runtime.Gosched()
			}
			c.sendQueued(p)
		case <-c.stopped:
			for {
				select {
				case p := <-c.queue:
					c.finish(p, newError("basic.publish", ErrNotSent, true))
				default:
					return
				}
			}
		}
	}
}

// maxWriteBatch bounds how many queued publishings share one write.
const maxWriteBatch = 256

// sendQueued sends p and whatever else is queued behind it, holding the
// connection's writes back so that they leave in one system call.
func (c *ConfirmChannel) sendQueued(p *Publish) {
	if len(c.queue) == 0 || c.corked == nil {
		c.send(p)
		return
	}
	c.corked.hold()
	defer c.corked.release()
	c.send(p)
	for i := 1; i < maxWriteBatch; i++ {
		select {
		case p := <-c.queue:
			c.send(p)
		default:
			return
		}
	}
}

func (c *ConfirmChannel) send(p *Publish) {
	if !p.Deadline.IsZero() && time.Now().After(p.Deadline) {
		c.finish(p, &Error{Op: "basic.publish", Kind: ErrNotSent, Reason: "request deadline passed before sending", Retryable: true})
		return
	}

	// The writer is the only goroutine that publishes on this channel, so the
	// next sequence number is the delivery tag this publishing will get.
	tag := c.ch.GetNextPublishSeqNo()
	m := p.Msg
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		c.finish(p, newError("basic.publish", ErrNotSent, true))
		return
	}
	c.pending[tag] = p
	if m.Mandatory {
		c.trackReturn(p, tag)
	}
	publishID := p.publishID
	c.mu.Unlock()

	err := c.ch.PublishWithContext(context.Background(), m.Exchange, m.RoutingKey, m.Mandatory, false, m.publishing(publishID))
	if err == nil {
		return
	}

	// amqp091-go returns ErrClosed before writing when the channel is
	// already closed; any other error may have left part of the frames on
	// the wire.
	kind := ErrOutcomeUnknown
	if errors.Is(err, amqp.ErrClosed) {
		kind = ErrNotSent
	}
	if q := c.take(tag); q != nil {
		c.finish(q, &Error{Op: "basic.publish", Kind: kind, Reason: err.Error(), Retryable: true})
	}
}

// trackReturn records how a return will find p, which gets delivery tag tag.
// The first waiting publishing with a returnKey is found by that key. One that
// shares the key with another waiting publishing gets a publish id header, as
// does one that got a publish id on an earlier attempt. c.mu must be held.
func (c *ConfirmChannel) trackReturn(p *Publish, tag uint64) {
	m := p.Msg
	if m.PublishID == "" {
		key := m.returnKey()
		if _, inUse := c.byKey[key]; !inUse {
			c.byKey[key] = tag
			return
		}
		m.PublishID = newPublishID()
	}
	p.publishID = m.PublishID
	c.byID[p.publishID] = tag
}

func (c *ConfirmChannel) take(tag uint64) *Publish {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.pending[tag]
	if !ok {
		return nil
	}
	delete(c.pending, tag)
	switch {
	case p.publishID != "":
		if c.byID[p.publishID] == tag {
			delete(c.byID, p.publishID)
		}
	case p.Msg.Mandatory:
		if key := p.Msg.returnKey(); c.byKey[key] == tag {
			delete(c.byKey, key)
		}
	}
	if p.abandoned {
		return nil
	}
	return p
}

// monitor matches confirms and returns with pending publishings until the
// channel closes, then answers every publishing still pending.
func (c *ConfirmChannel) monitor(confirms <-chan amqp.Confirmation, returns <-chan amqp.Return, closes <-chan *amqp.Error, writerDone <-chan struct{}) {
	defer close(c.ended)

	var closeErr *amqp.Error
	for closes != nil {
		select {
		case r, ok := <-returns:
			if !ok {
				returns = nil
				continue
			}
			c.handleReturn(&r)
		case cf, ok := <-confirms:
			if !ok {
				confirms = nil
				continue
			}
			c.handleConfirm(cf, returns)
		case e, ok := <-closes:
			if ok {
				closeErr = e
			}
			closes = nil
		}
	}

	// Stop the writer first, so that no publishing is added to pending
	// while the rest is answered.
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	close(c.stopped)
	<-writerDone

	// amqp091-go closes the confirm and return listeners during the same
	// shutdown; acks that arrived before the close are still buffered.
	for confirms != nil || returns != nil {
		select {
		case r, ok := <-returns:
			if !ok {
				returns = nil
				continue
			}
			c.handleReturn(&r)
		case cf, ok := <-confirms:
			if !ok {
				confirms = nil
				continue
			}
			c.handleConfirm(cf, returns)
		}
	}

	var reason error
	if closeErr != nil {
		reason = classify("channel", "", closeErr)
	}
	c.failPending(closeErr)
	_ = c.ch.Close()
	if c.onClose != nil {
		c.onClose(reason)
	}
}

func (c *ConfirmChannel) handleConfirm(cf amqp.Confirmation, returns <-chan amqp.Return) {
	// The broker sends basic.return before the basic.ack of the same
	// publishing, and amqp091-go hands both over from one reader goroutine in
	// frame order. Any return for this tag is therefore already buffered.
	for drained := false; !drained && returns != nil; {
		select {
		case r, ok := <-returns:
			if !ok {
				drained = true
				continue
			}
			c.handleReturn(&r)
		default:
			drained = true
		}
	}

	p := c.take(cf.DeliveryTag)
	if p == nil {
		return
	}
	switch {
	case p.returned != nil:
		c.finish(p, p.returned)
	case cf.Ack:
		c.finish(p, nil)
	default:
		c.finish(p, &Error{Op: "basic.publish", Kind: ErrNacked, Retryable: true})
	}
}

func (c *ConfirmChannel) handleReturn(r *amqp.Return) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var tag uint64
	var ok bool
	if id, has := r.Headers[PublishIDHeader].(string); has {
		tag, ok = c.byID[id]
	} else {
		tag, ok = c.byKey[returnKey{exchange: r.Exchange, routingKey: r.RoutingKey, messageID: r.MessageId}]
	}
	if !ok {
		return
	}
	if p := c.pending[tag]; p != nil {
		p.returned = &Error{Op: "basic.publish", Kind: ErrUnroutable, Code: int(r.ReplyCode), Reason: r.ReplyText}
	}
}

var closedOnEntity = regexp.MustCompile(`(?:no exchange|access to exchange) '((?:[^'\\]|\\.)*)'`)

// failPending answers publishings that got no confirm before the channel
// closed. When the broker closed the channel because of one publishing (a
// missing exchange, a refused permission), that publishing receives the
// matching error; the broker ignores every frame after it, so later ones were
// never processed and receive ErrNotSent. Earlier ones may or may not be
// stored and receive ErrOutcomeUnknown.
func (c *ConfirmChannel) failPending(closeErr *amqp.Error) {
	c.mu.Lock()
	tags := make([]uint64, 0, len(c.pending))
	for tag := range c.pending {
		tags = append(tags, tag)
	}
	c.mu.Unlock()
	sort.Slice(tags, func(i, j int) bool { return tags[i] < tags[j] })

	var culpritKind error
	var culpritExchange string
	if closeErr != nil && (closeErr.Code == amqp.NotFound || closeErr.Code == amqp.AccessRefused) {
		if m := closedOnEntity.FindStringSubmatch(closeErr.Reason); m != nil {
			culpritExchange = m[1]
			culpritKind = ErrExchangeNotFound
			if closeErr.Code == amqp.AccessRefused {
				culpritKind = ErrAccessRefused
			}
		}
	}

	afterCulprit := false
	for _, tag := range tags {
		p := c.take(tag)
		if p == nil {
			continue
		}
		switch {
		case afterCulprit:
			c.finish(p, &Error{Op: "basic.publish", Kind: ErrNotSent, Reason: "channel closed by an earlier publishing", Retryable: true})
		case culpritKind != nil && p.Msg.Exchange == culpritExchange:
			afterCulprit = true
			c.finish(p, &Error{Op: "basic.publish", Kind: culpritKind, Code: closeErr.Code, Reason: closeErr.Reason})
		default:
			reason := "channel closed"
			if closeErr != nil {
				reason = fmt.Sprintf("channel closed: %d %s", closeErr.Code, closeErr.Reason)
			}
			c.finish(p, &Error{Op: "basic.publish", Kind: ErrOutcomeUnknown, Reason: reason, Retryable: true})
		}
	}
}
