package transport

import (
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Topology checks that exchanges exist before publishings go to them, so a
// request naming a missing exchange fails on a channel of its own instead of
// making the broker close a shared publishing channel. Positive answers are
// cached for a TTL; concurrent checks of the same name share one round trip.
// A Topology is safe for concurrent use.
type Topology struct {
	conn *Connection
	ttl  time.Duration

	mu    sync.Mutex
	known map[string]time.Time
	calls map[string]*topologyCall

	// rpcMu serializes passive declares on the check channel. A failed
	// check closes that channel, and the next one opens a new one.
	rpcMu sync.Mutex
	ch    *amqp.Channel
}

type topologyCall struct {
	done chan struct{}
	err  error
}

// NewTopology returns a Topology that checks on conn and trusts a positive
// answer for ttl.
func NewTopology(conn *Connection, ttl time.Duration) *Topology {
	return &Topology{conn: conn, ttl: ttl, known: make(map[string]time.Time), calls: make(map[string]*topologyCall)}
}

// ExchangeKnown reports whether exchange was seen to exist within the TTL.
// The default exchange ("") and the "amq." exchanges always exist.
func (t *Topology) ExchangeKnown(exchange string) bool {
	if exchange == "" || strings.HasPrefix(exchange, "amq.") {
		return true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	at, ok := t.known[exchange]
	return ok && time.Since(at) < t.ttl
}

// Forget drops exchange from the cache, after the broker reported it missing.
func (t *Topology) Forget(exchange string) {
	t.mu.Lock()
	delete(t.known, exchange)
	t.mu.Unlock()
}

// CheckExchange declares exchange passively. It returns nil when it exists,
// or an error wrapping ErrExchangeNotFound, ErrAccessRefused or
// ErrBrokerUnavailable. It blocks for one round trip to the broker, or waits
// for a check of the same name already under way.
func (t *Topology) CheckExchange(exchange string) error {
	if t.ExchangeKnown(exchange) {
		return nil
	}

	t.mu.Lock()
	if call, ok := t.calls[exchange]; ok {
		t.mu.Unlock()
		<-call.done
		return call.err
	}
	call := &topologyCall{done: make(chan struct{})}
	t.calls[exchange] = call
	t.mu.Unlock()

	call.err = t.declarePassive(exchange)

	t.mu.Lock()
	delete(t.calls, exchange)
	if call.err == nil {
		t.known[exchange] = time.Now()
	}
	t.mu.Unlock()
	close(call.done)
	return call.err
}

func (t *Topology) declarePassive(exchange string) error {
	t.rpcMu.Lock()
	defer t.rpcMu.Unlock()
	if t.ch == nil || t.ch.IsClosed() {
		ch, err := t.conn.raw.Channel()
		if err != nil {
			return classify("channel.open", "", err)
		}
		t.ch = ch
	}
	err := t.ch.ExchangeDeclarePassive(exchange, "", false, false, false, false, nil)
	if err != nil {
		t.ch = nil
		return classify("exchange.declare", "exchange", err)
	}
	return nil
}

// Close closes the check channel.
func (t *Topology) Close() {
	t.rpcMu.Lock()
	defer t.rpcMu.Unlock()
	if t.ch != nil {
		_ = t.ch.Close()
		t.ch = nil
	}
}
