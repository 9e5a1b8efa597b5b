package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeRouter implements the parts of the router's HTTP API that the harness calls, and
// records what it received so the tests can check the requests against the API contract.
type fakeRouter struct {
	t        *testing.T
	mu       sync.Mutex
	payload  string
	calls    map[string]int
	acked    []json.RawMessage
	deleted  []string
	fetches  int
	tooBusy  bool // respond to the next publish with 429
	problems []string
}

func (f *fakeRouter) fail(format string, args ...any) {
	f.problems = append(f.problems, fmt.Sprintf(format, args...))
}

func (f *fakeRouter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	route := r.Method + " " + r.URL.Path
	f.calls[route]++

	want := "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))
	if got := r.Header.Get("Authorization"); got != want {
		f.fail("%s: Authorization = %q, want %q", route, got, want)
	}
	body, _ := io.ReadAll(r.Body)

	switch route {
	case "POST /v1/publish":
		if f.tooBusy {
			f.tooBusy = false
			w.WriteHeader(429)
			fmt.Fprint(w, `{"error":"too_many_in_flight","detail":"busy","request_id":"r1"}`)
			return
		}
		var msg map[string]any
		if err := json.Unmarshal(body, &msg); err != nil {
			f.fail("publish body is not JSON: %v", err)
		}
		if msg["exchange"] != "bench.x" || msg["routing_key"] != "rk" || msg["payload"] != f.payload || msg["persistence"] != 2.0 {
			f.fail("publish body = %v", msg)
		}
		if ct := r.Header.Get("Content-Type"); ct != "application/json" {
			f.fail("publish Content-Type = %q", ct)
		}
		w.WriteHeader(202)
		fmt.Fprint(w, `{"status":"accepted"}`)
	case "POST /v1/exchanges/bench.x/publish":
		if got := r.URL.Query().Get("routing_key"); got != "rk" {
			f.fail("raw publish routing_key = %q, want rk", got)
		}
		if got := r.Header.Get("X-Persistent"); got != "true" {
			f.fail("raw publish X-Persistent = %q, want true", got)
		}
		if string(body) != f.payload {
			f.fail("raw publish body = %q, want the payload", body)
		}
		w.WriteHeader(202)
	case "POST /v1/publish/batch":
		var batch struct {
			Messages []map[string]any `json:"messages"`
		}
		if err := json.Unmarshal(body, &batch); err != nil || len(batch.Messages) != 3 {
			f.fail("batch body = %s (%v), want 3 messages", body, err)
		}
		w.WriteHeader(207)
		fmt.Fprint(w, `{"results":[{"status":"accepted"},{"status":"accepted"},{"status":422,"error":"unroutable"}]}`)
	case "POST /v1/sessions":
		var req map[string]any
		if err := json.Unmarshal(body, &req); err != nil || req["queue"] != "bench.q" || req["prefetch"] != 20.0 {
			f.fail("session body = %s", body)
		}
		w.WriteHeader(201)
		fmt.Fprint(w, `{"session_id":"s-1","queue":"bench.q"}`)
	case "GET /v1/sessions/s-1/messages":
		if q := r.URL.Query(); q.Get("max") != "5" || q.Get("wait") != "1" {
			f.fail("fetch query = %s, want max=5&wait=1", r.URL.RawQuery)
		}
		f.fetches++
		if f.fetches == 1 {
			fmt.Fprint(w, `{"messages":[{"delivery_tag":1,"body":"a"},{"delivery_tag":2,"body":"b"},{"delivery_tag":3,"body":"c"}]}`)
			return
		}
		fmt.Fprint(w, `{"messages":[]}`)
	case "POST /v1/sessions/s-1/ack":
		var req struct {
			DeliveryTags []json.RawMessage `json:"delivery_tags"`
		}
		if err := json.Unmarshal(body, &req); err != nil {
			f.fail("ack body = %s: %v", body, err)
		}
		f.acked = append(f.acked, req.DeliveryTags...)
		fmt.Fprint(w, `{"status":"acknowledged"}`)
	case "DELETE /v1/sessions/s-1":
		f.deleted = append(f.deleted, "s-1")
		w.WriteHeader(204)
	default:
		f.fail("unexpected request %s", route)
		w.WriteHeader(404)
	}
}

func startFakeRouter(t *testing.T) (*fakeRouter, *routerClient) {
	t.Helper()
	fake := &fakeRouter{t: t, payload: string(makePayload(64)), calls: map[string]int{}}
	server := httptest.NewServer(fake)
	t.Cleanup(server.Close)
	client, err := newRouterClient(server.URL, 4, 5*time.Second, "")
	if err != nil {
		t.Fatalf("newRouterClient: %v", err)
	}
	t.Cleanup(client.close)
	t.Cleanup(func() {
		fake.mu.Lock()
		defer fake.mu.Unlock()
		for _, p := range fake.problems {
			t.Error(p)
		}
	})
	return fake, client
}

