package testenv

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/rmqrouter/rmqrouter/actors"
	"github.com/rmqrouter/rmqrouter/docs"
	"github.com/rmqrouter/rmqrouter/metrics"
	"github.com/rmqrouter/rmqrouter/router"
	"github.com/rmqrouter/rmqrouter/security"
	"github.com/rmqrouter/rmqrouter/transport"
)

// Stack is the whole router running in-process on a loopback port.
type Stack struct {
	t       testing.TB
	URL     string
	System  *actors.System
	Metrics *metrics.Metrics
	Logs    *SyncBuffer
	client  *http.Client

	mu       sync.Mutex
	statuses map[int]int
}

// Options changes the defaults of a Stack.
type Options struct {
	Actors         actors.Config
	PublishTimeout time.Duration
	AdminToken     string
	// Quiet logs at info level instead of debug, for load and fault tests.
	Quiet bool
	// MaxBodyBytes is the router's body limit; zero takes its default.
	MaxBodyBytes int
}

// SyncBuffer is a bytes.Buffer safe for concurrent writes.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// NewStack starts the router against the test broker and stops it in
// cleanup. The cleanup fails the test if any response had status 500.
func NewStack(t testing.TB, opts Options) *Stack {
	t.Helper()
	parsed, err := transport.ParseURL(AMQPURL())
	if err != nil {
		t.Fatalf("parse test broker URL: %v", err)
	}
	cfg := opts.Actors
	if len(cfg.Endpoints) == 0 {
		cfg.Endpoints = []transport.Endpoint{parsed.Endpoint}
	}
	if cfg.DefaultVhost == "" {
		cfg.DefaultVhost = parsed.Vhost
	}

	logs := &SyncBuffer{}
	level := slog.LevelDebug
	if opts.Quiet {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: level}))
	m := metrics.New()
	system := actors.NewSystem(cfg, log.With("task", "actors"), m)
	timeout := opts.PublishTimeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	server := router.New(router.Config{PublishTimeout: timeout, OpenAPI: docs.OpenAPI, AdminToken: opts.AdminToken, MaxBodyBytes: opts.MaxBodyBytes},
		system, security.NewStore(100), m, log, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = server.Serve(ln)
	}()

	s := &Stack{
		t:        t,
		URL:      "http://" + ln.Addr().String(),
		System:   system,
		Metrics:  m,
		Logs:     logs,
		client:   &http.Client{Timeout: 5 * time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 256}},
		statuses: map[int]int{},
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = server.Shutdown(ctx)
		<-served
		system.Shutdown(ctx)
		s.client.CloseIdleConnections()
		s.mu.Lock()
		defer s.mu.Unlock()
		if n := s.statuses[500]; n > 0 {
			t.Errorf("%d responses had status 500", n)
		}
	})
	return s
}

// Response is a finished HTTP exchange.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Do sends a request with Basic credentials user:password (none when user
// is empty) and returns the response. headers are added as given.
func (s *Stack) Do(method, path, user, password string, body []byte, headers map[string]string) Response {
	s.t.Helper()
	r, err := s.Send(method, path, user, password, body, headers)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

// Send is Do for use outside the test goroutine: it returns errors instead
// of failing the test.
func (s *Stack) Send(method, path, user, password string, body []byte, headers map[string]string) (Response, error) {
	req, err := http.NewRequest(method, s.URL+path, bytes.NewReader(body))
	if err != nil {
		return Response{}, err
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	for k, v := range headers {
		req.Header[k] = []string{v}
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return Response{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return Response{}, err
	}
	s.mu.Lock()
	s.statuses[resp.StatusCode]++
	s.mu.Unlock()
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: data}, nil
}

// Guest sends a request as guest:guest.
func (s *Stack) Guest(method, path string, body []byte) Response {
	s.t.Helper()
	return s.Do(method, path, "guest", "guest", body, nil)
}
