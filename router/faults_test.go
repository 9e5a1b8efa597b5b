package router_test

import (
	"encoding/json"
	"fmt"
	"math"
	"net"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rmqrouter/rmqrouter/actors"
	"github.com/rmqrouter/rmqrouter/internal/faultproxy"
	"github.com/rmqrouter/rmqrouter/internal/testenv"
	"github.com/rmqrouter/rmqrouter/transport"
)

// outcome is one publish request seen by a load generator.
type outcome struct {
	id      string
	status  int
	code    string
	at      time.Time
	latency time.Duration
}

// loadGen publishes from workers until stopped and records every outcome.
type loadGen struct {
	s       *testenv.Stack
	user    string
	pass    string
	queue   string
	pause   time.Duration
	stop    chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex
	results []outcome
	seq     atomic.Int64
}

func startLoad(s *testenv.Stack, user, pass, queue string, workers int, pause time.Duration) *loadGen {
	g := &loadGen{s: s, user: user, pass: pass, queue: queue, pause: pause, stop: make(chan struct{})}
	for w := 0; w < workers; w++ {
		g.wg.Add(1)
		go g.work()
	}
	return g
}

func (g *loadGen) work() {
	defer g.wg.Done()
	for {
		select {
		case <-g.stop:
			return
		default:
		}
		id := fmt.Sprintf("%s-%d", g.user, g.seq.Add(1))
		start := time.Now()
		r, err := g.s.Send("POST", "/v1/publish", g.user, g.pass,
			[]byte(`{"exchange":"","routing_key":"`+g.queue+`","payload":"x","message_id":"`+id+`"}`), nil)
		o := outcome{id: id, at: time.Now(), latency: time.Since(start)}
		if err != nil {
			o.status = -1
		} else {
			o.status = r.Status
			var body struct{ Error string }
			_ = json.Unmarshal(r.Body, &body)
			o.code = body.Error
		}
		g.mu.Lock()
		g.results = append(g.results, o)
		g.mu.Unlock()
		if o.status != 202 && g.pause > 0 {
			time.Sleep(g.pause)
		}
	}
}

func (g *loadGen) finish() []outcome {
	close(g.stop)
	g.wg.Wait()
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]outcome(nil), g.results...)
}

func countCodes(results []outcome) map[string]int {
	m := map[string]int{}
	for _, o := range results {
		key := fmt.Sprint(o.status)
		if o.code != "" {
			key += " " + o.code
		}
		m[key]++
	}
	return m
}

// firstAcceptedAfter returns the time of the first 202 after t0.
func firstAcceptedAfter(results []outcome, t0 time.Time) (time.Time, bool) {
	var first time.Time
	for _, o := range results {
		if o.status == 202 && o.at.After(t0) && (first.IsZero() || o.at.Before(first)) {
			first = o.at
		}
	}
	return first, !first.IsZero()
}

