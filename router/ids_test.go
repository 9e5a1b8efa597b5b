package router

import (
	"encoding/json"
	"log/slog"
	"regexp"
	"testing"
	"time"

	"github.com/rmqrouter/rmqrouter/metrics"
	"github.com/rmqrouter/rmqrouter/security"
	"github.com/rmqrouter/rmqrouter/transport"
	"github.com/valyala/fasthttp"
)

var (
	compactIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{16}$`)
	uuidPattern      = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	hexIDPattern     = regexp.MustCompile(`^[0-9a-f]{32}$`)
)

func decodeBody(t *testing.T, body []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	return m
}

func newIDTestServer(format string) (*Server, *fakeBackend) {
	b := &fakeBackend{}
	log := slog.New(slog.DiscardHandler)
	return New(Config{PublishTimeout: time.Second, IDFormat: format}, b, security.NewStore(10), metrics.New(), log, nil), b
}

// publishWithoutIDs sends one publish of each kind without ids and returns
// the responses.
func publishWithoutIDs(s *Server) map[string]*fasthttp.Response {
	return map[string]*fasthttp.Response{
		"object": serve(s, "POST", "/v1/publish", guestAuth(), []byte(`{"exchange":"","routing_key":"q","payload":{"order":1}}`), nil),
		"string": serve(s, "POST", "/v1/publish", guestAuth(), []byte(`{"exchange":"","routing_key":"q","payload":"x"}`), nil),
		"raw": serve(s, "POST", "/v1/exchanges/amq.default/publish?routing_key=q", guestAuth(), []byte(`{"order":1}`),
			map[string]string{"Content-Type": "application/json"}),
	}
}

func TestGeneratedIDFormats(t *testing.T) {
	cases := []struct {
		format             string
		requestID, message *regexp.Regexp
	}{
		{"", compactIDPattern, compactIDPattern},
		{IDsCompact, compactIDPattern, compactIDPattern},
		{IDsUUID, hexIDPattern, uuidPattern},
	}
	for _, c := range cases {
		s, b := newIDTestServer(c.format)
		responses := publishWithoutIDs(s)
		seen := map[string]bool{}
		for kind, r := range responses {
			if r.StatusCode() != 202 {
				t.Fatalf("format %q, %s: status %d: %s", c.format, kind, r.StatusCode(), r.Body())
			}
			m := decodeBody(t, r.Body())
			requestID, _ := m["request_id"].(string)
			messageID, _ := m["message_id"].(string)
			if !c.requestID.MatchString(requestID) {
				t.Errorf("format %q, %s: request id %q does not match %s", c.format, kind, requestID, c.requestID)
			}
			if got := string(r.Header.Peek("X-Request-ID")); got != requestID {
				t.Errorf("format %q, %s: X-Request-ID %q, body request_id %q", c.format, kind, got, requestID)
			}
			if !c.message.MatchString(messageID) {
				t.Errorf("format %q, %s: message id %q does not match %s", c.format, kind, messageID, c.message)
			}
			if m["correlation_id"] != requestID {
				t.Errorf("format %q, %s: correlation id %v, want the request id %q", c.format, kind, m["correlation_id"], requestID)
			}
			if seen[requestID] || seen[messageID] || requestID == messageID {
				t.Errorf("format %q, %s: id repeated: request %q, message %q", c.format, kind, requestID, messageID)
			}
			seen[requestID], seen[messageID] = true, true
		}
		for _, msg := range b.published {
			if !seen[msg.MessageID] || !seen[msg.CorrelationID] {
				t.Errorf("format %q: published ids %q and %q differ from the responses", c.format, msg.MessageID, msg.CorrelationID)
			}
		}
	}
}

func TestClientIDsKept(t *testing.T) {
	s, b := newIDTestServer(IDsCompact)
	r := serve(s, "POST", "/v1/publish", guestAuth(),
		[]byte(`{"exchange":"","routing_key":"q","payload":"x","message_id":"b9e1d996-f220-46fe-b70d-93aca9c33de9"}`),
		map[string]string{"X-Request-ID": "1c-42"})
	if r.StatusCode() != 202 {
		t.Fatalf("status %d: %s", r.StatusCode(), r.Body())
	}
	msg := b.published[0]
	if msg.MessageID != "b9e1d996-f220-46fe-b70d-93aca9c33de9" {
		t.Errorf("message id %q, want the client's", msg.MessageID)
	}
	if msg.CorrelationID != "1c-42" {
		t.Errorf("correlation id %q, want the client's request id", msg.CorrelationID)
	}
}

// propertiesSize returns the length of the AMQP basic properties that
// amqp091-go encodes for msg: the flag word and each property that is set.
func propertiesSize(msg *transport.Message) int {
	shortString := func(s string) int {
		if s == "" {
			return 0
		}
		return 1 + len(s)
	}
	n := 2 + shortString(msg.ContentType) + shortString(msg.CorrelationID) + shortString(msg.MessageID) +
		shortString(msg.Expiration) + shortString(msg.Type)
	if msg.DeliveryMode > 0 {
		n++
	}
	if msg.Priority > 0 {
		n++
	}
	if !msg.Timestamp.IsZero() {
		n += 8
	}
	if len(msg.Headers) > 0 {
		n += 1 << 20 // any table is counted as too large; these tests send none
	}
	return n
}

// TestGeneratedPropertiesFit checks that a JSON-typed message published
// without ids keeps its properties within 64 bytes. RabbitMQ 3.10 stored
// messages with longer properties about a fifth slower in the bench
// (docs/operations.md); UUID ids take 92 bytes.
func TestGeneratedPropertiesFit(t *testing.T) {
	for _, c := range []struct {
		format string
		fits   bool
	}{{IDsCompact, true}, {IDsUUID, false}} {
		s, b := newIDTestServer(c.format)
		for kind, r := range publishWithoutIDs(s) {
			if r.StatusCode() != 202 {
				t.Fatalf("format %q, %s: status %d: %s", c.format, kind, r.StatusCode(), r.Body())
			}
		}
		if len(b.published) != 3 {
			t.Fatalf("format %q: %d messages published, want 3", c.format, len(b.published))
		}
		for _, msg := range b.published {
			size := propertiesSize(msg)
			if fits := size <= 64; fits != c.fits {
				t.Errorf("format %q, content type %s: properties take %d bytes; within 64 is %v, want %v", c.format, msg.ContentType, size, fits, c.fits)
			}
		}
	}
}
