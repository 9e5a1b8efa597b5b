package router

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/valyala/fasthttp"

	"github.com/rmqrouter/rmqrouter/actors"
	"github.com/rmqrouter/rmqrouter/metrics"
	"github.com/rmqrouter/rmqrouter/security"
	"github.com/rmqrouter/rmqrouter/transport"
)

// fakeBackend records calls and returns a preset error.
type fakeBackend struct {
	mu        sync.Mutex
	err       error
	published []*transport.Message
	fetch     actors.FetchResult
	panicWith any
}

func (f *fakeBackend) Publish(_ context.Context, _ *security.Credentials, _ string, msg *transport.Message) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.panicWith != nil {
		panic(f.panicWith)
	}
	f.published = append(f.published, msg)
	return f.err
}

func (f *fakeBackend) PublishBatch(_ context.Context, _ *security.Credentials, _ string, msgs []*transport.Message) []error {
	f.mu.Lock()
	f.published = append(f.published, msgs...)
	f.mu.Unlock()
	out := make([]error, len(msgs))
	for i := range out {
		out[i] = f.err
	}
	return out
}

func (f *fakeBackend) Fetch(context.Context, *security.Credentials, string, string, time.Duration, bool) (actors.FetchResult, error) {
	return f.fetch, f.err
}

func (f *fakeBackend) Settle(context.Context, *security.Credentials, uint64, bool, bool) error {
	return f.err
}

func (f *fakeBackend) DefaultVhost() string { return "/" }

func (f *fakeBackend) Snapshot(context.Context) (*actors.Snapshot, error) {
	return &actors.Snapshot{MaxConnections: 7}, f.err
}

type syncWriter struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func newTestServer(b Backend) (*Server, *syncWriter) {
	return newConfiguredServer(Config{PublishTimeout: time.Second}, b)
}

// newConfiguredServer returns a Server with cfg and b that logs every level
// as JSON to the returned writer.
func newConfiguredServer(cfg Config, b Backend) (*Server, *syncWriter) {
	logs := &syncWriter{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return New(cfg, b, security.NewStore(10), metrics.New(), log, nil), logs
}

func serve(s *Server, method, uri, auth string, body []byte, headers map[string]string) *fasthttp.Response {
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod(method)
	ctx.Request.SetRequestURI(uri)
	if auth != "" {
		ctx.Request.Header.Set("Authorization", auth)
	}
	for k, v := range headers {
		ctx.Request.Header.Set(k, v)
	}
	ctx.Request.SetBody(body)
	s.Handle(&ctx)
	resp := &fasthttp.Response{}
	ctx.Response.CopyTo(resp)
	return resp
}

func guestAuth() string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte("guest:guest-secret-pw"))
}

func TestBackendErrorsMapToStatus(t *testing.T) {
	cases := []struct {
		err    error
		status int
		code   string
	}{
		{&transport.Error{Kind: transport.ErrUnroutable, Code: 312, Reason: "NO_ROUTE"}, 422, "unroutable"},
		{&transport.Error{Kind: transport.ErrNacked}, 502, "publish_nacked"},
		{actors.ErrConfirmTimeout, 504, "confirm_timeout"},
		{&transport.Error{Kind: transport.ErrExchangeNotFound}, 404, "exchange_not_found"},
		{&transport.Error{Kind: transport.ErrAccessRefused}, 403, "access_refused"},
		{&transport.Error{Kind: transport.ErrAuthenticationFailed}, 401, "authentication_failed"},
		{&transport.Error{Kind: transport.ErrBlocked}, 503, "broker_blocked"},
		{&transport.Error{Kind: transport.ErrOutcomeUnknown}, 503, "broker_unavailable"},
		{&transport.Error{Kind: transport.ErrNotSent}, 503, "broker_unavailable"},
		{actors.ErrCapacityExhausted, 503, "capacity_exhausted"},
		{actors.ErrShuttingDown, 503, "shutting_down"},
		{actors.ErrTooManyInFlight, 429, "too_many_in_flight"},
	}
	for _, c := range cases {
		s, _ := newTestServer(&fakeBackend{err: c.err})
		resp := serve(s, "POST", "/v1/publish", guestAuth(), []byte(`{"exchange":"x","routing_key":"k","payload":"p"}`), nil)
		if resp.StatusCode() != c.status {
			t.Errorf("%v: status %d, want %d", c.err, resp.StatusCode(), c.status)
			continue
		}
		var body map[string]string
		if err := json.Unmarshal(resp.Body(), &body); err != nil || body["error"] != c.code {
			t.Errorf("%v: body %s, want code %s", c.err, resp.Body(), c.code)
		}
		if (c.status == 429 || c.status == 503) && len(resp.Header.Peek("Retry-After")) == 0 {
			t.Errorf("%v: %d without Retry-After", c.err, c.status)
		}
	}
}

