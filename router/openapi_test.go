package router_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/rmqrouter/rmqrouter/actors"
	"github.com/rmqrouter/rmqrouter/docs"
	"github.com/rmqrouter/rmqrouter/internal/testenv"
	"github.com/rmqrouter/rmqrouter/transport"
)

// openAPIFile is docs/openapi.yaml, relative to this package.
const openAPIFile = "../docs/openapi.yaml"

// loadOpenAPIDocument loads docs/openapi.yaml and fails the test unless it is
// a valid OpenAPI 3 document.
func loadOpenAPIDocument(t *testing.T) *openapi3.T {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromFile(openAPIFile)
	if err != nil {
		t.Fatalf("load %s: %v", openAPIFile, err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		t.Fatalf("%s is not a valid OpenAPI document: %v", openAPIFile, err)
	}
	return doc
}

// newOpenAPIRouter returns a router that finds the document's operations on
// requests to baseURL.
func newOpenAPIRouter(t *testing.T, doc *openapi3.T, baseURL string) routers.Router {
	t.Helper()
	doc.Servers = openapi3.Servers{{URL: baseURL}}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatalf("build a router from %s: %v", openAPIFile, err)
	}
	return router
}

// validateOpenAPIResponse checks one response against the operation that
// router finds for req. Undocumented status codes are errors.
func validateOpenAPIResponse(router routers.Router, req *http.Request, status int, header http.Header, body []byte) error {
	route, pathParams, err := router.FindRoute(req)
	if err != nil {
		return fmt.Errorf("no documented operation: %w", err)
	}
	input := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request:    req,
			PathParams: pathParams,
			Route:      route,
		},
		Status:  status,
		Header:  header,
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	input.SetBodyBytes(body)
	return openapi3filter.ValidateResponse(context.Background(), input)
}

// validateOpenAPIRequest checks that req, with body, is a valid request of
// the document. Credentials are not checked.
func validateOpenAPIRequest(router routers.Router, req *http.Request, body []byte) error {
	route, pathParams, err := router.FindRoute(req)
	if err != nil {
		return fmt.Errorf("no documented operation: %w", err)
	}
	req.Body = io.NopCloser(bytes.NewReader(body))
	return openapi3filter.ValidateRequest(context.Background(), &openapi3filter.RequestValidationInput{
		Request:    req,
		PathParams: pathParams,
		Route:      route,
		Options:    &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, MultiError: true},
	})
}

// openAPICase is one request of the conformance test and what it must get.
type openAPICase struct {
	name    string
	method  string
	path    string // with the query string
	user    string // Basic credentials; none when empty
	pass    string
	headers map[string]string
	body    []byte
	status  int
	code    string // the expected error code of a non-2xx response
	// validRequest marks a request that the document must accept as well.
	validRequest bool
}

// openAPIChecker sends cases to a Stack and checks every response against
// the document. It records which operations were exercised.
type openAPIChecker struct {
	t       *testing.T
	stack   *testenv.Stack
	router  routers.Router
	covered map[string]bool
	count   *int // requests sent, for unique request ids
}

func newOpenAPIChecker(t *testing.T, stack *testenv.Stack) *openAPIChecker {
	doc := loadOpenAPIDocument(t)
	return &openAPIChecker{t: t, stack: stack, router: newOpenAPIRouter(t, doc, stack.URL), covered: map[string]bool{}, count: new(int)}
}

// in returns a checker that reports to t, a subtest, and shares the
// coverage and the request count of k.
func (k *openAPIChecker) in(t *testing.T) *openAPIChecker {
	c := *k
	c.t = t
	return &c
}