// expectAllAcceptedStored drains queue and checks that every message
// with a 202 response is there. Copies of a message must have the same body.
func expectAllAcceptedStored(t *testing.T, b *testenv.Broker, queue string, results []outcome) {
	t.Helper()
	accepted := map[string]bool{}
	for _, o := range results {
		if o.status == 202 {
			accepted[o.id] = true
		}
	}
	testenv.Eventually(t, 10*time.Second, "accepted messages in the queue", func() bool { return b.Count(queue) >= len(accepted) })
	seen := map[string]string{}
	for {
		d, ok := b.Get(queue)
		if !ok {
			break
		}
		if prev, dup := seen[d.MessageId]; dup && prev != string(d.Body) {
			t.Fatalf("message %s stored twice with different bodies", d.MessageId)
		}
		seen[d.MessageId] = string(d.Body)
	}
	lost := 0
	for id := range accepted {
		if _, ok := seen[id]; !ok {
			lost++
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d messages answered 202 are not in the queue", lost, len(accepted))
	}
	t.Logf("%d accepted messages all stored (%d in the queue)", len(accepted), len(seen))
}

// restoreBroker makes sure the broker app runs and the memory watermark
// is back at its default, whatever the test did.
func restoreBroker(t *testing.T) {
	t.Cleanup(func() {
		_ = exec.Command("rabbitmqctl", "set_vm_memory_high_watermark", "0.4").Run()
		_ = exec.Command("rabbitmqctl", "start_app").Run()
		_ = exec.Command("rabbitmqctl", "await_startup", "--timeout", "120").Run()
	})
}

func fastRecovery() actors.Config {
	return actors.Config{
		RetryBaseDelay:   200 * time.Millisecond,
		RetryMaxDelay:    2 * time.Second,
		RetryMaxAttempts: 30,
		Breaker: actors.BreakerConfig{
			FailureThreshold: 5,
			Window:           10 * time.Second,
			RecoveryTimeout:  3 * time.Second,
			HalfOpenRequests: 1,
		},
	}
}

// TestFaultCloseAllConnections closes every broker connection under a
// 64-client publish load.
func TestFaultCloseAllConnections(t *testing.T) {
	b := testenv.NewBroker(t)
	s := testenv.NewStack(t, testenv.Options{Actors: fastRecovery(), Quiet: true})
	q := b.Queue(testenv.Name("fault-close"))

	g := startLoad(s, "guest", "guest", q, 64, 10*time.Millisecond)
	time.Sleep(1500 * time.Millisecond)
	closedAt := time.Now()
	testenv.Rabbitmqctl(t, "close_all_connections", "rmqrouter fault test")
	time.Sleep(6 * time.Second)
	results := g.finish()

	t.Logf("outcomes: %v", countCodes(results))
	resumed, ok := firstAcceptedAfter(results, closedAt.Add(100*time.Millisecond))
	if !ok {
		t.Fatal("no publish succeeded after the connections were closed")
	}
	t.Logf("publishing resumed %v after close_all_connections", resumed.Sub(closedAt).Round(time.Millisecond))
	if d := resumed.Sub(closedAt); d > 5*time.Second {
		t.Fatalf("publishing resumed after %v, want within 5 s", d)
	}
	expectAllAcceptedStored(t, b, q, results)
}

// TestFaultStopApp stops the broker app under load: the breaker opens and
// answers fast, and publishing resumes after start_app without losing a
// confirmed message.
func TestFaultStopApp(t *testing.T) {
	restoreBroker(t)
	b := testenv.NewBroker(t)
	cfg := fastRecovery()
	s := testenv.NewStack(t, testenv.Options{Actors: cfg, Quiet: true})
	q := b.Queue(testenv.Name("fault-stop"))

	g := startLoad(s, "guest", "guest", q, 4, 10*time.Millisecond)
	time.Sleep(time.Second)
	testenv.Rabbitmqctl(t, "stop_app")
	stoppedAt := time.Now()
	time.Sleep(5 * time.Second)
	startingAt := time.Now()
	testenv.Rabbitmqctl(t, "start_app")
	testenv.Rabbitmqctl(t, "await_startup")
	readyAt := time.Now()
	time.Sleep(cfg.Breaker.RecoveryTimeout + cfg.RetryMaxDelay + 2*time.Second)
	results := g.finish()
	t.Logf("outcomes: %v", countCodes(results))

	// Latency of the fast failures while the broker is down, without the
	// CPU spikes of its own stop and start on this shared machine.
	var fastFails []time.Duration
	for _, o := range results {
		if o.code == "circuit_open" && o.at.After(stoppedAt) && o.at.Before(startingAt) {
			fastFails = append(fastFails, o.latency)
		}
	}
	if len(fastFails) == 0 {
		t.Fatal("the breaker never opened while the broker was down")
	}
	sort.Slice(fastFails, func(i, j int) bool { return fastFails[i] < fastFails[j] })
	p99 := fastFails[int(math.Ceil(float64(len(fastFails))*0.99))-1]
	t.Logf("circuit_open answers: %d, p50 %v, p99 %v", len(fastFails), fastFails[len(fastFails)/2], p99)
	if p99 > 5*time.Millisecond {
		t.Errorf("p99 of circuit_open answers is %v, want under 5 ms", p99)
	}

	resumed, ok := firstAcceptedAfter(results, readyAt)
	if !ok {
		t.Fatal("publishing did not resume after start_app")
	}
	limit := cfg.Breaker.RecoveryTimeout + cfg.RetryMaxDelay
	t.Logf("publishing resumed %v after the broker was ready (limit %v)", resumed.Sub(readyAt).Round(time.Millisecond), limit)
	if d := resumed.Sub(readyAt); d > limit {
		t.Fatalf("publishing resumed after %v, want within %v", d, limit)
	}
	expectAllAcceptedStored(t, b, q, results)
}

// TestFaultMemoryAlarm raises a memory alarm: publishes fail fast with
// broker_blocked, goroutines stay bounded, and publishing resumes after the
// alarm clears.
func TestFaultMemoryAlarm(t *testing.T) {
	restoreBroker(t)
	b := testenv.NewBroker(t)
	s := testenv.NewStack(t, testenv.Options{Actors: fastRecovery(), PublishTimeout: 10 * time.Second})
	q := b.Queue(testenv.Name("fault-alarm"))
	r := s.Guest("POST", "/v1/publish", mustJSON(t, map[string]any{"exchange": "", "routing_key": q, "payload": "before"}))
	expectStatus(t, r, 202)

	baseline := runtime.NumGoroutine()
	testenv.Rabbitmqctl(t, "set_vm_memory_high_watermark", "0.0000001")
	alarmAt := time.Now()

	// 50 requests per second for 6 s, each on its own goroutine.
	var mu sync.Mutex
	var results []outcome
	var wg sync.WaitGroup
	maxGoroutines := 0
	tick := time.NewTicker(20 * time.Millisecond)
	for i := 0; i < 300; i++ {
		<-tick.C
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			start := time.Now()
			id := fmt.Sprintf("alarm-%d", i)
			r, err := s.Send("POST", "/v1/publish", "guest", "guest", []byte(`{"exchange":"","routing_key":"`+q+`","payload":"x","message_id":"`+id+`"}`), nil)
			o := outcome{id: id, at: time.Now(), latency: time.Since(start), status: -1}
			if err == nil {
				o.status = r.Status
				var body struct{ Error string }
				_ = json.Unmarshal(r.Body, &body)
				o.code = body.Error
			}
			mu.Lock()
			results = append(results, o)
			mu.Unlock()
		}(i)
		if n := runtime.NumGoroutine(); n > maxGoroutines {
			maxGoroutines = n
		}
	}
	tick.Stop()
	wg.Wait()
	t.Logf("outcomes under the alarm: %v; goroutines: baseline %d, max %d", countCodes(results), baseline, maxGoroutines)

	var blockedBy time.Time
	for _, o := range results {
		if o.code == "broker_blocked" && (blockedBy.IsZero() || o.at.Before(blockedBy)) {
			blockedBy = o.at
		}
	}
	if blockedBy.IsZero() {
		t.Fatal("no publish was answered 503 broker_blocked under the alarm")
	}
	t.Logf("first broker_blocked answer %v after the alarm", blockedBy.Sub(alarmAt).Round(time.Millisecond))
	if d := blockedBy.Sub(alarmAt); d > 2*time.Second {
		t.Fatalf("first broker_blocked after %v, want within 2 s", d)
	}
	slow := 0
	for _, o := range results {
		if o.at.Sub(alarmAt) > 2*time.Second && o.latency > 2*time.Second {
			slow++
		}
	}
	if slow > 0 {
		t.Fatalf("%d publishes waited longer than 2 s under the alarm", slow)
	}
	if maxGoroutines > baseline+150 {
		t.Fatalf("goroutines grew from %d to %d under the alarm", baseline, maxGoroutines)
	}

	testenv.Rabbitmqctl(t, "set_vm_memory_high_watermark", "0.4")
	clearedAt := time.Now()
	var resumed time.Duration
	testenv.Eventually(t, 5*time.Second, "publishing to resume after the alarm cleared", func() bool {
		r, err := s.Send("POST", "/v1/publish", "guest", "guest", []byte(`{"exchange":"","routing_key":"`+q+`","payload":"after"}`), nil)
		resumed = time.Since(clearedAt)
		return err == nil && r.Status == 202
	})
	t.Logf("publishing resumed %v after the alarm cleared", resumed.Round(time.Millisecond))
}