func testRoundCtx() (*roundCtx, *workerStats) {
	r := newRound(sideRouter, 1, 1)
	r.start = time.Now()
	return &roundCtx{soft: context.Background(), hard: context.Background(), r: r}, r.workers[0]
}

var (
	testCred = credential{user: "alice", password: "s3cret"}
	testTopo = topology{exchange: "bench.x", queue: "bench.q", routingKey: "rk"}
)

func TestRouterPublisherJSONAndRaw(t *testing.T) {
	fake, client := startFakeRouter(t)
	rc, st := testRoundCtx()

	p := newRouterPublisher(client, testCred, testTopo, []byte(fake.payload), publishAlternate, 1)
	defer p.close()
	fake.mu.Lock()
	fake.tooBusy = true
	fake.mu.Unlock()
	for range 5 {
		p.step(rc, st)
	}

	fake.mu.Lock()
	defer fake.mu.Unlock()
	if fake.calls["POST /v1/publish"] != 3 || fake.calls["POST /v1/exchanges/bench.x/publish"] != 2 {
		t.Errorf("calls = %v, want 3 JSON and 2 raw publishes in turn", fake.calls)
	}
	if st.published != 4 {
		t.Errorf("published = %d, want 4 (one of 5 answered 429)", st.published)
	}
	if st.errors["429 too_many_in_flight"] != 1 {
		t.Errorf("errors = %v, want one 429 too_many_in_flight", st.errors)
	}
	if len(st.latencies) != 4 {
		t.Errorf("got %d latencies, want one per accepted request (4)", len(st.latencies))
	}
}

func TestRouterPublisherBatch(t *testing.T) {
	fake, client := startFakeRouter(t)
	rc, st := testRoundCtx()

	p := newRouterPublisher(client, testCred, testTopo, []byte(fake.payload), publishBatch, 3)
	defer p.close()
	p.step(rc, st)
	p.step(rc, st)

	if st.published != 4 {
		t.Errorf("published = %d, want 2 accepted of 3 in each of 2 batches", st.published)
	}
	if st.errors["batch item 422 unroutable"] != 2 {
		t.Errorf("errors = %v, want two batch item 422 unroutable", st.errors)
	}
}

func TestRouterConsumerFetchAckDelete(t *testing.T) {
	fake, client := startFakeRouter(t)
	rc, st := testRoundCtx()

	c, err := newRouterConsumer(client, testCred, testTopo.queue, 20, 5, 1)
	if err != nil {
		t.Fatalf("newRouterConsumer: %v", err)
	}
	c.step(rc, st) // three messages, then an ack
	c.step(rc, st) // empty
	c.close()

	fake.mu.Lock()
	defer fake.mu.Unlock()
	if st.consumed != 3 {
		t.Errorf("consumed = %d, want 3", st.consumed)
	}
	if st.emptyPolls != 1 {
		t.Errorf("empty polls = %d, want 1", st.emptyPolls)
	}
	var tags []string
	for _, tag := range fake.acked {
		tags = append(tags, string(tag))
	}
	if strings.Join(tags, ",") != "1,2,3" {
		t.Errorf("acked tags = %v, want 1,2,3", tags)
	}
	if len(fake.deleted) != 1 {
		t.Errorf("sessions deleted = %v, want s-1 once", fake.deleted)
	}
	if len(st.errors) != 0 {
		t.Errorf("errors = %v, want none", st.errors)
	}
}

func TestRouterConsumerRefusedSession(t *testing.T) {
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(404)
		fmt.Fprint(w, `{"error":"queue_not_found","detail":"no queue","request_id":"r"}`)
	}))
	defer server.Close()
	client, err := newRouterClient(server.URL, 2, 5*time.Second, "")
	if err != nil {
		t.Fatalf("newRouterClient: %v", err)
	}
	defer client.close()

	_, err = newRouterConsumer(client, testCred, "missing", 10, 10, 1)
	if err == nil || !strings.Contains(err.Error(), "404 queue_not_found") {
		t.Errorf("newRouterConsumer error = %v, want one naming 404 queue_not_found", err)
	}
}

func TestRouterPublisherConnectionRefused(t *testing.T) {
	port, err := freeLoopbackPort()
	if err != nil {
		t.Fatalf("freeLoopbackPort: %v", err)
	}
	client, err := newRouterClient(fmt.Sprintf("http://127.0.0.1:%d", port), 2, 2*time.Second, "")
	if err != nil {
		t.Fatalf("newRouterClient: %v", err)
	}
	defer client.close()
	rc, st := testRoundCtx()

	p := newRouterPublisher(client, testCred, testTopo, []byte("x"), publishJSON, 1)
	defer p.close()
	p.step(rc, st)
	if st.errors["http connection refused"] != 1 {
		t.Errorf("errors = %v, want one http connection refused", st.errors)
	}
}
