package router

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"

	"github.com/rmqrouter/rmqrouter/actors"
	"github.com/rmqrouter/rmqrouter/metrics"
	"github.com/rmqrouter/rmqrouter/security"
	"github.com/rmqrouter/rmqrouter/transport"
)

// Backend is what the router needs from the actor tree; *actors.System
// implements it, and unit tests use fakes.
type Backend interface {
	Publish(ctx context.Context, creds *security.Credentials, vhost string, msg *transport.Message) error
	PublishBatch(ctx context.Context, creds *security.Credentials, vhost string, msgs []*transport.Message) []error
	Fetch(ctx context.Context, creds *security.Credentials, vhost, queue string, wait time.Duration, autoAck bool) (actors.FetchResult, error)
	Settle(ctx context.Context, creds *security.Credentials, tag uint64, ack, requeue bool) error
	Snapshot(ctx context.Context) (*actors.Snapshot, error)
	DefaultVhost() string
}

// ReadinessCheck reports nil when the broker is reachable.
type ReadinessCheck func() error

// Config holds the router's settings.
type Config struct {
	// MaxBodyBytes is the largest request body accepted.
	MaxBodyBytes int
	// PublishTimeout is how long a publish waits for the broker's confirm.
	PublishTimeout time.Duration
	// OpenAPI is the served API description (docs/openapi.yaml).
	OpenAPI []byte
	// AdminToken is the bearer token of /v1/admin/*; empty disables them.
	AdminToken string
	// IDFormat is IDsCompact (also when empty) or IDsUUID. New logs any
	// other value as an error and uses IDsCompact.
	IDFormat string
}

// Server is the HTTP front end. Create it with New and run it with Serve.
type Server struct {
	cfg            Config
	backend        Backend
	creds          *security.Store
	metrics        *metrics.Metrics
	log            *slog.Logger
	ready          ReadinessCheck
	started        time.Time
	http           *fasthttp.Server
	promHTTP       fasthttp.RequestHandler
	requestMetrics httpMetrics
	ids            idGenerator
}

// New returns a Server. ready may be nil, which means always ready.
func New(cfg Config, backend Backend, creds *security.Store, m *metrics.Metrics, log *slog.Logger, ready ReadinessCheck) *Server {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	if cfg.PublishTimeout <= 0 {
		cfg.PublishTimeout = 10 * time.Second
	}
	if ready == nil {
		ready = func() error { return nil }
	}
	if cfg.IDFormat != "" && cfg.IDFormat != IDsCompact && cfg.IDFormat != IDsUUID {
		log.Error("invalid id format, using compact ids; set IDFormat to compact or uuid", "task", "main", "id_format", cfg.IDFormat)
	}
	s := &Server{
		cfg:            cfg,
		backend:        backend,
		creds:          creds,
		metrics:        m,
		requestMetrics: httpMetrics{vecs: m},
		ids:            idGenerator{uuid: cfg.IDFormat == IDsUUID},
		log:            log,
		ready:          ready,
		started:        time.Now(),
		promHTTP:       fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})),
	}
	s.http = &fasthttp.Server{
		Handler:                       s.Handle,
		Name:                          "rmqrouter",
		MaxRequestBodySize:            cfg.MaxBodyBytes,
		ReadTimeout:                   30 * time.Second,
		WriteTimeout:                  30 * time.Second,
		IdleTimeout:                   2 * time.Minute,
		DisableHeaderNamesNormalizing: true,
		NoDefaultServerHeader:         false,
		NoDefaultContentType:          true,
		ErrorHandler:                  s.handleParseError,
		Logger:                        fasthttpLogger{log},
	}
	return s
}

// Serve accepts connections on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error { return s.http.Serve(ln) }

// Shutdown stops accepting connections and waits for open requests, up to ctx.
func (s *Server) Shutdown(ctx context.Context) error { return s.http.ShutdownWithContext(ctx) }

type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Warn("http server", "task", "http", "message", redactQuoted(strings.TrimSpace(fmt.Sprintf(format, args...))))
}

// quotedText matches a Go-quoted string. fasthttp quotes every piece of a
// request that it puts in an error (header values, the request line, up to
// 400 bytes of the headers), and such a piece may hold a password.
var quotedText = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)

// quotedAddress matches a quoted IP address and port, which fasthttp's errors
// use to name the two ends of a connection.
var quotedAddress = regexp.MustCompile(`^"\[?[0-9A-Fa-f.:]+\]?:[0-9]+"$`)

// redactQuoted replaces every quoted piece of msg but connection addresses, so
// that a request fasthttp could not parse puts no credential in the log.
// Matching header names would not do: fasthttp may cut a request in the middle
// of a header, or quote a value without its name.
func redactQuoted(msg string) string {
	return quotedText.ReplaceAllStringFunc(msg, func(quoted string) string {
		if quotedAddress.MatchString(quoted) {
			return quoted
		}
		return `"[not logged]"`
	})
}