// send runs c and returns the response after checking its status, its
// error code, its request id and its conformance to the document.
func (k *openAPIChecker) send(c openAPICase) testenv.Response {
	k.t.Helper()
	*k.count++
	requestID := fmt.Sprintf("openapi-%d", *k.count)
	headers := map[string]string{"X-Request-ID": requestID}
	for name, value := range c.headers {
		headers[name] = value
	}

	req, err := http.NewRequest(c.method, k.stack.URL+c.path, nil)
	if err != nil {
		k.t.Fatalf("%s: build request: %v", c.name, err)
	}
	for name, value := range headers {
		req.Header[name] = []string{value}
	}
	if c.user != "" {
		req.SetBasicAuth(c.user, c.pass)
	}
	route, _, err := k.router.FindRoute(req)
	if err != nil {
		k.t.Fatalf("%s: %s %s is not in %s: %v", c.name, c.method, c.path, openAPIFile, err)
	}
	k.covered[route.Method+" "+route.Path] = true
	if c.validRequest {
		if err := validateOpenAPIRequest(k.router, req.Clone(context.Background()), c.body); err != nil {
			k.t.Errorf("%s: the document rejects a request that the router accepts: %v", c.name, err)
		}
	}

	resp := k.stack.Do(c.method, c.path, c.user, c.pass, c.body, headers)
	if resp.Status != c.status {
		k.t.Errorf("%s: status %d, want %d; body %s", c.name, resp.Status, c.status, resp.Body)
		return resp
	}
	if c.code != "" {
		var e struct {
			Error     string `json:"error"`
			RequestID string `json:"request_id"`
		}
		if err := json.Unmarshal(resp.Body, &e); err != nil {
			k.t.Errorf("%s: error body is not JSON: %v; body %s", c.name, err, resp.Body)
		}
		if e.Error != c.code {
			k.t.Errorf("%s: error %q, want %q; body %s", c.name, e.Error, c.code, resp.Body)
		}
		if e.RequestID != requestID {
			k.t.Errorf("%s: request_id %q, want %q", c.name, e.RequestID, requestID)
		}
	}
	if resp.Header.Get("X-Request-ID") != requestID {
		k.t.Errorf("%s: X-Request-ID %q, want %q", c.name, resp.Header.Get("X-Request-ID"), requestID)
	}
	if err := validateOpenAPIResponse(k.router, req, resp.Status, resp.Header, resp.Body); err != nil {
		k.t.Errorf("%s: %s %s answered %d, which does not match %s: %v\nbody: %s",
			c.name, c.method, c.path, resp.Status, openAPIFile, err, resp.Body)
	}
	return resp
}

// fetched sends a fetch case and returns the delivery tag and the decoded
// body of its 200 answer.
func (k *openAPIChecker) fetched(c openAPICase) (uint64, map[string]any) {
	k.t.Helper()
	resp := k.send(c)
	var m map[string]any
	if err := json.Unmarshal(resp.Body, &m); err != nil {
		k.t.Fatalf("%s: fetch answer is not JSON: %v; body %s", c.name, err, resp.Body)
	}
	tag, ok := m["delivery_tag"].(float64)
	if !ok || tag < 1 {
		k.t.Fatalf("%s: fetch answer without a delivery tag: %s", c.name, resp.Body)
	}
	return uint64(tag), m
}

// openAPIOperations are the documented operations that
// TestOpenAPIResponsesMatchDocument must exercise. The explicit sessions
// (/v1/sessions...) are documented too but not exercised here.
var openAPIOperations = []string{
	"POST /v1/publish",
	"POST /v1/exchanges/{exchange}/publish",
	"POST /v1/fetch",
	"POST /v1/ack/{delivery_tag}",
	"POST /v1/reject/{delivery_tag}",
	"GET /health",
	"GET /health/live",
	"GET /ready",
	"GET /health/ready",
	"GET /health/startup",
	"GET /metrics",
	"GET /openapi.yaml",
}

// checkCoverage fails the test for each operation of openAPIOperations that
// the document lacks or that no case exercised.
func (k *openAPIChecker) checkCoverage(doc *openapi3.T) {
	k.t.Helper()
	for _, op := range openAPIOperations {
		method, path, _ := strings.Cut(op, " ")
		if item := doc.Paths.Value(path); item == nil || item.GetOperation(method) == nil {
			k.t.Errorf("%s does not document %s", openAPIFile, op)
			continue
		}
		if !k.covered[op] {
			k.t.Errorf("no request of this test exercises %s", op)
		}
	}
}

func jsonBody(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("encode %v: %v", v, err)
	}
	return b
}

func TestOpenAPIDocumentIsValid(t *testing.T) {
	loadOpenAPIDocument(t)
	file, err := os.ReadFile(openAPIFile)
	if err != nil {
		t.Fatalf("read %s: %v", openAPIFile, err)
	}
	if !bytes.Equal(file, docs.OpenAPI) {
		t.Fatalf("the embedded docs.OpenAPI differs from %s; rebuild", openAPIFile)
	}
}

