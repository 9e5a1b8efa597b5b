package router

import (
	"bufio"
	"encoding/json"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/rmqrouter/rmqrouter/transport"
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
	s, _ := newConfiguredServer(Config{PublishTimeout: time.Second, IDFormat: format}, b)
	return s, b
}

// idRequest is one request of the id tests.
type idRequest struct {
	name string
	send func(s *Server) *fasthttp.Response
}

// publishesWithoutIDs are one publish of each kind without ids; each
// publishes one message.
var publishesWithoutIDs = []idRequest{
	{"object", func(s *Server) *fasthttp.Response {
		return serve(s, "POST", "/v1/publish", guestAuth(), []byte(`{"exchange":"","routing_key":"q","payload":{"order":1}}`), nil)
	}},
	{"string", func(s *Server) *fasthttp.Response {
		return serve(s, "POST", "/v1/publish", guestAuth(), []byte(`{"exchange":"","routing_key":"q","payload":"x"}`), nil)
	}},
	{"raw json", func(s *Server) *fasthttp.Response {
		return serve(s, "POST", "/v1/exchanges/amq.default/publish?routing_key=q", guestAuth(), []byte(`{"order":1}`),
			map[string]string{"Content-Type": "application/json"})
	}},
	{"raw", func(s *Server) *fasthttp.Response {
		return serve(s, "POST", "/v1/exchanges/amq.default/publish?routing_key=q", guestAuth(), []byte("x"), nil)
	}},
	{"raw text", func(s *Server) *fasthttp.Response {
		return serve(s, "POST", "/v1/exchanges/amq.default/publish?routing_key=q", guestAuth(), []byte("x"),
			map[string]string{"Content-Type": "text/plain; charset=utf-8"})
	}},
}

var idFormats = []struct {
	format             string
	requestID, message *regexp.Regexp
}{
	{"", compactIDPattern, compactIDPattern},
	{IDsCompact, compactIDPattern, compactIDPattern},
	{IDsUUID, hexIDPattern, uuidPattern},
}

func TestGeneratedIDFormats(t *testing.T) {
	for _, c := range idFormats {
		s, b := newIDTestServer(c.format)
		seen := map[string]bool{}
		for i, req := range publishesWithoutIDs {
			r := req.send(s)
			if r.StatusCode() != 202 {
				t.Fatalf("format %q, %s: status %d: %s", c.format, req.name, r.StatusCode(), r.Body())
			}
			m := decodeBody(t, r.Body())
			requestID, _ := m["request_id"].(string)
			messageID, _ := m["message_id"].(string)
			if !c.requestID.MatchString(requestID) {
				t.Errorf("format %q, %s: request id %q does not match %s", c.format, req.name, requestID, c.requestID)
			}
			if got := string(r.Header.Peek("X-Request-ID")); got != requestID {
				t.Errorf("format %q, %s: X-Request-ID %q, body request_id %q", c.format, req.name, got, requestID)
			}
			if !c.message.MatchString(messageID) {
				t.Errorf("format %q, %s: message id %q does not match %s", c.format, req.name, messageID, c.message)
			}
			if m["correlation_id"] != requestID {
				t.Errorf("format %q, %s: correlation id %v, want the request id %q", c.format, req.name, m["correlation_id"], requestID)
			}
			if seen[requestID] || seen[messageID] {
				t.Errorf("format %q, %s: id repeated: request %q, message %q", c.format, req.name, requestID, messageID)
			}
			seen[requestID], seen[messageID] = true, true

			if len(b.published) != i+1 {
				t.Fatalf("format %q, %s: %d messages published, want %d", c.format, req.name, len(b.published), i+1)
			}
			msg := b.published[i]
			if msg.MessageID != messageID {
				t.Errorf("format %q, %s: published message id %q, response %q", c.format, req.name, msg.MessageID, messageID)
			}
			if msg.CorrelationID != requestID {
				t.Errorf("format %q, %s: published correlation id %q, response request id %q", c.format, req.name, msg.CorrelationID, requestID)
			}
		}
	}
}

