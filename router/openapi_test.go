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
	"POST /v1/publish/batch",
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
	"GET /v1/admin/supervision",
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
	batchBody := `{"request_id":"r1","accepted":1,"failed":1,"results":[` +
		`{"index":0,"status":202,"message_id":"m","correlation_id":"r1"},` +
		`{"index":1,"status":422,"error":"unroutable","detail":"returned"}]}`
	snapshot := `{"connections":[{"user":"erp","vhost":"/","running":false,"restarts":2,` +
		`"breaker":{"state":"open","failures_in_window":0,"opened_at":"2026-12-04T20:51:10.965057589Z","times_opened":1}` +
		`,"bulkhead":{"in_flight":1,"waiting":0,"rejected":3}}],"max_connections":1000` +
		`,"taken_at":"2026-12-04T20:51:10.988258524Z"}`
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
		{"batch 207 with a string status", "POST", "/v1/publish/batch", 207, jsonHeader(true),
			strings.Replace(batchBody, `"status":202`, `"status":"202"`, 1)},
		{"batch 207 without results", "POST", "/v1/publish/batch", 207, jsonHeader(true),
			`{"request_id":"r1","accepted":0,"failed":0}`},
		{"batch 207 with empty results", "POST", "/v1/publish/batch", 207, jsonHeader(true),
			`{"request_id":"r1","accepted":0,"failed":0,"results":[]}`},
		{"batch accepted result without message_id", "POST", "/v1/publish/batch", 207, jsonHeader(true),
			strings.Replace(batchBody, `"message_id":"m",`, "", 1)},
		{"batch failed result without error", "POST", "/v1/publish/batch", 207, jsonHeader(true),
			strings.Replace(batchBody, `"error":"unroutable",`, "", 1)},
		{"batch failed result with status 200", "POST", "/v1/publish/batch", 207, jsonHeader(true),
			strings.Replace(batchBody, `"status":422`, `"status":200`, 1)},
		{"batch with status 200", "POST", "/v1/publish/batch", 200, jsonHeader(true), batchBody},
		{"supervision 200 with an unknown breaker state", "GET", "/v1/admin/supervision", 200, jsonHeader(true),
			strings.Replace(snapshot, `"state":"open"`, `"state":"tripped"`, 1)},
		{"supervision 200 without bulkhead", "GET", "/v1/admin/supervision", 200, jsonHeader(true),
			strings.Replace(snapshot, `,"bulkhead":{"in_flight":1,"waiting":0,"rejected":3}`, "", 1)},
		{"supervision 200 with a negative in_flight", "GET", "/v1/admin/supervision", 200, jsonHeader(true),
			strings.Replace(snapshot, `"in_flight":1`, `"in_flight":-1`, 1)},
		{"supervision 200 without taken_at", "GET", "/v1/admin/supervision", 200, jsonHeader(true),
			strings.Replace(snapshot, `,"taken_at":"2026-12-04T20:51:10.988258524Z"`, "", 1)},
		{"supervision 401 without WWW-Authenticate", "GET", "/v1/admin/supervision", 401, jsonHeader(true),
			`{"error":"authentication_required","detail":"token","request_id":"r1"}`},
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

	// The unchanged bodies must pass, so that each case above fails for
	// the change it makes.
	valid := []struct {
		name   string
		method string
		path   string
		status int
		body   string
	}{
		{"publish 202", "POST", "/v1/publish", 202, accepted},
		{"batch 207", "POST", "/v1/publish/batch", 207, batchBody},
		{"supervision 200", "GET", "/v1/admin/supervision", 200, snapshot},
	}
	for _, c := range valid {
		req, err := http.NewRequest(c.method, "http://127.0.0.1:8000"+c.path, nil)
		if err != nil {
			t.Fatalf("%s: build request: %v", c.name, err)
		}
		if err := validateOpenAPIResponse(router, req, c.status, jsonHeader(true), []byte(c.body)); err != nil {
			t.Errorf("a correct %s failed validation: %v", c.name, err)
		}
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

	t.Run("batch", func(t *testing.T) {
		k := k.in(t)
		ran++
		batchQueue := b.Queue(testenv.Name("openapi-batch-q"))
		message := func(fields map[string]any) map[string]any {
			m := map[string]any{"exchange": "", "routing_key": batchQueue, "payload": "x"}
			for name, value := range fields {
				m[name] = value
			}
			return m
		}
		batch := func(messages ...map[string]any) []byte {
			return jsonBody(t, map[string]any{"messages": messages})
		}

		k.send(openAPICase{name: "batch of valid messages", method: "POST", path: "/v1/publish/batch", user: g, pass: g, headers: asJSON,
			body: jsonBody(t, map[string]any{"vhost": "/", "messages": []map[string]any{
				message(map[string]any{"payload": map[string]any{"order": 41}, "message_id": "batch-41"}),
				message(map[string]any{"exchange": "amq.default", "payload": "Заказ 42",
					"mandatory": true, "persistence": 1, "correlation_id": "corr-42", "message_id": "batch-42",
					"headers": map[string]string{"source": "1c"}, "priority": 5}),
			}}),
			status: 207, validRequest: true})

		// Results of every kind: accepted, invalid before publishing, and
		// failed at the broker.
		r := k.send(openAPICase{name: "batch with mixed results", method: "POST", path: "/v1/publish/batch", user: g, pass: g, headers: asJSON,
			body: batch(
				message(map[string]any{"message_id": "batch-ok"}),
				message(map[string]any{"priority": 300}),
				message(map[string]any{"routing_key": "openapi-unbound-" + batchQueue}),
				message(map[string]any{"exchange": missingExchange}),
				message(map[string]any{"vhost": "/"}),
				message(map[string]any{"routing_key": "a\u0001b"}),
			),
			status: 207})
		var result struct {
			Accepted int `json:"accepted"`
			Failed   int `json:"failed"`
			Results  []struct {
				Index     int    `json:"index"`
				Status    int    `json:"status"`
				MessageID string `json:"message_id"`
				Error     string `json:"error"`
			} `json:"results"`
		}
		if err := json.Unmarshal(r.Body, &result); err != nil {
			t.Fatalf("batch response is not JSON: %v; body %s", err, r.Body)
		}
		want := []struct {
			status int
			code   string
		}{{202, ""}, {422, "validation_error"}, {422, "unroutable"}, {404, "exchange_not_found"}, {422, "validation_error"}, {400, "invalid_name"}}
		if len(result.Results) != len(want) {
			t.Fatalf("%d results, want %d; body %s", len(result.Results), len(want), r.Body)
		}
		if result.Accepted != 1 {
			t.Errorf("accepted %d, want 1", result.Accepted)
		}
		if result.Failed != len(want)-1 {
			t.Errorf("failed %d, want %d", result.Failed, len(want)-1)
		}
		for i, res := range result.Results {
			if res.Index != i {
				t.Errorf("result %d has index %d", i, res.Index)
			}
			if res.Status != want[i].status || res.Error != want[i].code {
				t.Errorf("result %d: status %d, error %q; want %d, %q", i, res.Status, res.Error, want[i].status, want[i].code)
			}
		}
		if result.Results[0].MessageID != "batch-ok" {
			t.Errorf("accepted result has message_id %q, want batch-ok", result.Results[0].MessageID)
		}

		k.send(openAPICase{name: "batch with a refused password", method: "POST", path: "/v1/publish/batch", user: g, pass: "not-the-password", headers: asJSON,
			body: batch(message(nil), message(nil)), status: 401, code: "authentication_failed"})
		k.send(openAPICase{name: "batch in Russian", method: "POST", path: "/v1/publish/batch", user: g, pass: g,
			headers: map[string]string{"Content-Type": "application/json", "Accept-Language": "ru"},
			body:    batch(message(map[string]any{"persistence": 3})), status: 207})
		k.send(openAPICase{name: "empty batch", method: "POST", path: "/v1/publish/batch", user: g, pass: g, headers: asJSON,
			body: batch(), status: 422, code: "validation_error"})
		tooMany := make([]map[string]any, actors.MaxBatch+1)
		for i := range tooMany {
			tooMany[i] = message(nil)
		}
		k.send(openAPICase{name: "batch over the limit", method: "POST", path: "/v1/publish/batch", user: g, pass: g, headers: asJSON,
			body: batch(tooMany...), status: 422, code: "validation_error"})
		k.send(openAPICase{name: "batch with an unknown field", method: "POST", path: "/v1/publish/batch", user: g, pass: g, headers: asJSON,
			body: jsonBody(t, map[string]any{"messages": []map[string]any{message(nil)}, "mode": "fast"}), status: 422, code: "validation_error"})
		k.send(openAPICase{name: "truncated batch", method: "POST", path: "/v1/publish/batch", user: g, pass: g, headers: asJSON,
			body: []byte(`{"messages":[`), status: 400, code: "invalid_json"})
		k.send(openAPICase{name: "batch with an invalid vhost", method: "POST", path: "/v1/publish/batch", user: g, pass: g, headers: asJSON,
			body: jsonBody(t, map[string]any{"vhost": "a\u0001b", "messages": []map[string]any{message(nil)}}), status: 400, code: "invalid_name"})
		k.send(openAPICase{name: "batch without credentials", method: "POST", path: "/v1/publish/batch", headers: asJSON,
			body: batch(message(nil)), status: 401, code: "authentication_required"})

		testenv.Eventually(t, 5*time.Second, "the 3 accepted messages in the batch queue", func() bool { return b.Count(batchQueue) == 3 })
	})

	t.Run("supervision", func(t *testing.T) {
		k := k.in(t)
		ran++
		const token = "openapi-admin-token"
		bearer := map[string]string{"Authorization": "Bearer " + token}
		k.send(openAPICase{name: "supervision without --admin-token", method: "GET", path: "/v1/admin/supervision", headers: bearer,
			status: 404, code: "not_found"})

		s4 := testenv.NewStack(t, testenv.Options{AdminToken: token})
		k4 := newOpenAPIChecker(t, s4)
		k4.covered = k.covered
		k4.send(openAPICase{name: "supervision before any request", method: "GET", path: "/v1/admin/supervision", headers: bearer,
			status: 200, validRequest: true})
		// A user whose password differs from its name, so that the check
		// below can tell them apart. A publish that is not mandatory and
		// that no queue receives stores nothing but creates the route.
		user, password := testenv.Name("openapi-admin-user"), testenv.Name("openapi-secret")
		testenv.User(t, user, password)
		k4.send(openAPICase{name: "publish that creates a route", method: "POST", path: "/v1/publish", user: user, pass: password, headers: asJSON,
			body:   jsonBody(t, map[string]any{"exchange": "", "routing_key": testenv.Name("openapi-nowhere"), "payload": "x", "mandatory": false}),
			status: 202})
		r := k4.send(openAPICase{name: "supervision with a route", method: "GET", path: "/v1/admin/supervision", headers: bearer,
			status: 200, validRequest: true})
		var snap actors.Snapshot
		if err := json.Unmarshal(r.Body, &snap); err != nil {
			t.Fatalf("snapshot is not JSON: %v; body %s", err, r.Body)
		}
		if len(snap.Connections) != 1 {
			t.Fatalf("snapshot has %d connections, want 1; body %s", len(snap.Connections), r.Body)
		}
		if c := snap.Connections[0]; c.User != user || !c.Running || c.Breaker.State != actors.BreakerClosed {
			t.Errorf("snapshot %s, want a running route of %s with a closed breaker", r.Body, user)
		}
		if strings.Contains(string(r.Body), password) {
			t.Errorf("snapshot contains the password: %s", r.Body)
		}

		k4.send(openAPICase{name: "supervision with a wrong token", method: "GET", path: "/v1/admin/supervision",
			headers: map[string]string{"Authorization": "Bearer not-the-token"}, status: 401, code: "authentication_required"})
		k4.send(openAPICase{name: "supervision without a token", method: "GET", path: "/v1/admin/supervision",
			status: 401, code: "authentication_required"})
		k4.send(openAPICase{name: "supervision with Basic credentials", method: "GET", path: "/v1/admin/supervision", user: g, pass: g,
			status: 401, code: "authentication_required"})
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
		r := k2.send(openAPICase{name: "batch while stopping", method: "POST", path: "/v1/publish/batch", user: g, pass: g, headers: asJSON,
			body: jsonBody(t, map[string]any{"messages": []json.RawMessage{publish}}), status: 207})
		if !strings.Contains(string(r.Body), `"status":503,"error":"shutting_down"`) {
			t.Errorf("batch while stopping: want a result 503 shutting_down; body %s", r.Body)
		}
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
		const token = "openapi-admin-token"
		s3 := testenv.NewStack(t, testenv.Options{AdminToken: token, Actors: actors.Config{
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
		r := k3.send(openAPICase{name: "batch with an open breaker", method: "POST", path: "/v1/publish/batch", user: g, pass: g, headers: asJSON,
			body: jsonBody(t, map[string]any{"messages": []json.RawMessage{publish, publish}}), status: 207})
		if n := strings.Count(string(r.Body), `"status":503,"error":"circuit_open"`); n != 2 {
			t.Errorf("batch with an open breaker: %d results circuit_open, want 2; body %s", n, r.Body)
		}

		r = k3.send(openAPICase{name: "supervision with an open breaker", method: "GET", path: "/v1/admin/supervision",
			headers: map[string]string{"Authorization": "Bearer " + token}, status: 200})
		var snap actors.Snapshot
		if err := json.Unmarshal(r.Body, &snap); err != nil {
			t.Fatalf("snapshot is not JSON: %v; body %s", err, r.Body)
		}
		if len(snap.Connections) != 1 || snap.Connections[0].Breaker.State != actors.BreakerOpen ||
			snap.Connections[0].Breaker.OpenedAt == nil || snap.Connections[0].Breaker.TimesOpened != 1 {
			t.Errorf("snapshot %s, want one route whose breaker opened once and is open", r.Body)
		}
	})

	if ran == 6 {
		k.checkCoverage(loadOpenAPIDocument(t))
	}
}