func TestUnknownErrorIs500AndLogged(t *testing.T) {
	s, logs := newTestServer(&fakeBackend{err: errors.New("surprise")})
	resp := serve(s, "POST", "/v1/publish", guestAuth(), []byte(`{"exchange":"x","routing_key":"k","payload":"p"}`), nil)
	if resp.StatusCode() != 500 {
		t.Fatalf("status %d, want 500 for an unmapped error", resp.StatusCode())
	}
	if !strings.Contains(logs.String(), "internal_error") {
		t.Fatal("500 not logged")
	}
}

func TestPanicIsRecovered(t *testing.T) {
	s, logs := newTestServer(&fakeBackend{panicWith: "boom"})
	resp := serve(s, "POST", "/v1/publish", guestAuth(), []byte(`{"exchange":"x","routing_key":"k","payload":"p"}`), nil)
	if resp.StatusCode() != 500 {
		t.Fatalf("status %d, want 500", resp.StatusCode())
	}
	if !strings.Contains(logs.String(), "handler panicked") {
		t.Fatal("panic not logged")
	}
}

func TestHandlerCopiesBodyBeforeBackend(t *testing.T) {
	f := &fakeBackend{}
	s, _ := newTestServer(f)
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod("POST")
	ctx.Request.SetRequestURI("/v1/exchanges/amq.default/publish?routing_key=k")
	ctx.Request.Header.Set("Authorization", guestAuth())
	ctx.Request.SetBody([]byte("original"))
	s.Handle(&ctx)

	// fasthttp reuses the body buffer for the next request.
	copy(ctx.Request.Body(), "CLOBBER!")
	if got := string(f.published[0].Body); got != "original" {
		t.Fatalf("message body changed with the request buffer: %q", got)
	}
}

func TestLogsCarryRequestIDAndNoSecrets(t *testing.T) {
	s, logs := newTestServer(&fakeBackend{err: &transport.Error{Kind: transport.ErrBrokerUnavailable}})
	serve(s, "POST", "/v1/publish", guestAuth(), []byte(`{"exchange":"x","routing_key":"k","payload":"p"}`), map[string]string{"X-Request-ID": "req-1"})
	out := logs.String()
	if !strings.Contains(out, `"request_id":"req-1"`) {
		t.Fatalf("log lacks request_id: %s", out)
	}
	for _, secret := range []string{"guest-secret-pw", base64.StdEncoding.EncodeToString([]byte("guest:guest-secret-pw"))} {
		if strings.Contains(out, secret) {
			t.Fatalf("log reveals a secret: %s", out)
		}
	}
}

func TestRequestIDGeneratedForUnsafeValue(t *testing.T) {
	s, _ := newTestServer(&fakeBackend{})
	resp := serve(s, "GET", "/health", "", nil, map[string]string{"X-Request-ID": "bad id\x01"})
	if id := string(resp.Header.Peek("X-Request-ID")); !compactIDPattern.MatchString(id) {
		t.Fatalf("X-Request-ID = %q, want a generated compact id", id)
	}
}

func TestPrefersRussian(t *testing.T) {
	cases := map[string]bool{
		"ru":                     true,
		"ru-RU,en;q=0.5":         true,
		"en,ru;q=0.9":            false,
		"en;q=0.1, ru;q=0.8":     true,
		"":                       false,
		"de-DE":                  false,
		"RU-ru":                  true,
		"en-US,en;q=0.9,ru;q=1x": false,
	}
	for header, want := range cases {
		if got := prefersRussian(header); got != want {
			t.Errorf("prefersRussian(%q) = %v, want %v", header, got, want)
		}
	}
}

