package transport

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// PublishIDHeader is the message header that carries a router publish id. A
// basic.return carries no delivery tag, so a channel matches it with its
// publishing by exchange, routing key and message id. While one mandatory
// publishing with those three is waiting for its confirm, another one with the
// same three gets a publish id in this header, and its return is matched by
// that id. The header takes a message's properties past 64 bytes, which
// RabbitMQ 3.10 stores about a fifth slower (docs/operations.md), so it is not
// put on every message.
const PublishIDHeader = "x-rmqrouter-publish-id"

// publishIDPrefix makes publish ids unique across router processes.
var publishIDPrefix = func() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}()

var publishIDCounter atomic.Uint64

// newPublishID returns a process-unique publish id.
func newPublishID() string {
	return publishIDPrefix + "-" + strconv.FormatUint(publishIDCounter.Add(1), 10)
}

// Message is a publishing with its routing. Body and Headers belong to the
// Message once it is passed to a channel: callers must not change them.
type Message struct {
	Exchange   string
	RoutingKey string
	Mandatory  bool
	// PublishID is set when a channel needs it to match a return (see
	// PublishIDHeader). A later attempt to publish the message keeps it and is
	// matched by it, even on a channel where its key is free.
	PublishID string

	ContentType   string
	DeliveryMode  uint8 // 1 transient, 2 persistent
	Priority      uint8
	CorrelationID string
	MessageID     string
	Expiration    string // milliseconds, as text
	Type          string
	Timestamp     time.Time
	Headers       map[string]any
	Body          []byte
}

// publishing returns the AMQP publishing of m with publishID in PublishIDHeader,
// or without that header when publishID is empty. The id is passed in rather
// than read from m.PublishID, because a resend on another channel may set that
// field while this channel's writer still encodes m.
func (m *Message) publishing(publishID string) amqp.Publishing {
	headers := amqp.Table(m.Headers)
	_, reserved := m.Headers[PublishIDHeader]
	if publishID != "" || reserved {
		headers = make(amqp.Table, len(m.Headers)+1)
		for k, v := range m.Headers {
			if k != PublishIDHeader {
				headers[k] = v
			}
		}
		if publishID != "" {
			headers[PublishIDHeader] = publishID
		}
	}
	return amqp.Publishing{
		Headers:       headers,
		ContentType:   m.ContentType,
		DeliveryMode:  m.DeliveryMode,
		Priority:      m.Priority,
		CorrelationId: m.CorrelationID,
		MessageId:     m.MessageID,
		Expiration:    m.Expiration,
		Type:          m.Type,
		Timestamp:     m.Timestamp,
		Body:          m.Body,
	}
}

// Delivery is a message received from a queue.
type Delivery struct {
	BrokerTag     uint64
	Generation    uint64
	Exchange      string
	RoutingKey    string
	Redelivered   bool
	ContentType   string
	CorrelationID string
	MessageID     string
	Priority      uint8
	DeliveryMode  uint8
	Timestamp     time.Time
	Headers       map[string]any
	Body          []byte
}

func newDelivery(d *amqp.Delivery, generation uint64) Delivery {
	return Delivery{
		BrokerTag:     d.DeliveryTag,
		Generation:    generation,
		Exchange:      d.Exchange,
		RoutingKey:    d.RoutingKey,
		Redelivered:   d.Redelivered,
		ContentType:   d.ContentType,
		CorrelationID: d.CorrelationId,
		MessageID:     d.MessageId,
		Priority:      d.Priority,
		DeliveryMode:  d.DeliveryMode,
		Timestamp:     d.Timestamp,
		Headers:       map[string]any(d.Headers),
		Body:          d.Body,
	}
}
