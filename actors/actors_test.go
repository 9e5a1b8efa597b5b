package actors

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/goleak"

	"github.com/rmqrouter/rmqrouter/metrics"
	"github.com/rmqrouter/rmqrouter/security"
	"github.com/rmqrouter/rmqrouter/transport"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/awnumar/memguard/core.NewCoffer.func1"),
	)
}

func TestBackoffStaysWithinCeiling(t *testing.T) {
	base, max := time.Second, 30*time.Second
	for attempt := 0; attempt < 70; attempt++ {
		ceiling := max
		if attempt < 5 {
			ceiling = base << attempt
		}
		seen := map[time.Duration]bool{}
		for i := 0; i < 200; i++ {
			d := backoff(base, max, attempt)
			if d < 0 || d >= ceiling {
				t.Fatalf("attempt %d: delay %v outside [0, %v)", attempt, d, ceiling)
			}
			seen[d] = true
		}
		if len(seen) < 100 {
			t.Fatalf("attempt %d: only %d distinct delays in 200: not jittered", attempt, len(seen))
		}
	}
}

func TestReplyAnswersOnce(t *testing.T) {
	r := newReply[int]()
	if !r.send(1) {
		t.Fatal("first send lost")
	}
	if r.send(2) || r.abandon() {
		t.Fatal("a second answer was accepted")
	}
	if v := <-r.ch; v != 1 {
		t.Fatalf("got %d", v)
	}
	a := newReply[int]()
	if !a.abandon() || a.send(3) {
		t.Fatal("send after abandon was accepted")
	}
}

func TestTagRegistry(t *testing.T) {
	r := newTagRegistry()
	pid := actor.NewPID("local", "s")
	a := r.issue(pid, "owner")
	b := r.issue(pid, "owner")
	if a == b || b != a+1 {
		t.Fatalf("tags %d and %d are not distinct and increasing", a, b)
	}
	if e, ok := r.lookup(a); !ok || e.owner != "owner" || e.stale {
		t.Fatalf("lookup = %+v %v", e, ok)
	}
	r.markStale([]uint64{a})
	if e, _ := r.lookup(a); !e.stale {
		t.Fatal("tag not stale after markStale")
	}
	r.sweep(time.Hour)
	if _, ok := r.lookup(a); !ok {
		t.Fatal("sweep dropped a tag that is stale for less than the retention")
	}
	r.sweep(0)
	if _, ok := r.lookup(a); ok {
		t.Fatal("sweep kept a tag past the retention")
	}
	if _, ok := r.lookup(b); !ok {
		t.Fatal("sweep dropped a live tag")
	}
	r.remove(b)
	if _, ok := r.lookup(b); ok {
		t.Fatal("removed tag still known")
	}
}

// TestUnreachableBrokerAnswersAndStops checks that a request to a broker
// that refuses connections is answered with ErrBrokerUnavailable and that
// Shutdown leaves no goroutine behind.
func TestUnreachableBrokerAnswersAndStops(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s := NewSystem(Config{
		Endpoints:   []transport.Endpoint{{Scheme: "amqp", Host: "127.0.0.1", Port: 1}},
		DialTimeout: time.Second,
	}, log, metrics.New())
	creds, err := security.NewStore(1).NewCredentials("u", []byte("p"))
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = s.Publish(ctx, creds, "/", &transport.Message{RoutingKey: "k"})
	if err == nil || !isUnavailable(err) {
		t.Fatalf("Publish = %v, want broker unavailable", err)
	}
	if _, err := s.Fetch(ctx, creds, "/", "q", time.Second, false); !isUnavailable(err) {
		t.Fatalf("Fetch = %v, want broker unavailable", err)
	}
	if err := s.Settle(ctx, creds, 12345, true, false); err != ErrDeliveryTagNotFound {
		t.Fatalf("Settle of an unknown tag = %v", err)
	}
	s.Shutdown(ctx)
	if err := s.Publish(ctx, creds, "/", &transport.Message{}); err != ErrShuttingDown {
		t.Fatalf("Publish after Shutdown = %v", err)
	}
}

func isUnavailable(err error) bool {
	te, ok := err.(*transport.Error)
	return ok && te.Kind == transport.ErrBrokerUnavailable
}

// fakeChannel is a channel load for pickChannel.
type fakeChannel struct {
	closed   bool
	inFlight int
}

func (f fakeChannel) Closed() bool  { return f.closed }
func (f fakeChannel) InFlight() int { return f.inFlight }

func TestPickChannelFillsFirst(t *testing.T) {
	cases := []struct {
		name     string
		inFlight []int
		closed   []bool
		tried    uint64
		want     int
	}{
		{"first below the fill", []int{channelFill - 1, 0}, []bool{false, false}, 0, 0},
		{"first full", []int{channelFill, 5}, []bool{false, false}, 0, 1},
		{"all full, fewest wins", []int{channelFill + 9, channelFill + 3, channelFill + 7}, []bool{false, false, false}, 0, 1},
		{"first closed", []int{0, 0}, []bool{true, false}, 0, 1},
		{"first tried", []int{0, 0}, []bool{false, false}, 1, 1},
		{"none left", []int{0, 0}, []bool{true, false}, 2, -1},
		{"empty pool", nil, nil, 0, -1},
	}
	for _, c := range cases {
		channels := make([]fakeChannel, len(c.inFlight))
		for i := range channels {
			channels[i] = fakeChannel{closed: c.closed[i], inFlight: c.inFlight[i]}
		}
		got := pickChannel(channels, c.tried)
		if got != c.want {
			t.Errorf("%s: picked %d, want %d", c.name, got, c.want)
		}
	}
}