// TestOpenAPIValidatorRejectsMismatch makes sure the validation used below
// fails on responses that break the document, so that a passing
// conformance test means something.
func TestOpenAPIValidatorRejectsMismatch(t *testing.T) {
	doc := loadOpenAPIDocument(t)
	router := newOpenAPIRouter(t, doc, "http://127.0.0.1:8000")
	jsonHeader := func(requestID bool) http.Header {
		h := http.Header{"Content-Type": {"application/json"}}
		if requestID {
			h.Set("X-Request-ID", "r1")
		}
		return h
	}
	accepted := `{"status":"accepted","request_id":"r1","exchange":"","routing_key":"q","message_id":"m","correlation_id":"r1"}`
	cases := []struct {
		name   string
		method string
		path   string
		status int
		header http.Header
		body   string
	}{
		{"publish 202 without message_id", "POST", "/v1/publish", 202, jsonHeader(true),
			`{"status":"accepted","request_id":"r1","exchange":"","routing_key":"q","correlation_id":"r1"}`},
		{"publish 202 with another status word", "POST", "/v1/publish", 202, jsonHeader(true),
			strings.Replace(accepted, `"accepted"`, `"queued"`, 1)},
		{"publish 202 without X-Request-ID", "POST", "/v1/publish", 202, jsonHeader(false), accepted},
		{"publish undocumented status", "POST", "/v1/publish", 201, jsonHeader(true), accepted},
		{"publish 202 as text", "POST", "/v1/publish", 202, http.Header{"Content-Type": {"text/plain"}, "X-Request-ID": {"r1"}}, accepted},
		{"fetch 404 without request_id", "POST", "/v1/fetch", 404, jsonHeader(true),
			`{"error":"queue_not_found","detail":"Queue \"q\" does not exist."}`},
		{"fetch 200 with a string tag", "POST", "/v1/fetch", 200, jsonHeader(true),
			`{"delivery_tag":"1","body":{},"routing_key":"q","exchange":"","correlation_id":"","message_id":"","content_type":"","headers":{},"redelivered":false}`},
		{"ack 200 without delivery_tag", "POST", "/v1/ack/1", 200, jsonHeader(true), `{"status":"acknowledged"}`},
		{"503 without Retry-After", "POST", "/v1/fetch", 503, jsonHeader(true),
			`{"error":"shutting_down","detail":"stopping","request_id":"r1"}`},
		{"ready 200 with not_ready", "GET", "/health/ready", 200, jsonHeader(true), `{"status":"not_ready","checks":{}}`},
	}
	for _, c := range cases {
		req, err := http.NewRequest(c.method, "http://127.0.0.1:8000"+c.path, nil)
		if err != nil {
			t.Fatalf("%s: build request: %v", c.name, err)
		}
		if err := validateOpenAPIResponse(router, req, c.status, c.header, []byte(c.body)); err == nil {
			t.Errorf("%s: validation passed, want a mismatch", c.name)
		}
	}

	req, err := http.NewRequest("POST", "http://127.0.0.1:8000/v1/publish", nil)
	if err != nil {
		t.Fatalf("build request: %v", err)
	}
	if err := validateOpenAPIResponse(router, req, 202, jsonHeader(true), []byte(accepted)); err != nil {
		t.Errorf("a correct 202 failed validation: %v", err)
	}
}