// Handle serves one request. It is the fasthttp handler, exported for tests.
func (s *Server) Handle(ctx *fasthttp.RequestCtx) {
	start := time.Now()
	req := &request{ctx: ctx, id: s.requestID(ctx)}
	ctx.Response.Header.Set("X-Request-ID", req.id)

	route := "other"
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("handler panicked", "request_id", req.id, "route", route, "panic", fmt.Sprintf("%v", p), "stack", string(debug.Stack()))
			s.writeError(req, errInternal)
		}
		s.requestMetrics.observe(route, ctx.Method(), ctx.Response.StatusCode(), time.Since(start))
	}()

	path := string(ctx.URI().PathOriginal())
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	method := string(ctx.Method())
	route = s.dispatch(req, method, path)
}

// dispatch runs the handler of path and returns its route label.
func (s *Server) dispatch(req *request, method, path string) string {
	switch path {
	case "/v1/publish":
		return s.only(req, method, "POST", "/v1/publish", s.handlePublish)
	case "/v1/publish/batch":
		return s.only(req, method, "POST", "/v1/publish/batch", s.handleBatch)
	case "/v1/fetch":
		return s.only(req, method, "POST", "/v1/fetch", s.handleFetch)
	case "/v1/sessions":
		return s.only(req, method, "POST", "/v1/sessions", s.handleCreateSession)
	case "/health", "/health/live":
		return s.only(req, method, "GET, HEAD", path, s.handleLive)
	case "/ready", "/health/ready":
		return s.only(req, method, "GET, HEAD", path, s.handleReady)
	case "/health/startup":
		return s.only(req, method, "GET, HEAD", path, s.handleStartup)
	case "/metrics":
		return s.only(req, method, "GET, HEAD", path, func(r *request) { s.promHTTP(r.ctx) })
	case "/openapi.yaml":
		return s.only(req, method, "GET, HEAD", path, s.handleOpenAPI)
	case "/v1/admin/supervision":
		return s.only(req, method, "GET, HEAD", path, s.handleSupervision)
	}

	switch {
	case strings.HasPrefix(path, "/v1/exchanges/") && strings.HasSuffix(path, "/publish"):
		return s.only(req, method, "POST", "/v1/exchanges/{exchange}/publish", s.handleRawPublish)
	case strings.HasPrefix(path, "/v1/ack/"):
		return s.only(req, method, "POST", "/v1/ack/{tag}", s.handleAck)
	case strings.HasPrefix(path, "/v1/reject/"):
		return s.only(req, method, "POST", "/v1/reject/{tag}", s.handleReject)
	case strings.HasPrefix(path, "/v1/sessions/"):
		return s.dispatchSession(req, method, path)
	}
	s.writeError(req, errNotFound)
	return "other"
}

// only runs h when method is one of allow, a list such as "GET, HEAD" that
// is also sent as the Allow header of the 405 otherwise. It returns route.
func (s *Server) only(req *request, method, allow, route string, h func(*request)) string {
	for list := allow; list != ""; {
		var allowed string
		allowed, list, _ = strings.Cut(list, ", ")
		if method == allowed {
			h(req)
			return route
		}
	}
	req.ctx.Response.Header.Set("Allow", allow)
	s.writeError(req, errMethodNotAllowed)
	return route
}

// request is the per-request state shared by the handlers.
type request struct {
	ctx *fasthttp.RequestCtx
	id  string
}

// prefersRussian reports whether error details should be in Russian. Only
// error responses need it, so it is not computed on the way in.
func (r *request) prefersRussian() bool {
	return prefersRussian(header(r.ctx, "Accept-Language"))
}

// handleParseError responds to requests fasthttp could not read.
func (s *Server) handleParseError(ctx *fasthttp.RequestCtx, err error) {
	req := &request{ctx: ctx, id: s.requestID(ctx)}
	ctx.Response.Header.Set("X-Request-ID", req.id)
	// A body larger than its Content-Length allows comes after headers that
	// parsed, so the method is known. Otherwise (bad headers, a chunked body
	// too large) fasthttp has reset the header and ctx.Method() is its default
	// GET, not the client's method, so it is counted as "other".
	var method []byte
	if errors.Is(err, fasthttp.ErrBodyTooLarge) {
		if ctx.Request.Header.ContentLength() > 0 {
			method = ctx.Method()
		}
		s.writeError(req, errPayloadTooLarge(s.cfg.MaxBodyBytes))
	} else {
		s.writeError(req, newAPIError(400, "invalid_request",
			"The HTTP request could not be parsed.", "HTTP-запрос не удалось разобрать."))
	}
	s.requestMetrics.count("other", method, ctx.Response.StatusCode())
}