func TestFetchBodyEncoding(t *testing.T) {
	cases := []struct {
		body     []byte
		want     string
		encoding string
	}{
		{[]byte(`{"a":1}`), `{"a":1}`, ""},
		{[]byte(`[1,2]`), `[1,2]`, ""},
		{[]byte("plain"), `"plain"`, ""},
		{[]byte{0xff, 0x00}, `"/wA="`, "base64"},
		{nil, `""`, ""},
	}
	for _, c := range cases {
		got, enc := encodeBody(&transport.Delivery{Body: c.body})
		if string(got) != c.want || enc != c.encoding {
			t.Errorf("encodeBody(%q) = %s %q, want %s %q", c.body, got, enc, c.want, c.encoding)
		}
	}
}

// FuzzPublishNever500 feeds arbitrary bodies and raw headers to the publish
// handlers: bad input must be a 4xx, never a 500 or a panic.
func FuzzPublishNever500(f *testing.F) {
	f.Add([]byte(`{"exchange":"","routing_key":"k","payload":{"a":1}}`), "X-Priority", "5")
	f.Add([]byte(`{"exchange":"","routing_key":"k","payload":"s","headers":{"":"x"}}`), "X-Header-", "v")
	f.Add([]byte(`{"payload":[1]}`), "X-Expiration", "-1")
	f.Add([]byte(`{"exchange":"\u0000"}`), "Content-Type", "")
	s, _ := newTestServer(&fakeBackend{})
	f.Fuzz(func(t *testing.T, body []byte, hname, hvalue string) {
		for _, uri := range []string{"/v1/publish", "/v1/exchanges/amq.default/publish?routing_key=k", "/v1/fetch", "/v1/reject/1"} {
			var ctx fasthttp.RequestCtx
			ctx.Request.Header.SetMethod("POST")
			ctx.Request.SetRequestURI(uri)
			ctx.Request.Header.Set("Authorization", guestAuth())
			if hname != "" && !strings.ContainsAny(hname, ":\r\n \t") && !strings.ContainsAny(hvalue, "\r\n") {
				ctx.Request.Header.Set(hname, hvalue)
			}
			ctx.Request.SetBody(body)
			s.Handle(&ctx)
			if code := ctx.Response.StatusCode(); code >= 500 {
				t.Fatalf("%s with body %q and header %q=%q: status %d: %s", uri, body, hname, hvalue, code, ctx.Response.Body())
			}
		}
	})
}
func TestDecodeStrictErrors(t *testing.T) {
	cases := map[string]string{
		`{"exchange":"x"} }`:               "invalid_json",
		`{"exchange":"x"} x`:               "invalid_json",
		`{"exchange":"x"}   `:              "",
		`{"exchange":`:                     "invalid_json",
		`{"priority":"high"}`:              "validation_error:priority",
		`{"headers":{"a":1}}`:              "validation_error:headers.a",
		`{"colour":1}`:                     "validation_error:colour",
		`[1]`:                              "validation_error:",
		`{"priority":1e400}`:               "validation_error:priority",
		"\xef\xbb\xbf{\"exchange\":\"x\"}": "",
		`{"exchange":"\ud800"}`:            "",
		`nul`:                              "invalid_json",
		"{\"queue\":\"\xff\xfe\"}":         "invalid_json",
	}
	for in, want := range cases {
		var b publishBody
		e := decodeStrict([]byte(in), &b)
		got := ""
		if e != nil {
			got = e.code
			if e.code == "validation_error" {
				got += ":"
				if i := indexQuote(e.en); i != "" {
					got += i
				}
			}
		}
		if got != want {
			t.Errorf("%q: got %q (%v), want %q", in, got, e, want)
		}
	}
}

func indexQuote(s string) string {
	start := -1
	for i, c := range s {
		if c == '"' {
			if start < 0 {
				start = i + 1
			} else {
				return s[start:i]
			}
		}
	}
	return ""
}