// TestOpenAPIResponsesMatchDocument sends real requests to the router and
// the local RabbitMQ and validates every answer against docs/openapi.yaml.
func TestOpenAPIResponsesMatchDocument(t *testing.T) {
	b := testenv.NewBroker(t)
	queue := b.Queue(testenv.Name("openapi-q"))
	exchange := b.Exchange(testenv.Name("openapi-x"), "direct")
	b.Bind(queue, exchange, "openapi-key")
	missingExchange := testenv.Name("openapi-missing-x")
	missingQueue := testenv.Name("openapi-missing-q")
	missingVhost := testenv.Name("openapi-missing-vhost")

	s := testenv.NewStack(t, testenv.Options{})
	k := newOpenAPIChecker(t, s)
	asJSON := map[string]string{"Content-Type": "application/json"}
	const g = "guest"
	// ran counts the subtests that ran; -run may filter some out.
	ran := 0
	published := false

	t.Run("operations", func(t *testing.T) {
		k := k.in(t)
		ran++
		for _, path := range []string{"/health", "/health/live", "/ready", "/health/ready", "/health/startup", "/metrics"} {
			k.send(openAPICase{name: "GET " + path, method: "GET", path: path, status: 200, validRequest: true})
		}
		r := k.send(openAPICase{name: "GET /openapi.yaml", method: "GET", path: "/openapi.yaml", status: 200, validRequest: true})
		if !bytes.Equal(r.Body, docs.OpenAPI) {
			t.Errorf("/openapi.yaml does not serve the embedded docs/openapi.yaml")
		}
	})

	t.Run("publish", func(t *testing.T) {
		k := k.in(t)
		ran++
		published = true
		k.send(openAPICase{name: "JSON object to the default exchange", method: "POST", path: "/v1/publish", user: g, pass: g, headers: asJSON,
			body:   jsonBody(t, map[string]any{"exchange": "", "routing_key": queue, "payload": map[string]any{"order": 42}}),
			status: 202, validRequest: true})
		k.send(openAPICase{name: "text with every field", method: "POST", path: "/v1/publish", user: g, pass: g, headers: asJSON,
			body: jsonBody(t, map[string]any{
				"exchange": exchange, "routing_key": "openapi-key", "payload": "Заказ 42",
				"mandatory": true, "persistence": 1, "correlation_id": "corr-1", "message_id": "msg-1",
				"headers": map[string]string{"source": "1c"}, "priority": 5, "vhost": "/",
			}),
			status: 202, validRequest: true})
		k.send(openAPICase{name: "raw text to amq.default", method: "POST", path: "/v1/exchanges/amq.default/publish?routing_key=" + queue, user: g, pass: g,
			headers: map[string]string{"Content-Type": "text/plain", "X-Message-Id": "raw-1", "X-Correlation-Id": "corr-raw",
				"X-Priority": "3", "X-Expiration": "60000", "X-Persistent": "false", "X-Header-Source": "erp"},
			body: []byte("a,b,c"), status: 202, validRequest: true})
		k.send(openAPICase{name: "raw bytes to an exchange", method: "POST", path: "/v1/exchanges/" + exchange + "/publish?routing_key=openapi-key&mandatory=true", user: g, pass: g,
			headers: map[string]string{"Content-Type": "application/octet-stream"},
			body:    []byte{0xff, 0xfe, 0x00, 0x01}, status: 202, validRequest: true})

		k.send(openAPICase{name: "truncated JSON", method: "POST", path: "/v1/publish", user: g, pass: g, headers: asJSON,
			body: []byte(`{"exchange":`), status: 400, code: "invalid_json"})
		k.send(openAPICase{name: "control character in routing key", method: "POST", path: "/v1/publish", user: g, pass: g, headers: asJSON,
			body:   jsonBody(t, map[string]any{"exchange": "", "routing_key": "a\u0001b", "payload": "x"}),
			status: 400, code: "invalid_name"})
		k.send(openAPICase{name: "no credentials", method: "POST", path: "/v1/publish", headers: asJSON,
			body: jsonBody(t, map[string]any{"exchange": "", "routing_key": queue, "payload": "x"}), status: 401, code: "authentication_required"})
		k.send(openAPICase{name: "wrong password", method: "POST", path: "/v1/publish", user: g, pass: "not-the-password", headers: asJSON,
			body: jsonBody(t, map[string]any{"exchange": "", "routing_key": queue, "payload": "x"}), status: 401, code: "authentication_failed"})
		k.send(openAPICase{name: "missing vhost", method: "POST", path: "/v1/publish", user: g, pass: g,
			headers: map[string]string{"Content-Type": "application/json", "X-Vhost": missingVhost},
			body:    jsonBody(t, map[string]any{"exchange": "", "routing_key": queue, "payload": "x"}), status: 403, code: "access_refused"})
		k.send(openAPICase{name: "missing exchange", method: "POST", path: "/v1/publish", user: g, pass: g, headers: asJSON,
			body: jsonBody(t, map[string]any{"exchange": missingExchange, "routing_key": "k", "payload": "x"}), status: 404, code: "exchange_not_found"})
		k.send(openAPICase{name: "raw to a missing exchange", method: "POST", path: "/v1/exchanges/" + missingExchange + "/publish?routing_key=k", user: g, pass: g,
			body: []byte("x"), status: 404, code: "exchange_not_found"})
		k.send(openAPICase{name: "priority out of range in Russian", method: "POST", path: "/v1/publish", user: g, pass: g,
			headers: map[string]string{"Content-Type": "application/json", "Accept-Language": "ru-RU,ru;q=0.9,en;q=0.8"},
			body:    jsonBody(t, map[string]any{"exchange": "", "routing_key": queue, "payload": "x", "priority": 300}), status: 422, code: "validation_error"})
		k.send(openAPICase{name: "raw X-Priority out of range", method: "POST", path: "/v1/exchanges/amq.default/publish?routing_key=" + queue, user: g, pass: g,
			headers: map[string]string{"X-Priority": "256"}, body: []byte("x"), status: 422, code: "validation_error"})
		k.send(openAPICase{name: "unroutable", method: "POST", path: "/v1/publish", user: g, pass: g, headers: asJSON,
			body: jsonBody(t, map[string]any{"exchange": exchange, "routing_key": "openapi-unbound", "payload": "x"}), status: 422, code: "unroutable"})
		k.send(openAPICase{name: "raw unroutable", method: "POST", path: "/v1/exchanges/" + exchange + "/publish?routing_key=openapi-unbound", user: g, pass: g,
			body: []byte("x"), status: 422, code: "unroutable"})
	})

	t.Run("consume", func(t *testing.T) {
		k := k.in(t)
		ran++
		if !published {
			t.Skip("consumes the messages of the publish subtest, which did not run")
		}
		fetch := func(name string, timeout float64, status int) openAPICase {
			return openAPICase{name: name, method: "POST", path: "/v1/fetch", user: g, pass: g, headers: asJSON,
				body: jsonBody(t, map[string]any{"queue": queue, "timeout": timeout}), status: status, validRequest: true}
		}
		settle := func(name, verb string, tag uint64, body []byte, status int, code string) openAPICase {
			return openAPICase{name: name, method: "POST", path: fmt.Sprintf("/v1/%s/%d", verb, tag), user: g, pass: g, headers: asJSON,
				body: body, status: status, code: code, validRequest: status == 200}
		}

		// The session prefetches, so a requeued message comes back after
		// the ones it already holds: tell the messages apart by content.
		tags := map[string]uint64{}
		for i := 1; i <= 4; i++ {
			tag, m := k.fetched(fetch(fmt.Sprintf("fetch message %d", i), 10, 200))
			switch {
			case m["message_id"] == "msg-1" && m["body"] == "Заказ 42":
				tags["text"] = tag
			case m["message_id"] == "raw-1" && m["body"] == "a,b,c":
				tags["raw text"] = tag
			case m["body_encoding"] == "base64":
				tags["raw bytes"] = tag
			default:
				if _, ok := m["body"].(map[string]any); ok {
					tags["object"] = tag
				}
			}
		}
		if len(tags) != 4 {
			t.Fatalf("fetched messages %v, want the object, the text, the raw text and the raw bytes", tags)
		}

		k.send(settle("ack", "ack", tags["object"], nil, 200, ""))
		k.send(settle("reject without body", "reject", tags["raw text"], nil, 200, ""))
		k.send(settle("reject without requeue", "reject", tags["raw bytes"], []byte(`{"requeue":false}`), 200, ""))
		k.send(settle("reject and requeue", "reject", tags["text"], []byte(`{"requeue":true}`), 200, ""))
		again, m := k.fetched(fetch("fetch the requeued text", 10, 200))
		if m["message_id"] != "msg-1" || m["redelivered"] != true {
			t.Errorf("after requeue got message_id %v redelivered %v, want msg-1 redelivered true", m["message_id"], m["redelivered"])
		}
		k.send(settle("ack the redelivery", "ack", again, nil, 200, ""))
		first := tags["object"]

		k.send(fetch("fetch from the empty queue", 0.3, 204))
		k.send(settle("ack twice", "ack", first, nil, 404, "delivery_tag_not_found"))
		k.send(settle("ack tag zero", "ack", 0, nil, 422, "validation_error"))
		k.send(settle("reject with a string requeue", "reject", first, []byte(`{"requeue":"yes"}`), 422, "validation_error"))
		k.send(settle("reject with truncated JSON", "reject", first, []byte(`{`), 400, "invalid_json"))
		k.send(openAPICase{name: "ack without credentials", method: "POST", path: fmt.Sprintf("/v1/ack/%d", first), status: 401, code: "authentication_required"})

		k.send(openAPICase{name: "fetch from a missing queue", method: "POST", path: "/v1/fetch", user: g, pass: g, headers: asJSON,
			body: jsonBody(t, map[string]any{"queue": missingQueue, "timeout": 1}), status: 404, code: "queue_not_found"})
		k.send(openAPICase{name: "fetch timeout out of range", method: "POST", path: "/v1/fetch", user: g, pass: g, headers: asJSON,
			body: jsonBody(t, map[string]any{"queue": queue, "timeout": 301}), status: 422, code: "validation_error"})
		k.send(openAPICase{name: "fetch an empty queue name", method: "POST", path: "/v1/fetch", user: g, pass: g, headers: asJSON,
			body: jsonBody(t, map[string]any{"queue": ""}), status: 400, code: "invalid_name"})
		k.send(openAPICase{name: "fetch in a missing vhost", method: "POST", path: "/v1/fetch", user: g, pass: g,
			headers: map[string]string{"Content-Type": "application/json", "X-Vhost": missingVhost},
			body:    jsonBody(t, map[string]any{"queue": queue, "timeout": 1}), status: 403, code: "access_refused"})
		k.send(openAPICase{name: "fetch without credentials", method: "POST", path: "/v1/fetch", headers: asJSON,
			body: jsonBody(t, map[string]any{"queue": queue}), status: 401, code: "authentication_required"})
	})

	// A second router whose publish timeout has passed before the broker
	// can answer, and whose actor system is then stopped.
	t.Run("unavailable", func(t *testing.T) {
		ran++
		s2 := testenv.NewStack(t, testenv.Options{PublishTimeout: time.Nanosecond})
		k2 := newOpenAPIChecker(t, s2)
		publish := jsonBody(t, map[string]any{"exchange": "", "routing_key": queue, "payload": "x"})
		k2.send(openAPICase{name: "publish timeout", method: "POST", path: "/v1/publish", user: g, pass: g, headers: asJSON,
			body: publish, status: 504, code: "confirm_timeout"})

		// NOTE: a broker connection whose dial finishes after Shutdown is
		// never closed, so wait for the dial that the publish started.
		testenv.Eventually(t, 10*time.Second, "the broker connection of the second router", func() bool {
			r := s2.Do("GET", "/metrics", "", "", nil, nil)
			return strings.Contains(string(r.Body), "\nrmq_middleware_active_connections 1\n")
		})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s2.System.Shutdown(ctx)
		k2.send(openAPICase{name: "publish while stopping", method: "POST", path: "/v1/publish", user: g, pass: g, headers: asJSON,
			body: publish, status: 503, code: "shutting_down"})
		k2.send(openAPICase{name: "raw publish while stopping", method: "POST", path: "/v1/exchanges/amq.default/publish?routing_key=" + queue, user: g, pass: g,
			body: []byte("x"), status: 503, code: "shutting_down"})
		k2.send(openAPICase{name: "fetch while stopping", method: "POST", path: "/v1/fetch", user: g, pass: g, headers: asJSON,
			body: jsonBody(t, map[string]any{"queue": queue, "timeout": 1}), status: 503, code: "shutting_down"})
		k2.send(openAPICase{name: "reject while stopping", method: "POST", path: "/v1/reject/1", user: g, pass: g,
			status: 503, code: "shutting_down"})
	})

	// A third router whose only broker address refuses connections: failed
	// dials open the circuit breaker of the credentials.
	t.Run("circuit open", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("listen: %v", err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		s3 := testenv.NewStack(t, testenv.Options{Actors: actors.Config{
			Endpoints: []transport.Endpoint{{Scheme: "amqp", Host: "127.0.0.1", Port: port}},
		}})
		k3 := newOpenAPIChecker(t, s3)
		publish := jsonBody(t, map[string]any{"exchange": "", "routing_key": queue, "payload": "x"})
		code := ""
		for i := 1; i <= 20 && code != "circuit_open"; i++ {
			r := k3.send(openAPICase{name: fmt.Sprintf("publish to a refused broker %d", i), method: "POST", path: "/v1/publish",
				user: g, pass: g, headers: asJSON, body: publish, status: 503})
			var e struct {
				Error string `json:"error"`
			}
			if err := json.Unmarshal(r.Body, &e); err != nil {
				t.Fatalf("error body is not JSON: %v; body %s", err, r.Body)
			}
			if e.Error != "broker_unavailable" && e.Error != "circuit_open" {
				t.Fatalf("publish to a refused broker: error %q, want broker_unavailable or circuit_open", e.Error)
			}
			code = e.Error
		}
		if code != "circuit_open" {
			t.Fatalf("the circuit breaker did not open after 20 failed dials")
		}
		k3.send(openAPICase{name: "fetch with an open breaker", method: "POST", path: "/v1/fetch", user: g, pass: g, headers: asJSON,
			body: jsonBody(t, map[string]any{"queue": queue, "timeout": 1}), status: 503, code: "circuit_open"})
	})

	if ran == 4 {
		k.checkCoverage(loadOpenAPIDocument(t))
	}
}