// TestFaultSilentNetworkLoss stalls the network between router and broker
// without a reset: the router detects it by missed heartbeats and every
// request in flight ends within its deadline.
func TestFaultSilentNetworkLoss(t *testing.T) {
	b := testenv.NewBroker(t)
	parsed, err := transport.ParseURL(testenv.AMQPURL())
	if err != nil {
		t.Fatal(err)
	}
	proxy, err := faultproxy.Start(fmt.Sprintf("%s:%d", parsed.Endpoint.Host, parsed.Endpoint.Port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	cfg := fastRecovery()
	cfg.Heartbeat = time.Second
	cfg.Endpoints = []transport.Endpoint{{Scheme: "amqp", Host: "127.0.0.1", Port: proxy.Addr().Port}}
	const deadline = 5 * time.Second
	s := testenv.NewStack(t, testenv.Options{Actors: cfg, PublishTimeout: deadline})
	q := b.Queue(testenv.Name("fault-stall"))

	r := s.Guest("POST", "/v1/publish", mustJSON(t, map[string]any{"exchange": "", "routing_key": q, "payload": "before"}))
	expectStatus(t, r, 202)
	if v := testutil.ToFloat64(s.Metrics.ActiveConnections); v != 1 {
		t.Fatalf("active connections = %v, want 1", v)
	}

	proxy.Stall()
	stalledAt := time.Now()
	g := startLoad(s, "guest", "guest", q, 8, 50*time.Millisecond)

	testenv.Eventually(t, 3*cfg.Heartbeat+1500*time.Millisecond, "the lost connection to be detected", func() bool {
		return testutil.ToFloat64(s.Metrics.ActiveConnections) == 0
	})
	detected := time.Since(stalledAt)
	t.Logf("silent loss detected after %v (heartbeat %v)", detected.Round(time.Millisecond), cfg.Heartbeat)
	time.Sleep(deadline + time.Second)
	results := g.finish()
	t.Logf("outcomes during the stall: %v", countCodes(results))
	for _, o := range results {
		if o.latency > deadline+time.Second {
			t.Fatalf("a request took %v, beyond its deadline of %v", o.latency, deadline)
		}
		if o.status == 202 {
			t.Fatalf("a publish was answered 202 while the network was stalled")
		}
	}
}

// TestFaultBrokerRestartManyUsers connects 200 users, restarts the broker
// and checks that reconnects are spread by jitter and that every user works
// again within 30 s.
func TestFaultBrokerRestartManyUsers(t *testing.T) {
	restoreBroker(t)
	b := testenv.NewBroker(t)
	cfg := fastRecovery()
	cfg.RetryBaseDelay = time.Second
	cfg.RetryMaxDelay = 5 * time.Second
	s := testenv.NewStack(t, testenv.Options{Actors: cfg})
	q := b.Queue(testenv.Name("fault-users"))
	users := testenv.Users(t, testenv.Name("fu"), 200, "pw-fault")

	publishAll := func() int {
		var ok atomic.Int64
		var wg sync.WaitGroup
		sem := make(chan struct{}, 32)
		for _, u := range users {
			wg.Add(1)
			sem <- struct{}{}
			go func(u string) {
				defer wg.Done()
				defer func() { <-sem }()
				r, err := s.Send("POST", "/v1/publish", u, "pw-fault", []byte(`{"exchange":"","routing_key":"`+q+`","payload":"x"}`), nil)
				if err == nil && r.Status == 202 {
					ok.Add(1)
				}
			}(u)
		}
		wg.Wait()
		return int(ok.Load())
	}
	if n := publishAll(); n != len(users) {
		t.Fatalf("%d of %d users published before the restart", n, len(users))
	}

	logsBefore := len(s.Logs.String())
	testenv.Rabbitmqctl(t, "stop_app")
	time.Sleep(2 * time.Second)
	testenv.Rabbitmqctl(t, "start_app")
	testenv.Rabbitmqctl(t, "await_startup")
	readyAt := time.Now()

	var working int
	testenv.Eventually(t, 30*time.Second, "all 200 users to publish again", func() bool {
		working = publishAll()
		return working == len(users)
	})
	t.Logf("all %d users published again %v after the broker was ready", len(users), time.Since(readyAt).Round(time.Millisecond))

	// The first reconnect delay of each connection is drawn at random.
	var delays []time.Duration
	for _, line := range strings.Split(s.Logs.String()[logsBefore:], "\n") {
		var rec struct {
			Msg     string `json:"msg"`
			Attempt string `json:"attempt"`
			Delay   string `json:"delay"`
		}
		if json.Unmarshal([]byte(line), &rec) != nil || rec.Msg != "reconnecting" || !strings.HasPrefix(rec.Attempt, "1 of") {
			continue
		}
		if d, err := time.ParseDuration(rec.Delay); err == nil {
			delays = append(delays, d)
		}
	}
	if len(delays) < len(users)/2 {
		t.Fatalf("only %d first reconnect attempts logged for %d connections", len(delays), len(users))
	}
	sort.Slice(delays, func(i, j int) bool { return delays[i] < delays[j] })
	spread := delays[len(delays)-1] - delays[0]
	t.Logf("first reconnect delays of %d connections: min %v, median %v, max %v", len(delays), delays[0], delays[len(delays)/2], delays[len(delays)-1])
	if spread < cfg.RetryBaseDelay/2 {
		t.Fatalf("first reconnect delays span only %v: not spread by jitter", spread)
	}
}

// TestFaultIsolation kills user A's connection again and again until its
// breaker opens, while user B publishes on its own connection.
func TestFaultIsolation(t *testing.T) {
	b := testenv.NewBroker(t)
	cfg := fastRecovery()
	cfg.Breaker.RecoveryTimeout = 30 * time.Second
	cfg.Breaker.FailureThreshold = 3
	s := testenv.NewStack(t, testenv.Options{Actors: cfg, AdminToken: "admin-test-token", Quiet: true})
	q := b.Queue(testenv.Name("fault-iso"))
	users := testenv.Users(t, testenv.Name("iso"), 2, "pw-iso")
	userA, userB := users[0], users[1]

	// A keeps requests in flight, so that each kill counts against its
	// breaker.
	gA := startLoad(s, userA, "pw-iso", q, 8, 5*time.Millisecond)
	gB := startLoad(s, userB, "pw-iso", q, 4, 0)
	for i := 0; i < 12; i++ {
		time.Sleep(400 * time.Millisecond)
		out, _ := exec.Command("rabbitmqctl", "list_connections", "-q", "--no-table-headers", "pid", "user").CombinedOutput()
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) == 2 && f[1] == userA {
				_ = exec.Command("rabbitmqctl", "close_connection", f[0], "isolation test").Run()
			}
		}
	}
	resultsA := gA.finish()
	resultsB := gB.finish()
	t.Logf("user A: %v; user B: %v", countCodes(resultsA), countCodes(resultsB))

	for _, o := range resultsB {
		if o.status != 202 {
			t.Fatalf("user B saw %d %s while user A's connection was killed", o.status, o.code)
		}
	}
	if len(resultsB) < 50 {
		t.Fatalf("user B published only %d messages", len(resultsB))
	}
	r := s.Do("GET", "/v1/admin/supervision", "", "", nil, map[string]string{"Authorization": "Bearer admin-test-token"})
	expectStatus(t, r, 200)
	var snap actors.Snapshot
	if err := json.Unmarshal(r.Body, &snap); err != nil {
		t.Fatal(err)
	}
	opened := map[string]int{}
	for _, c := range snap.Connections {
		opened[c.User] = c.Breaker.TimesOpened
	}
	if opened[userA] == 0 {
		t.Fatalf("user A's breaker never opened: %s", r.Body)
	}
	if opened[userB] != 0 {
		t.Fatalf("user B's breaker opened: %s", r.Body)
	}
}

// TestFaultEndpointFailover lists a broker address where nothing listens
// before the real broker: the first dial fails, and the next request goes
// to the next endpoint and succeeds.
func TestFaultEndpointFailover(t *testing.T) {
	b := testenv.NewBroker(t)
	parsed, err := transport.ParseURL(testenv.AMQPURL())
	if err != nil {
		t.Fatal(err)
	}
	// A port that was free a moment ago: nothing listens there.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadPort := ln.Addr().(*net.TCPAddr).Port
	ln.Close()

	cfg := fastRecovery()
	cfg.Endpoints = []transport.Endpoint{{Scheme: "amqp", Host: "127.0.0.1", Port: deadPort}, parsed.Endpoint}
	s := testenv.NewStack(t, testenv.Options{Actors: cfg})
	q := b.Queue(testenv.Name("failover"))
	body := mustJSON(t, map[string]any{"exchange": "", "routing_key": q, "payload": "x"})

	r := s.Guest("POST", "/v1/publish", body)
	expectError(t, r, 503, "broker_unavailable")
	r = s.Guest("POST", "/v1/publish", body)
	expectStatus(t, r, 202)
}