// authenticate returns the request's credentials or writes a 401.
func (s *Server) authenticate(req *request) (*security.Credentials, bool) {
	// The header is read in place, because a copy would leave the encoded
	// password on the heap, where nothing wipes it.
	creds, err := s.creds.ParseBasicAuth(headerBytes(req.ctx, "Authorization"))
	switch {
	case err == nil:
		return creds, true
	case errors.Is(err, security.ErrNoCredentials):
		s.writeError(req, errAuthRequired)
	case errors.Is(err, security.ErrMalformedCredentials):
		s.writeError(req, errAuthMalformed)
	default:
		s.log.Error("credentials could not be sealed", "request_id", req.id, "error", err)
		s.writeError(req, errInternal)
	}
	return nil, false
}

type errorBody struct {
	Error     string `json:"error"`
	Detail    string `json:"detail"`
	RequestID string `json:"request_id"`
}

func (s *Server) writeError(req *request, e *apiError) {
	ctx := req.ctx
	if e.status == 401 && len(ctx.Response.Header.Peek("WWW-Authenticate")) == 0 {
		ctx.Response.Header.Set("WWW-Authenticate", `Basic realm="rmqrouter", charset="UTF-8"`)
	}
	if e.retryAfter > 0 {
		ctx.Response.Header.Set("Retry-After", strconv.Itoa(e.retryAfter))
	}
	s.metrics.Errors.WithLabelValues(e.code).Inc()
	level := slog.LevelDebug
	if e.status >= 500 {
		level = slog.LevelWarn
	}
	s.log.Log(context.Background(), level, "request failed", "request_id", req.id, "status", e.status, "error", e.code, "path", string(ctx.URI().PathOriginal()))
	s.writeJSON(req, e.status, errorBody{Error: e.code, Detail: e.detail(req.prefersRussian()), RequestID: req.id})
}

// responseEncoder is a JSON encoder with the buffer it writes to. Encoders are
// pooled, so that the encoding of a response allocates nothing once the pool
// is warm.
type responseEncoder struct {
	buf bytes.Buffer
	enc *json.Encoder
}

// maxPooledResponse is the largest buffer put back into responseEncoders. A
// larger one, from a fetch of big messages, is left to the garbage collector
// rather than kept in the pool.
const maxPooledResponse = 64 << 10

var responseEncoders = sync.Pool{New: func() any {
	e := &responseEncoder{}
	e.enc = json.NewEncoder(&e.buf)
	return e
}}

func (s *Server) writeJSON(req *request, status int, v any) {
	e := responseEncoders.Get().(*responseEncoder)
	defer func() {
		if e.buf.Cap() <= maxPooledResponse {
			e.buf.Reset()
			responseEncoders.Put(e)
		}
	}()

	var body []byte
	if err := e.enc.Encode(v); err != nil {
		s.log.Error("response could not be encoded", "request_id", req.id, "error", err)
		status = 500
		body = []byte(`{"error":"internal_error","detail":"response could not be encoded","request_id":"` + req.id + `"}`)
	} else {
		// Encode ends the value with a newline, which json.Marshal does not add.
		body = bytes.TrimSuffix(e.buf.Bytes(), []byte("\n"))
	}
	req.ctx.Response.Header.SetContentType("application/json")
	req.ctx.SetStatusCode(status)
	req.ctx.SetBody(body) // a copy, so the buffer can go back to the pool
}

// header returns the value of a request header, matching its name
// case-insensitively (the server keeps header names as sent).
func header(ctx *fasthttp.RequestCtx, name string) string {
	return string(headerBytes(ctx, name))
}

// headerBytes returns the value of a request header as header does, but
// without a copy. The slice points into the request's buffer and is valid
// only while the handler runs.
func headerBytes(ctx *fasthttp.RequestCtx, name string) []byte {
	for k, v := range ctx.Request.Header.All() {
		if len(k) == len(name) && strings.EqualFold(string(k), name) {
			return v
		}
	}
	return nil
}

// requestID returns the client's X-Request-ID when it is a safe token, or a
// new one.
func (s *Server) requestID(ctx *fasthttp.RequestCtx) string {
	if id := header(ctx, "X-Request-ID"); id != "" && len(id) <= 128 && safeToken(id) {
		return id
	}
	return s.ids.newRequestID()
}

func safeToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':') {
			return false
		}
	}
	return true
}

// prefersRussian reports whether the Accept-Language value ranks a Russian
// tag highest (by q value, first listed on a tie).
func prefersRussian(value string) bool {
	best, bestQ := "", -1.0
	for _, part := range strings.Split(value, ",") {
		tag, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if tag == "" {
			continue
		}
		q := 1.0
		if v, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				q = f
			}
		}
		if q > bestQ {
			best, bestQ = tag, q
		}
	}
	primary, _, _ := strings.Cut(strings.ToLower(best), "-")
	return primary == "ru"
}
