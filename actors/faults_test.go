package actors

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/rmqrouter/rmqrouter/internal/faultproxy"
	"github.com/rmqrouter/rmqrouter/metrics"
	"github.com/rmqrouter/rmqrouter/security"
	"github.com/rmqrouter/rmqrouter/transport"
)

// These tests use the real broker directly: the testenv helpers import
// this package and cannot be used from its own tests.

func testBrokerURL() transport.ParsedURL {
	raw := os.Getenv("RMQROUTER_TEST_AMQP_URL")
	if raw == "" {
		raw = "amqp://guest:guest@127.0.0.1:5672/"
	}
	p, err := transport.ParseURL(raw)
	if err != nil {
		panic(err)
	}
	return p
}

// testQueue declares a uniquely named durable queue and deletes it in
// cleanup.
func testQueue(t *testing.T) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "actors-fault-" + hex.EncodeToString(b[:])
	u := testBrokerURL()
	url := fmt.Sprintf("amqp://%s:%s@%s:%d/", u.User, u.Password, u.Endpoint.Host, u.Endpoint.Port)
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatalf("connect to the test broker: %v", err)
	}
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(name, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	t.Cleanup(func() {
		if conn, err := amqp.Dial(url); err == nil {
			if ch, err := conn.Channel(); err == nil {
				_, _ = ch.QueueDelete(name, false, false, false)
			}
			conn.Close()
		}
	})
	return name
}

func testSystem(t *testing.T, cfg Config) (*System, *security.Credentials, *metrics.Metrics) {
	t.Helper()
	u := testBrokerURL()
	if len(cfg.Endpoints) == 0 {
		cfg.Endpoints = []transport.Endpoint{u.Endpoint}
	}
	m := metrics.New()
	s := NewSystem(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), m)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	creds, err := security.NewStore(10).NewCredentials(u.User, []byte(u.Password))
	if err != nil {
		t.Fatal(err)
	}
	return s, creds, m
}

func publishTo(s *System, creds *security.Credentials, queue string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return s.Publish(ctx, creds, "/", &transport.Message{RoutingKey: queue, Mandatory: true, DeliveryMode: 2, Body: []byte("x")})
}

// TestFaultPanicInConnectionActor injects a panic in a connection actor
// while publishes are in flight: the panicking request and every other one
// get exactly one answer, the actor restarts with a fresh connection, and
// the next request succeeds.
func TestFaultPanicInConnectionActor(t *testing.T) {
	s, creds, m := testSystem(t, Config{RetryBaseDelay: 50 * time.Millisecond, RetryMaxDelay: 200 * time.Millisecond})
	q := testQueue(t)
	if err := publishTo(s, creds, q, 5*time.Second); err != nil {
		t.Fatalf("publish before the panic: %v", err)
	}

	var wg sync.WaitGroup
	answers := make([]error, 50)
	for i := range answers {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			answers[i] = publishTo(s, creds, q, 5*time.Second)
		}(i)
	}
	injected := &panicRequest{publishCmd: publishCmd{route: s.route(creds, "/"), result: newReply[error]()}, reason: "test"}
	s.root.Send(s.supervisor, injected)
	select {
	case err := <-injected.result.ch:
		if !errors.Is(err, ErrActorGone) {
			t.Fatalf("the panicking request was answered %v, want ErrActorGone", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the panicking request got no answer")
	}
	select {
	case err := <-injected.result.ch:
		t.Fatalf("the panicking request was answered twice (second: %v)", err)
	case <-time.After(100 * time.Millisecond):
	}
	wg.Wait()
	for i, err := range answers {
		if err != nil && !isInfraFailure(err) {
			t.Fatalf("request %d in flight during the panic got %v", i, err)
		}
	}

	deadline := time.Now().Add(3 * time.Second)
	for {
		err := publishTo(s, creds, q, 2*time.Second)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no publish succeeded after the restart: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := testutil.ToFloat64(m.ActorRestarts.WithLabelValues("connection")); n != 1 {
		t.Fatalf("connection restarts = %v, want 1", n)
	}
}

// TestFaultStopWithRequestsInFlight stops a connection actor while 100
// publishes wait for confirms that a stalled network holds back: each gets
// exactly one answer within 100 ms.
func TestFaultStopWithRequestsInFlight(t *testing.T) {
	u := testBrokerURL()
	proxy, err := faultproxy.Start(fmt.Sprintf("%s:%d", u.Endpoint.Host, u.Endpoint.Port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	s, creds, _ := testSystem(t, Config{
		Endpoints:             []transport.Endpoint{{Scheme: "amqp", Host: "127.0.0.1", Port: proxy.Addr().Port}},
		BulkheadMaxConcurrent: 100,
	})
	q := testQueue(t)
	if err := publishTo(s, creds, q, 5*time.Second); err != nil {
		t.Fatalf("publish before the stall: %v", err)
	}

	proxy.Stall()
	const n = 100
	type answer struct {
		err error
		at  time.Time
	}
	answers := make(chan answer, 2*n)
	for i := 0; i < n; i++ {
		go func() {
			err := publishTo(s, creds, q, 20*time.Second)
			answers <- answer{err: err, at: time.Now()}
		}()
	}
	key := s.route(creds, "/").key
	deadline := time.Now().Add(5 * time.Second)
	for s.bulkheadOf(key).snapshot().InFlight < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d requests in flight", s.bulkheadOf(key).snapshot().InFlight)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // let them reach the channel

	snap, err := s.Snapshot(context.Background())
	if err != nil || len(snap.Connections) != 1 || snap.Connections[0].pid == nil {
		t.Fatalf("snapshot %+v, %v", snap, err)
	}
	stoppedAt := time.Now()
	s.root.Stop(snap.Connections[0].pid)

	for i := 0; i < n; i++ {
		select {
		case a := <-answers:
			if a.err == nil {
				t.Fatalf("a publish was confirmed although the network was stalled")
			}
			if d := a.at.Sub(stoppedAt); d > 100*time.Millisecond {
				t.Fatalf("answer %d came %v after the stop, want within 100 ms (%v)", i, d, a.err)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("only %d of %d requests were answered", i, n)
		}
	}
	select {
	case a := <-answers:
		t.Fatalf("an extra answer arrived: %v", a.err)
	case <-time.After(100 * time.Millisecond):
	}
}