func TestGeneratedIDsInBatch(t *testing.T) {
	for _, c := range idFormats {
		s, b := newIDTestServer(c.format)
		r := serve(s, "POST", "/v1/publish/batch", guestAuth(),
			[]byte(`{"messages":[{"exchange":"","routing_key":"q","payload":"a"},{"exchange":"","routing_key":"q","payload":"b"},{"exchange":"","routing_key":"q","payload":"c","message_id":"own"}]}`), nil)
		if r.StatusCode() != 207 {
			t.Fatalf("format %q: status %d: %s", c.format, r.StatusCode(), r.Body())
		}
		requestID, _ := decodeBody(t, r.Body())["request_id"].(string)
		if !c.requestID.MatchString(requestID) {
			t.Errorf("format %q: batch request id %q does not match %s", c.format, requestID, c.requestID)
		}
		if len(b.published) != 3 {
			t.Fatalf("format %q: %d messages published, want 3", c.format, len(b.published))
		}
		for i, msg := range b.published[:2] {
			if !c.message.MatchString(msg.MessageID) {
				t.Errorf("format %q, message %d: message id %q does not match %s", c.format, i, msg.MessageID, c.message)
			}
			if msg.CorrelationID != requestID {
				t.Errorf("format %q, message %d: correlation id %q, want the batch's request id %q", c.format, i, msg.CorrelationID, requestID)
			}
		}
		if b.published[0].MessageID == b.published[1].MessageID {
			t.Errorf("format %q: two messages got message id %q", c.format, b.published[0].MessageID)
		}
		if b.published[2].MessageID != "own" {
			t.Errorf("format %q: message id %q, want the client's", c.format, b.published[2].MessageID)
		}
	}
}

// TestGeneratedRequestIDWithoutPublish checks the request id of responses that
// publish nothing: an error, a health check and a request the HTTP server
// could not parse.
func TestGeneratedRequestIDWithoutPublish(t *testing.T) {
	for _, c := range idFormats {
		s, _ := newIDTestServer(c.format)
		responses := map[string]*fasthttp.Response{
			"health":    serve(s, "GET", "/health", "", nil, nil),
			"not found": serve(s, "GET", "/v1/nowhere", guestAuth(), nil, nil),
			"bad json":  serve(s, "POST", "/v1/publish", guestAuth(), []byte(`{`), nil),
		}
		for name, r := range responses {
			if id := string(r.Header.Peek("X-Request-ID")); !c.requestID.MatchString(id) {
				t.Errorf("format %q, %s: X-Request-ID %q does not match %s", c.format, name, id, c.requestID)
			}
		}

		addr := serveLoopback(t, s)
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write([]byte("POST /v1/publish HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		reply, err := http.ReadResponse(bufio.NewReader(conn), nil)
		_ = conn.Close()
		if err != nil {
			t.Fatal(err)
		}
		if reply.StatusCode != 400 {
			t.Errorf("format %q, unparsable request: status %d, want 400", c.format, reply.StatusCode)
		}
		if id := reply.Header.Get("X-Request-ID"); !c.requestID.MatchString(id) {
			t.Errorf("format %q, unparsable request: X-Request-ID %q does not match %s", c.format, id, c.requestID)
		}
	}
}

func TestUnknownIDFormatLogged(t *testing.T) {
	s, logs := newConfiguredServer(Config{PublishTimeout: time.Second, IDFormat: "UUID"}, &fakeBackend{})
	if !strings.Contains(logs.String(), `"id_format":"UUID"`) {
		t.Errorf("no error logged for id format UUID: %s", logs.String())
	}
	if id := string(serve(s, "GET", "/health", "", nil, nil).Header.Peek("X-Request-ID")); !compactIDPattern.MatchString(id) {
		t.Errorf("X-Request-ID %q, want a compact id", id)
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

// TestGeneratedPropertiesSize checks the length of the properties of a
// message published without ids, as docs/operations.md gives them. RabbitMQ
// 3.10 stored messages with more than 64 bytes of properties about a fifth
// slower in the bench, so compact ids keep a JSON publish within 64 bytes.
func TestGeneratedPropertiesSize(t *testing.T) {
	want := map[string]map[string]int{
		IDsCompact: {"object": 62, "string": 56, "raw json": 62, "raw": 70, "raw text": 71},
		IDsUUID:    {"object": 98, "string": 92, "raw json": 98, "raw": 106, "raw text": 107},
	}
	for format, sizes := range want {
		s, b := newIDTestServer(format)
		for i, req := range publishesWithoutIDs {
			if r := req.send(s); r.StatusCode() != 202 {
				t.Fatalf("format %q, %s: status %d: %s", format, req.name, r.StatusCode(), r.Body())
			}
			if got := propertiesSize(b.published[i]); got != sizes[req.name] {
				t.Errorf("format %q, %s: properties take %d bytes, want %d", format, req.name, got, sizes[req.name])
			}
		}
	}
}