func TestUnquoteStringPayload(t *testing.T) {
	cases := map[string]string{
		`""`:                   "",
		`"plain text"`:         "plain text",
		`"строка"`:             "строка",
		`"a \"quoted\" word"`:  `a "quoted" word`,
		`"line\nbreak\t\\"`:    "line\nbreak\t\\",
		`"\u0441\u0442\u0440"`: "стр",
		`"emoji \ud83d\ude00"`: "emoji 😀",
	}
	for token, want := range cases {
		got, e := unquote([]byte(token))
		if e != nil {
			t.Errorf("unquote(%s): %+v", token, e)
			continue
		}
		if string(got) != want {
			t.Errorf("unquote(%s) = %q, want %q", token, got, want)
		}
	}
	if _, e := unquote([]byte(`"`)); e == nil || e.status != 400 {
		t.Errorf("unquote of a lone quote: %+v", e)
	}
}

func TestReadinessDetailInRussian(t *testing.T) {
	authErr := &transport.Error{Op: "dial", Kind: transport.ErrAuthenticationFailed, Code: 403, Reason: "ACCESS_REFUSED - Login was refused"}
	logs := &syncWriter{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	s := New(Config{PublishTimeout: time.Second}, &fakeBackend{}, security.NewStore(10), metrics.New(), log, func() error { return authErr })

	resp := serve(s, "GET", "/health/ready", "", nil, map[string]string{"Accept-Language": "ru"})
	if resp.StatusCode() != 503 {
		t.Fatalf("status %d, want 503", resp.StatusCode())
	}
	var body struct {
		Detail string            `json:"detail"`
		Checks map[string]string `json:"checks"`
	}
	if err := json.Unmarshal(resp.Body(), &body); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(body.Detail, "отклонил имя пользователя или пароль") {
		t.Errorf("detail %q does not name the cause in Russian", body.Detail)
	}
	if strings.Contains(body.Detail, "Login was refused") {
		t.Errorf("detail %q carries the broker's English text", body.Detail)
	}
	if !strings.Contains(body.Checks["broker"], "Login was refused") {
		t.Errorf("checks.broker %q lost the broker's text", body.Checks["broker"])
	}
}

// TestHTTPMetricMethodsBounded checks that request methods outside HTTP's
// standard set share one label value, so clients cannot add series at will,
// and that repeated requests count on the same series.
func TestHTTPMetricMethodsBounded(t *testing.T) {
	s, _ := newTestServer(&fakeBackend{})
	for i := range 50 {
		serve(s, fmt.Sprintf("M%d", i), "/nowhere", "", nil, nil)
	}
	for range 3 {
		serve(s, "GET", "/nowhere", "", nil, nil)
	}

	if n := testutil.CollectAndCount(s.metrics.HTTPRequests); n != 2 {
		t.Errorf("http_requests_total has %d series, want 2 (GET and other)", n)
	}
	if n := testutil.ToFloat64(s.metrics.HTTPRequests.WithLabelValues("other", "other", "404")); n != 50 {
		t.Errorf("requests with other methods = %v, want 50", n)
	}
	if n := testutil.ToFloat64(s.metrics.HTTPRequests.WithLabelValues("other", "GET", "404")); n != 3 {
		t.Errorf("GET requests = %v, want 3", n)
	}
	if n := testutil.CollectAndCount(s.metrics.HTTPDuration); n != 1 {
		t.Errorf("http_request_duration_seconds has %d series, want 1", n)
	}
}

// TestUnparsableRequestLogsNoCredentials sends requests that fasthttp cannot
// parse. fasthttp's error quotes parts of each request, cut at any byte or as
// a single header value, and the router must let none of the credential reach
// its log.
func TestUnparsableRequestLogsNoCredentials(t *testing.T) {
	s, logs := newTestServer(&fakeBackend{})
	addr := serveLoopback(t, s)

	password := "do-not-log-me"
	secret := base64.StdEncoding.EncodeToString([]byte("guest:" + password))
	head := "POST /v1/publish HTTP/1.1\r\nHost: router\r\n"
	requests := map[string]string{
		"bad content length": head + "Authorization: Basic " + secret + "\r\nCookie: session=" + password + "\r\nContent-Length: abc\r\n\r\n",
		// fasthttp quotes the first and last 200 bytes of a long request: the
		// padding puts the cut inside the Authorization value.
		"cut in the credential": head + "X-Pad: " + strings.Repeat("p", 180) + "\r\nAuthorization: Basic " + secret + strings.Repeat("A", 40) +
			"\r\nX-Tail: " + strings.Repeat("t", 150) + "\r\nContent-Length: abc\r\n\r\n",
		"control character in the value": head + "Authorization: Basic " + secret + "\x01\r\n\r\n",
		"missing colon":                  head + "Authorization Basic " + secret + "\r\n\r\n",
	}
	for name, request := range requests {
		if status := sendRaw(t, addr, request); !strings.Contains(status, " 400 ") {
			t.Errorf("%s: status line %q, want 400", name, status)
		}
	}

	var logged string
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if logged = logs.String(); strings.Count(logged, "http server") >= len(requests) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := strings.Count(logged, "http server"); n < len(requests) {
		t.Fatalf("%d http server records for %d requests:\n%s", n, len(requests), logged)
	}
	// Any 12 characters of the base64 text would give part of the password away.
	for i := 0; i+12 <= len(secret); i++ {
		if strings.Contains(logged, secret[i:i+12]) {
			t.Fatalf("the log contains %q of the credential:\n%s", secret[i:i+12], logged)
		}
	}
	if strings.Contains(logged, password) {
		t.Errorf("the log contains the password:\n%s", logged)
	}
	if !strings.Contains(logged, "[not logged]") {
		t.Errorf("no record marks the request text as not logged:\n%s", logged)
	}
	if n := testutil.ToFloat64(s.metrics.HTTPRequests.WithLabelValues("other", "other", "400")); n != float64(len(requests)) {
		t.Errorf("unparsable requests counted with method other = %v, want %d", n, len(requests))
	}
}

func TestRedactQuoted(t *testing.T) {
	cases := map[string]string{
		`error when serving connection "127.0.0.1:8000"<->"[::1]:5123": contents: "POST / HTTP/1.1\r\nAuthorization: Basic Zm9v"..."YmFy\r\n"`: `error when serving connection "127.0.0.1:8000"<->"[::1]:5123": contents: "[not logged]"..."[not logged]"`,
		`invalid header value "Basic Zm9vOmJhcg==\x01"`: `invalid header value "[not logged]"`,
		`quote inside "a \"b\" c" and more`:             `quote inside "[not logged]" and more`,
		`no quotes: 42 connections`:                     `no quotes: 42 connections`,
	}
	for in, want := range cases {
		if got := redactQuoted(in); got != want {
			t.Errorf("redactQuoted(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestReservedHeaderDropped checks that every publish path drops a client's
// value of the router's reserved header, in any letter case, and publishes the
// message with its other headers.
func TestReservedHeaderDropped(t *testing.T) {
	requests := map[string]func(s *Server) *fasthttp.Response{
		"publish": func(s *Server) *fasthttp.Response {
			return serve(s, "POST", "/v1/publish", guestAuth(), []byte(`{"exchange":"","routing_key":"q","payload":"x","headers":{"X-RMQROUTER-Publish-Id":"1","keep":"yes"}}`), nil)
		},
		"batch": func(s *Server) *fasthttp.Response {
			return serve(s, "POST", "/v1/publish/batch", guestAuth(), []byte(`{"messages":[{"exchange":"","routing_key":"q","payload":"x","headers":{"x-rmqrouter-publish-id":"1","keep":"yes"}}]}`), nil)
		},
		"raw": func(s *Server) *fasthttp.Response {
			return serve(s, "POST", "/v1/exchanges/amq.default/publish?routing_key=q", guestAuth(), []byte("x"),
				map[string]string{"X-Header-X-Rmqrouter-Publish-Id": "1", "X-Header-keep": "yes"})
		},
	}
	for name, send := range requests {
		t.Run(name, func(t *testing.T) {
			b := &fakeBackend{}
			s, _ := newTestServer(b)
			r := send(s)
			if r.StatusCode() != 202 && r.StatusCode() != 207 {
				t.Fatalf("status %d, want 202 or 207: %s", r.StatusCode(), r.Body())
			}
			if len(b.published) != 1 {
				t.Fatalf("%d messages published, want 1", len(b.published))
			}
			// The test request normalizes header names (X-Header-Keep), the
			// server does not, so the name is compared in any case.
			headers := b.published[0].Headers
			if len(headers) != 1 {
				t.Fatalf("published headers %v, want only keep=yes", headers)
			}
			for name, value := range headers {
				if !strings.EqualFold(name, "keep") {
					t.Errorf("published header %s, want keep", name)
				}
				if value != "yes" {
					t.Errorf("published header %s=%v, want yes", name, value)
				}
			}
		})
	}
}

// TestAllowHeaderNamesHead checks the Allow header of 405 responses: GET routes
// allow HEAD too, except the session messages route.
func TestAllowHeaderNamesHead(t *testing.T) {
	s, _ := newTestServer(&fakeBackend{})
	cases := map[string]string{
		"/health":                   "GET, HEAD",
		"/metrics":                  "GET, HEAD",
		"/v1/publish":               "POST",
		"/v1/sessions/abc/messages": "GET",
	}
	for path, want := range cases {
		r := serve(s, "PUT", path, guestAuth(), nil, nil)
		if r.StatusCode() != 405 {
			t.Errorf("PUT %s: status %d, want 405", path, r.StatusCode())
		}
		if got := string(r.Header.Peek("Allow")); got != want {
			t.Errorf("PUT %s: Allow %q, want %q", path, got, want)
		}
	}
	r := serve(s, "HEAD", "/v1/sessions/abc/messages", guestAuth(), nil, nil)
	if r.StatusCode() != 405 {
		t.Errorf("HEAD on session messages: status %d, want 405", r.StatusCode())
	}
	if got := string(r.Header.Peek("Allow")); got != "GET" {
		t.Errorf("HEAD on session messages: Allow %q, want GET", got)
	}
}

// TestRawPublishErrorsNameHeader checks that an invalid id on the raw publish
// path is reported under the request header that carried it.
func TestRawPublishErrorsNameHeader(t *testing.T) {
	s, _ := newTestServer(&fakeBackend{})
	long := strings.Repeat("a", 256)
	for _, header := range []string{"X-Message-Id", "X-Correlation-Id"} {
		r := serve(s, "POST", "/v1/exchanges/amq.default/publish?routing_key=q", guestAuth(), []byte("x"), map[string]string{header: long})
		if r.StatusCode() != 422 {
			t.Errorf("%s: status %d, want 422", header, r.StatusCode())
		}
		if !strings.Contains(string(r.Body()), `\"`+header+`\"`) {
			t.Errorf("%s: detail does not name the header: %s", header, r.Body())
		}
	}
}

// TestTooLargeBodyMethodLabel checks the method label of 413 responses: a body
// longer than its Content-Length limit keeps the parsed method, while a chunked
// one, after which fasthttp has reset the header, is counted as other.
func TestTooLargeBodyMethodLabel(t *testing.T) {
	s, _ := newConfiguredServer(Config{PublishTimeout: time.Second, MaxBodyBytes: 1024}, &fakeBackend{})
	addr := serveLoopback(t, s)

	body := strings.Repeat("x", 2048)
	requests := []string{
		"PUT /v1/publish HTTP/1.1\r\nHost: router\r\nContent-Length: 2048\r\n\r\n" + body,
		"POST /v1/publish HTTP/1.1\r\nHost: router\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n" + body + "\r\n0\r\n\r\n",
	}
	for _, request := range requests {
		if status := sendRaw(t, addr, request); !strings.Contains(status, " 413 ") {
			t.Errorf("status line %q, want 413", status)
		}
	}

	if n := testutil.ToFloat64(s.metrics.HTTPRequests.WithLabelValues("other", "PUT", "413")); n != 1 {
		t.Errorf("413 with Content-Length counted %v times with method PUT, want 1", n)
	}
	if n := testutil.ToFloat64(s.metrics.HTTPRequests.WithLabelValues("other", "other", "413")); n != 1 {
		t.Errorf("chunked 413 counted %v times with method other, want 1", n)
	}
	if n := testutil.ToFloat64(s.metrics.HTTPRequests.WithLabelValues("other", "GET", "413")); n != 0 {
		t.Errorf("413 counted %v times with method GET, want 0", n)
	}
}

// TestHeaderValueNullAndEmptyName checks two header inputs that used to pass
// unnoticed: a JSON null value, which is not a string, and an X-Header- request
// header without a name.
func TestHeaderValueNullAndEmptyName(t *testing.T) {
	b := &fakeBackend{}
	s, _ := newTestServer(b)

	r := serve(s, "POST", "/v1/publish", guestAuth(), []byte(`{"exchange":"","routing_key":"q","payload":"x","headers":{"a":null}}`), nil)
	if r.StatusCode() != 422 {
		t.Errorf("null header value: status %d, want 422: %s", r.StatusCode(), r.Body())
	}
	if !strings.Contains(string(r.Body()), `headers.a`) {
		t.Errorf("null header value: detail does not name headers.a: %s", r.Body())
	}

	r = serve(s, "POST", "/v1/exchanges/amq.default/publish?routing_key=q", guestAuth(), []byte("x"), map[string]string{"X-Header-": "v"})
	if r.StatusCode() != 400 {
		t.Errorf("empty header name: status %d, want 400: %s", r.StatusCode(), r.Body())
	}
	if !strings.Contains(string(r.Body()), "invalid_name") {
		t.Errorf("empty header name: body %s, want invalid_name", r.Body())
	}

	if len(b.published) != 0 {
		t.Errorf("%d messages were published", len(b.published))
	}
}

// serveLoopback runs s on a loopback port until the test ends and returns its
// address.
func serveLoopback(t *testing.T, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	t.Cleanup(func() {
		if err := s.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
		<-served
	})
	return ln.Addr().String()
}

// sendRaw writes request as is to addr on a new connection and returns the
// status line of the response.
func sendRaw(t *testing.T, addr, request string) string {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(request)); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	status, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	return status
}

func TestWriteJSONReusesBuffers(t *testing.T) {
	s, _ := newTestServer(&fakeBackend{})
	var ctx fasthttp.RequestCtx
	req := &request{ctx: &ctx, id: "req-1"}
	write := func(v any) string {
		ctx.Response.Reset()
		s.writeJSON(req, 202, v)
		return string(ctx.Response.Body())
	}

	// A long body, then a short one: the pooled buffer must not carry any of
	// the first into the second, and neither ends in the encoder's newline.
	long := acceptedBody{Status: "accepted", RequestID: strings.Repeat("r", 300), Exchange: "ex", RoutingKey: "rk"}
	if got, want := write(long), mustMarshal(t, long); got != want {
		t.Errorf("long body = %s, want %s", got, want)
	}
	short := errorBody{Error: "e", Detail: "d", RequestID: "i"}
	if got, want := write(short), mustMarshal(t, short); got != want {
		t.Errorf("short body = %s, want %s", got, want)
	}
}

// The tests named ...Allocs count allocations, which the race detector adds
// to, so make test runs them once more without it.

func TestWriteJSONAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	s, _ := newTestServer(&fakeBackend{})
	var ctx fasthttp.RequestCtx
	req := &request{ctx: &ctx, id: "req-1"}
	var body any = errorBody{Error: "e", Detail: "d", RequestID: "i"} // boxed once: boxing allocates
	allocs := testing.AllocsPerRun(100, func() {
		ctx.Response.ResetBody()
		s.writeJSON(req, 202, body)
	})
	if allocs != 0 {
		t.Errorf("writeJSON made %.0f allocations per response, want 0 with a warm pool", allocs)
	}
}

func TestAuthenticateAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	s, _ := newTestServer(&fakeBackend{})
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.Set("Authorization", guestAuth())
	req := &request{ctx: &ctx, id: "req-1"}
	if _, ok := s.authenticate(req); !ok {
		t.Fatalf("authenticate rejected valid credentials: %s", ctx.Response.Body())
	}
	// The credentials are cached now, and the header is read in place.
	if allocs := testing.AllocsPerRun(100, func() { s.authenticate(req) }); allocs != 0 {
		t.Errorf("authenticate made %.0f allocations, want 0", allocs)
	}
}

func mustMarshal(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
