package router_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/rmqrouter/rmqrouter/actors"
	"github.com/rmqrouter/rmqrouter/internal/testenv"
)

// sessionClient sends session requests as one user.
type sessionClient struct {
	t              *testing.T
	s              *testenv.Stack
	user, password string
}

func guestSessions(t *testing.T, s *testenv.Stack) sessionClient {
	return sessionClient{t: t, s: s, user: "guest", password: "guest"}
}

func (c sessionClient) do(method, path string, body []byte) testenv.Response {
	c.t.Helper()
	return c.s.Do(method, path, c.user, c.password, body, nil)
}

// open creates a session with the given fields and returns its id.
func (c sessionClient) open(fields map[string]any) string {
	c.t.Helper()
	r := c.do("POST", "/v1/sessions", mustJSON(c.t, fields))
	expectStatus(c.t, r, 201)
	m := decode(c.t, r)
	id, _ := m["session_id"].(string)
	if len(id) != 32 {
		c.t.Fatalf("session_id %q is not 32 hex digits: %s", id, r.Body)
	}
	if got := r.Header.Get("Location"); got != "/v1/sessions/"+id {
		c.t.Fatalf("Location = %q", got)
	}
	return id
}

func (c sessionClient) messages(id string, max int, wait float64) testenv.Response {
	c.t.Helper()
	return c.do("GET", fmt.Sprintf("/v1/sessions/%s/messages?max=%d&wait=%g", id, max, wait), nil)
}

// take fetches and returns the messages of a 200 response.
func (c sessionClient) take(id string, max int, wait float64) []map[string]any {
	c.t.Helper()
	r := c.messages(id, max, wait)
	expectStatus(c.t, r, 200)
	raw, ok := decode(c.t, r)["messages"].([]any)
	if !ok {
		c.t.Fatalf("response has no messages array: %s", r.Body)
	}
	out := make([]map[string]any, len(raw))
	for i, m := range raw {
		out[i] = m.(map[string]any)
	}
	return out
}

func (c sessionClient) settle(id, action string, tags []uint64, extra map[string]any) testenv.Response {
	c.t.Helper()
	body := map[string]any{"delivery_tags": tags}
	for k, v := range extra {
		body[k] = v
	}
	return c.do("POST", "/v1/sessions/"+id+"/"+action, mustJSON(c.t, body))
}

func tagOf(m map[string]any) uint64 { return uint64(m["delivery_tag"].(float64)) }

func tagsOf(msgs []map[string]any) []uint64 {
	tags := make([]uint64, len(msgs))
	for i, m := range msgs {
		tags[i] = tagOf(m)
	}
	return tags
}

// queueTotal returns the ready plus unacknowledged messages of queue.
func queueTotal(t *testing.T, queue string) int {
	n, ok := testenv.QueueStat(t, queue, "messages")
	if !ok {
		t.Fatalf("queue %q not listed by rabbitmqctl", queue)
	}
	return n
}

// metricValue returns the value of an unlabelled series from /metrics.
func metricValue(t *testing.T, s *testenv.Stack, name string) float64 {
	t.Helper()
	r := s.Do("GET", "/metrics", "", "", nil, nil)
	expectStatus(t, r, 200)
	for _, line := range strings.Split(string(r.Body), "\n") {
		if value, ok := strings.CutPrefix(line, name+" "); ok {
			var v float64
			fmt.Sscan(value, &v)
			return v
		}
	}
	t.Fatalf("/metrics has no series %s", name)
	return 0
}

func publishN(b *testenv.Broker, q string, n int) {
	for i := 1; i <= n; i++ {
		b.Publish("", q, amqp.Publishing{ContentType: "application/json", Body: []byte(fmt.Sprintf(`{"n":%d}`, i))})
	}
}

func TestSessionBatchAckNackAndDelete(t *testing.T) {
	b := testenv.NewBroker(t)
	s := testenv.NewStack(t, testenv.Options{})
	c := guestSessions(t, s)
	q := queueOnDefault(t, b)
	publishN(b, q, 6)

	r := c.do("POST", "/v1/sessions", mustJSON(t, map[string]any{"queue": q, "prefetch": 4}))
	expectStatus(t, r, 201)
	created := decode(t, r)
	if created["queue"] != q || created["prefetch"] != float64(4) || created["idle_timeout"] != float64(300) ||
		created["auto_ack"] != false || created["vhost"] != "/" {
		t.Fatalf("unexpected 201 body: %s", r.Body)
	}
	id := created["session_id"].(string)

	// A request takes what is buffered when it arrives, so let the broker
	// fill the buffer first.
	testenv.Eventually(t, 5*time.Second, "4 buffered deliveries", func() bool {
		return metricValue(t, s, "rmq_middleware_deliveries_buffered") == 4
	})
	batch := c.take(id, 3, 5)
	if len(batch) != 3 {
		t.Fatalf("got %d messages, want 3", len(batch))
	}
	for i, m := range batch {
		if body, _ := m["body"].(map[string]any); body["n"] != float64(i+1) {
			t.Fatalf("message %d has body %v, want n=%d in queue order", i, m["body"], i+1)
		}
		if m["routing_key"] != q || m["redelivered"] != false || m["content_type"] != "application/json" {
			t.Fatalf("unexpected message: %v", m)
		}
	}

	r = c.settle(id, "ack", tagsOf(batch), nil)
	expectStatus(t, r, 200)
	results := decode(t, r)["results"].([]any)
	if len(results) != 3 {
		t.Fatalf("ack answered %d results, want 3: %s", len(results), r.Body)
	}
	for i, res := range results {
		m := res.(map[string]any)
		if m["status"] != "acknowledged" || tagOf(m) != tagOf(batch[i]) {
			t.Fatalf("result %d = %v, want tag %d acknowledged", i, m, tagOf(batch[i]))
		}
	}
	testenv.Eventually(t, 5*time.Second, "the queue to hold the 3 messages not acked", func() bool {
		return queueTotal(t, q) == 3
	})

	// A nack with requeue puts the message back; it comes again, marked.
	next := c.take(id, 1, 5)
	if len(next) != 1 {
		t.Fatalf("got %d messages, want 1", len(next))
	}
	r = c.settle(id, "nack", tagsOf(next), map[string]any{"requeue": true})
	expectStatus(t, r, 200)
	if m := decode(t, r)["results"].([]any)[0].(map[string]any); m["status"] != "rejected" {
		t.Fatalf("nack result = %v", m)
	}
	var again map[string]any
	testenv.Eventually(t, 5*time.Second, "the nacked message to come again", func() bool {
		for _, m := range c.take(id, 10, 1) {
			if m["redelivered"] == true {
				again = m
			}
		}
		return again != nil
	})
	if body, _ := again["body"].(map[string]any); body["n"] != next[0]["body"].(map[string]any)["n"] {
		t.Fatalf("redelivered body %v, want %v", again["body"], next[0]["body"])
	}
	if tagOf(again) == tagOf(next[0]) {
		t.Fatalf("the router reused delivery tag %d", tagOf(again))
	}
	r = c.settle(id, "ack", tagsOf(next), nil)
	expectError(t, r, 404, "delivery_tag_not_found")

	// All 3 messages are now handed out and unacked; DELETE returns them.
	testenv.Eventually(t, 5*time.Second, "every message handed out", func() bool {
		c.take(id, 10, 0.2)
		return b.Count(q) == 0
	})
	start := time.Now()
	r = c.do("DELETE", "/v1/sessions/"+id, nil)
	expectStatus(t, r, 204)
	testenv.Eventually(t, time.Second, "the 3 unacked messages back in the queue", func() bool { return b.Count(q) == 3 })
	t.Logf("messages back in the queue %v after DELETE", time.Since(start))

	expectError(t, c.messages(id, 1, 0), 404, "session_not_found")
	expectError(t, c.do("DELETE", "/v1/sessions/"+id, nil), 404, "session_not_found")
	r = c.settle(id, "ack", tagsOf(next), nil)
	expectError(t, r, 404, "session_not_found")
}

func TestSessionDeleteReturnsTwoUnacked(t *testing.T) {
	b := testenv.NewBroker(t)
	s := testenv.NewStack(t, testenv.Options{})
	c := guestSessions(t, s)
	q := queueOnDefault(t, b)
	publishN(b, q, 2)

	id := c.open(map[string]any{"queue": q, "prefetch": 2})
	if got := c.take(id, 2, 5); len(got) != 2 {
		t.Fatalf("got %d messages, want 2", len(got))
	}
	if n := b.Count(q); n != 0 {
		t.Fatalf("%d messages ready while both are handed out", n)
	}
	expectStatus(t, c.do("DELETE", "/v1/sessions/"+id, nil), 204)
	testenv.Eventually(t, time.Second, "both messages back in the queue", func() bool { return b.Count(q) == 2 })
}

func TestSessionIdleTimeoutRequeues(t *testing.T) {
	b := testenv.NewBroker(t)
	s := testenv.NewStack(t, testenv.Options{})
	c := guestSessions(t, s)
	q := queueOnDefault(t, b)
	publishN(b, q, 1)

	id := c.open(map[string]any{"queue": q, "idle_timeout": 2})
	if got := c.take(id, 1, 5); len(got) != 1 {
		t.Fatalf("got %d messages, want 1", len(got))
	}
	time.Sleep(4 * time.Second)
	if n := b.Count(q); n != 1 {
		t.Log(s.Logs.String())
		t.Fatalf("%d messages ready 4 s after the idle timeout of 2 s, want the unacked one back", n)
	}
	m := expectError(t, c.messages(id, 1, 0), 404, "session_not_found")
	if !strings.Contains(m["detail"].(string), "expired") {
		t.Fatalf("detail %q does not say the session expired", m["detail"])
	}

	if !strings.Contains(s.Logs.String(), id) {
		t.Fatal("no log record names the expired session")
	}
	if n := metricValue(t, s, "rmq_middleware_sessions_expired_total"); n != 1 {
		t.Fatalf("rmq_middleware_sessions_expired_total = %v, want 1", n)
	}
}

// TestSessionLongPollKeepsSessionAlive checks that a wait longer than the
// idle timeout does not expire the session under the waiting request.
func TestSessionLongPollKeepsSessionAlive(t *testing.T) {
	b := testenv.NewBroker(t)
	s := testenv.NewStack(t, testenv.Options{})
	c := guestSessions(t, s)
	q := queueOnDefault(t, b)

	id := c.open(map[string]any{"queue": q, "idle_timeout": 1})
	if got := c.take(id, 1, 3); len(got) != 0 {
		t.Fatalf("got %d messages from an empty queue", len(got))
	}
	if got := c.take(id, 1, 0); len(got) != 0 {
		t.Fatalf("got %d messages from an empty queue", len(got))
	}
}

// TestSessionStaleTagAfterReconnect closes the router's connection from the
// broker side: a tag from before is stale and never reaches the broker,
// and the message comes again on the new channel under a new tag.
func TestSessionStaleTagAfterReconnect(t *testing.T) {
	b := testenv.NewBroker(t)
	s := testenv.NewStack(t, testenv.Options{Actors: actors.Config{RetryBaseDelay: 100 * time.Millisecond, RetryMaxDelay: time.Second}})
	user, password := testenv.Name("stale"), "stale-password"
	testenv.User(t, user, password)
	c := sessionClient{t: t, s: s, user: user, password: password}
	q := queueOnDefault(t, b)
	publishN(b, q, 1)

	id := c.open(map[string]any{"queue": q})
	first := c.take(id, 1, 5)
	if len(first) != 1 {
		t.Fatalf("got %d messages, want 1", len(first))
	}
	oldTag := tagOf(first[0])

	// Only this user's connections are closed, so tests of other packages
	// running at the same time keep theirs.
	testenv.Rabbitmqctl(t, "close_all_user_connections", user, "test")
	testenv.Eventually(t, 15*time.Second, "the router to reconnect", func() bool {
		return userConnections(t, user) == 1
	})

	r := c.settle(id, "ack", []uint64{oldTag}, nil)
	expectError(t, r, 410, "delivery_tag_stale")

	var again []map[string]any
	testenv.Eventually(t, 15*time.Second, "the message on the new channel", func() bool {
		again = c.take(id, 1, 1)
		return len(again) == 1
	})
	if again[0]["redelivered"] != true {
		t.Fatalf("message after reconnect not marked redelivered: %v", again[0])
	}
	newTag := tagOf(again[0])
	if newTag == oldTag {
		t.Fatalf("the router reused delivery tag %d", oldTag)
	}
	expectStatus(t, c.settle(id, "ack", []uint64{newTag}, nil), 200)
	testenv.Eventually(t, 5*time.Second, "the queue to be empty", func() bool { return queueTotal(t, q) == 0 })

	// The stale tag stays stale; the legacy endpoint agrees.
	expectError(t, s.Do("POST", fmt.Sprintf("/v1/ack/%d", oldTag), user, password, nil, nil), 410, "delivery_tag_stale")
}

// userConnections returns the number of broker connections of user.
func userConnections(t *testing.T, user string) int {
	out := testenv.Rabbitmqctl(t, "list_connections", "-q", "--no-table-headers", "user")
	n := 0
	for _, line := range strings.Split(out, "\n") {
		if strings.TrimSpace(line) == user {
			n++
		}
	}
	return n
}

func TestSessionOtherCredentialsGetNotFound(t *testing.T) {
	b := testenv.NewBroker(t)
	s := testenv.NewStack(t, testenv.Options{})
	owner := guestSessions(t, s)
	user, password := testenv.Name("other"), "other-password"
	testenv.User(t, user, password)
	other := sessionClient{t: t, s: s, user: user, password: password}
	q := queueOnDefault(t, b)
	publishN(b, q, 1)

	id := owner.open(map[string]any{"queue": q})
	msgs := owner.take(id, 1, 5)
	if len(msgs) != 1 {
		t.Fatalf("got %d messages, want 1", len(msgs))
	}
	tags := tagsOf(msgs)

	unknown := strings.Repeat("0", 32)
	for _, c := range []sessionClient{other, {t: t, s: s, user: "guest", password: "not-the-password"}} {
		requests := []struct {
			name   string
			method string
			path   string
			body   []byte
		}{
			{"messages", "GET", "/v1/sessions/%s/messages?max=1", nil},
			{"ack", "POST", "/v1/sessions/%s/ack", mustJSON(t, map[string]any{"delivery_tags": tags})},
			{"nack", "POST", "/v1/sessions/%s/nack", mustJSON(t, map[string]any{"delivery_tags": tags})},
			{"delete", "DELETE", "/v1/sessions/%s", nil},
		}
		for _, req := range requests {
			theirs := c.do(req.method, fmt.Sprintf(req.path, id), req.body)
			m := expectError(t, theirs, 404, "session_not_found")
			// The response is the one for an id that never existed.
			none := expectError(t, c.do(req.method, fmt.Sprintf(req.path, unknown), req.body), 404, "session_not_found")
			if m["detail"] != none["detail"] {
				t.Fatalf("%s as %s: detail %q differs from that of an unknown id %q", req.name, c.user, m["detail"], none["detail"])
			}
		}
		// The legacy endpoint does not settle another user's tag either.
		r := c.do("POST", fmt.Sprintf("/v1/ack/%d", tags[0]), nil)
		expectError(t, r, 404, "delivery_tag_not_found")
	}

	// The owner's session is untouched.
	if n := b.Count(q); n != 0 {
		t.Fatalf("%d messages ready: another user's request reached the broker", n)
	}
	expectStatus(t, owner.settle(id, "ack", tags, nil), 200)
	expectStatus(t, owner.do("DELETE", "/v1/sessions/"+id, nil), 204)
	testenv.Eventually(t, 5*time.Second, "the acked message to be gone", func() bool { return queueTotal(t, q) == 0 })
}

func TestSessionLongPoll(t *testing.T) {
	b := testenv.NewBroker(t)
	s := testenv.NewStack(t, testenv.Options{})
	c := guestSessions(t, s)
	q := queueOnDefault(t, b)
	id := c.open(map[string]any{"queue": q})

	start := time.Now()
	r := c.messages(id, 5, 2)
	elapsed := time.Since(start)
	expectStatus(t, r, 200)
	if string(r.Body) != `{"messages":[]}` {
		t.Fatalf("empty answer = %s, want {\"messages\":[]}", r.Body)
	}
	if elapsed < 1900*time.Millisecond || elapsed > 6*time.Second {
		t.Fatalf("wait=2 returned after %v", elapsed)
	}

	var published time.Time
	go func() {
		time.Sleep(500 * time.Millisecond)
		published = time.Now()
		_, _ = s.Send("POST", "/v1/publish", "guest", "guest", []byte(`{"exchange":"","routing_key":"`+q+`","payload":"late"}`), nil)
	}()
	start = time.Now()
	msgs := c.take(id, 5, 20)
	elapsed = time.Since(start)
	if len(msgs) != 1 || msgs[0]["body"] != "late" {
		t.Fatalf("got %v, want the message published during the wait", msgs)
	}
	if elapsed > 5*time.Second {
		t.Fatalf("message published during the wait came after %v", elapsed)
	}
	t.Logf("answered %v after the publish started", time.Since(published))
}

func TestSessionMaxCapsAnswer(t *testing.T) {
	b := testenv.NewBroker(t)
	s := testenv.NewStack(t, testenv.Options{})
	c := guestSessions(t, s)
	q := queueOnDefault(t, b)
	publishN(b, q, 5)

	id := c.open(map[string]any{"queue": q, "prefetch": 5})
	testenv.Eventually(t, 5*time.Second, "5 buffered deliveries", func() bool {
		return metricValue(t, s, "rmq_middleware_deliveries_buffered") == 5
	})
	if got := c.take(id, 2, 0); len(got) != 2 {
		t.Fatalf("max=2 returned %d messages", len(got))
	}
	rest := c.take(id, 10, 0)
	if len(rest) != 3 {
		t.Fatalf("max=10 returned %d messages, want the 3 buffered", len(rest))
	}
	if body, _ := rest[0]["body"].(map[string]any); body["n"] != float64(3) {
		t.Fatalf("first of the rest has body %v, want n=3", rest[0]["body"])
	}
	if n := metricValue(t, s, "rmq_middleware_deliveries_buffered"); n != 0 {
		t.Fatalf("deliveries_buffered = %v after handing out everything", n)
	}
}

func TestSessionQueueDeletedEndsOnlyThatSession(t *testing.T) {
	b := testenv.NewBroker(t)
	s := testenv.NewStack(t, testenv.Options{})
	c := guestSessions(t, s)
	doomed := queueOnDefault(t, b)
	kept := queueOnDefault(t, b)
	publishN(b, kept, 1)

	gone := c.open(map[string]any{"queue": doomed})
	alive := c.open(map[string]any{"queue": kept})
	b.DeleteQueue(doomed)

	testenv.Eventually(t, 5*time.Second, "the session of the deleted queue to end", func() bool {
		return c.messages(gone, 1, 0).Status == 404
	})
	m := expectError(t, c.messages(gone, 1, 0), 404, "session_not_found")
	if !strings.Contains(m["detail"].(string), "queue was deleted") {
		t.Fatalf("detail %q does not say why", m["detail"])
	}
	msgs := c.take(alive, 1, 5)
	if len(msgs) != 1 {
		t.Fatalf("the other session got %d messages, want 1", len(msgs))
	}
	expectStatus(t, c.settle(alive, "ack", tagsOf(msgs), nil), 200)
}

func TestSessionLimits(t *testing.T) {
	b := testenv.NewBroker(t)
	s := testenv.NewStack(t, testenv.Options{Actors: actors.Config{MaxSessions: 3, MaxSessionsPerUser: 2}})
	guest := guestSessions(t, s)
	user, password := testenv.Name("limit"), "limit-password"
	testenv.User(t, user, password)
	other := sessionClient{t: t, s: s, user: user, password: password}
	q := queueOnDefault(t, b)
	body := mustJSON(t, map[string]any{"queue": q})

	first := guest.open(map[string]any{"queue": q})
	guest.open(map[string]any{"queue": q})
	r := guest.do("POST", "/v1/sessions", body)
	expectError(t, r, 429, "rate_limited")
	if r.Header.Get("Retry-After") == "" {
		t.Fatal("429 without Retry-After")
	}

	other.open(map[string]any{"queue": q})
	r = other.do("POST", "/v1/sessions", body)
	expectError(t, r, 503, "capacity_exhausted")
	if r.Header.Get("Retry-After") == "" {
		t.Fatal("503 without Retry-After")
	}

	expectStatus(t, guest.do("DELETE", "/v1/sessions/"+first, nil), 204)
	other.open(map[string]any{"queue": q})
}

func TestSessionAutoAck(t *testing.T) {
	b := testenv.NewBroker(t)
	s := testenv.NewStack(t, testenv.Options{})
	c := guestSessions(t, s)
	q := queueOnDefault(t, b)
	publishN(b, q, 2)

	id := c.open(map[string]any{"queue": q, "auto_ack": true})
	var got []map[string]any
	testenv.Eventually(t, 5*time.Second, "2 messages", func() bool {
		got = append(got, c.take(id, 2, 1)...)
		return len(got) >= 2
	})
	testenv.Eventually(t, 5*time.Second, "the auto-acked messages to leave the queue", func() bool {
		return queueTotal(t, q) == 0
	})
	expectError(t, c.settle(id, "ack", tagsOf(got), nil), 404, "delivery_tag_not_found")
}

func TestSessionSettleMixedResults(t *testing.T) {
	b := testenv.NewBroker(t)
	s := testenv.NewStack(t, testenv.Options{})
	c := guestSessions(t, s)
	q := queueOnDefault(t, b)
	publishN(b, q, 1)

	id := c.open(map[string]any{"queue": q})
	msgs := c.take(id, 1, 5)
	if len(msgs) != 1 {
		t.Fatalf("got %d messages, want 1", len(msgs))
	}
	r := c.settle(id, "ack", []uint64{tagOf(msgs[0]), 987654321}, nil)
	expectStatus(t, r, 207)
	results := decode(t, r)["results"].([]any)
	okResult, failed := results[0].(map[string]any), results[1].(map[string]any)
	if okResult["status"] != "acknowledged" {
		t.Fatalf("first result = %v", okResult)
	}
	if failed["status"] != "failed" || failed["error"] != "delivery_tag_not_found" || failed["detail"] == "" {
		t.Fatalf("second result = %v", failed)
	}
}

// TestSessionDeleteAnswersWaitingRequest closes a session while a request
// waits on it: the request ends at once instead of at its wait.
func TestSessionDeleteAnswersWaitingRequest(t *testing.T) {
	b := testenv.NewBroker(t)
	s := testenv.NewStack(t, testenv.Options{})
	c := guestSessions(t, s)
	q := queueOnDefault(t, b)
	id := c.open(map[string]any{"queue": q})

	var wg sync.WaitGroup
	var waited testenv.Response
	var waitErr error
	start := time.Now()
	wg.Add(1)
	go func() {
		defer wg.Done()
		waited, waitErr = s.Send("GET", "/v1/sessions/"+id+"/messages?wait=30", "guest", "guest", nil, nil)
	}()
	time.Sleep(300 * time.Millisecond)
	expectStatus(t, c.do("DELETE", "/v1/sessions/"+id, nil), 204)
	wg.Wait()
	if waitErr != nil {
		t.Fatal(waitErr)
	}
	expectError(t, waited, 404, "session_not_found")
	if elapsed := time.Since(start); elapsed > 10*time.Second {
		t.Fatalf("the waiting request ended after %v", elapsed)
	}
}

func TestSessionBadInput(t *testing.T) {
	b := testenv.NewBroker(t)
	s := testenv.NewStack(t, testenv.Options{})
	c := guestSessions(t, s)
	q := queueOnDefault(t, b)
	id := c.open(map[string]any{"queue": q})

	cases := []struct {
		name, method, path, body string
		status                   int
		code, field              string
	}{
		{"queue missing", "POST", "/v1/sessions", `{"prefetch":1}`, 422, "validation_error", "queue"},
		{"unknown field", "POST", "/v1/sessions", `{"queue":"` + q + `","timeout":5}`, 422, "validation_error", "timeout"},
		{"prefetch zero", "POST", "/v1/sessions", `{"queue":"` + q + `","prefetch":0}`, 422, "validation_error", "prefetch"},
		{"prefetch too large", "POST", "/v1/sessions", `{"queue":"` + q + `","prefetch":65536}`, 422, "validation_error", "prefetch"},
		{"prefetch fraction", "POST", "/v1/sessions", `{"queue":"` + q + `","prefetch":1.5}`, 422, "validation_error", "prefetch"},
		{"idle timeout zero", "POST", "/v1/sessions", `{"queue":"` + q + `","idle_timeout":0}`, 422, "validation_error", "idle_timeout"},
		{"idle timeout too long", "POST", "/v1/sessions", `{"queue":"` + q + `","idle_timeout":86401}`, 422, "validation_error", "idle_timeout"},
		{"auto_ack string", "POST", "/v1/sessions", `{"queue":"` + q + `","auto_ack":"yes"}`, 422, "validation_error", "auto_ack"},
		{"queue control character", "POST", "/v1/sessions", `{"queue":"a\u0000b"}`, 400, "invalid_name", ""},
		{"malformed JSON", "POST", "/v1/sessions", `{"queue":`, 400, "invalid_json", ""},
		{"missing queue", "POST", "/v1/sessions", `{"queue":"` + testenv.Name("missing") + `"}`, 404, "queue_not_found", ""},
		{"max zero", "GET", "/v1/sessions/" + id + "/messages?max=0", ``, 422, "validation_error", "max"},
		{"max too large", "GET", "/v1/sessions/" + id + "/messages?max=1001", ``, 422, "validation_error", "max"},
		{"max not a number", "GET", "/v1/sessions/" + id + "/messages?max=all", ``, 422, "validation_error", "max"},
		{"wait negative", "GET", "/v1/sessions/" + id + "/messages?wait=-1", ``, 422, "validation_error", "wait"},
		{"wait too long", "GET", "/v1/sessions/" + id + "/messages?wait=301", ``, 422, "validation_error", "wait"},
		{"wait NaN", "GET", "/v1/sessions/" + id + "/messages?wait=NaN", ``, 422, "validation_error", "wait"},
		{"tags missing", "POST", "/v1/sessions/" + id + "/ack", `{}`, 422, "validation_error", "delivery_tags"},
		{"tags empty", "POST", "/v1/sessions/" + id + "/ack", `{"delivery_tags":[]}`, 422, "validation_error", "delivery_tags"},
		{"tag zero", "POST", "/v1/sessions/" + id + "/ack", `{"delivery_tags":[0]}`, 422, "validation_error", "delivery_tags"},
		{"tag negative", "POST", "/v1/sessions/" + id + "/ack", `{"delivery_tags":[-1]}`, 422, "validation_error", "delivery_tags.0"},
		{"tag duplicate", "POST", "/v1/sessions/" + id + "/ack", `{"delivery_tags":[7,7]}`, 422, "validation_error", "delivery_tags"},
		{"ack with requeue", "POST", "/v1/sessions/" + id + "/ack", `{"delivery_tags":[7],"requeue":true}`, 422, "validation_error", "requeue"},
		{"nack requeue string", "POST", "/v1/sessions/" + id + "/nack", `{"delivery_tags":[7],"requeue":"yes"}`, 422, "validation_error", "requeue"},
		{"ack empty body", "POST", "/v1/sessions/" + id + "/ack", ``, 400, "invalid_json", ""},
		{"unknown tag", "POST", "/v1/sessions/" + id + "/ack", `{"delivery_tags":[987654321]}`, 404, "delivery_tag_not_found", ""},
		{"unknown session", "GET", "/v1/sessions/" + strings.Repeat("a", 32) + "/messages", ``, 404, "session_not_found", ""},
		{"malformed session id", "GET", "/v1/sessions/..%2f/messages", ``, 404, "session_not_found", ""},
		{"empty session id", "DELETE", "/v1/sessions/", ``, 404, "session_not_found", ""},
		{"unknown sub-resource", "GET", "/v1/sessions/" + id + "/peek", ``, 404, "not_found", ""},
		{"wrong method", "GET", "/v1/sessions", ``, 405, "method_not_allowed", ""},
		{"wrong method on messages", "POST", "/v1/sessions/" + id + "/messages", ``, 405, "method_not_allowed", ""},
		{"HEAD on messages", "HEAD", "/v1/sessions/" + id + "/messages", ``, 405, "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := s.Do(tc.method, tc.path, "guest", "guest", []byte(tc.body), nil)
			if tc.method == "HEAD" {
				// A HEAD response has no body to check.
				expectStatus(t, r, tc.status)
				return
			}
			m := expectError(t, r, tc.status, tc.code)
			if tc.field != "" && !strings.Contains(m["detail"].(string), `"`+tc.field+`"`) {
				t.Fatalf("detail %q does not name the field %q", m["detail"], tc.field)
			}
		})
	}

	for _, path := range []string{"/v1/sessions", "/v1/sessions/" + id + "/ack"} {
		r := s.Do("POST", path, "", "", []byte(`{}`), nil)
		expectError(t, r, 401, "authentication_required")
	}
	r := s.Do("GET", "/v1/sessions/"+id+"/messages", "guest", "guest", nil, map[string]string{"Accept-Language": "ru"})
	expectStatus(t, r, 200)
	r = s.Do("GET", "/v1/sessions/"+strings.Repeat("b", 32)+"/messages", "guest", "guest", nil, map[string]string{"Accept-Language": "ru"})
	if m := expectError(t, r, 404, "session_not_found"); !strings.Contains(m["detail"].(string), "сесси") {
		t.Fatalf("detail is not Russian: %q", m["detail"])
	}
	// The session still works after all of the above.
	expectStatus(t, c.do("DELETE", "/v1/sessions/"+id, nil), 204)
}

// TestFetchStillUsesImplicitSession checks that /v1/fetch and an explicit
// session on the same queue share the messages without mixing their tags.
func TestFetchStillUsesImplicitSession(t *testing.T) {
	b := testenv.NewBroker(t)
	s := testenv.NewStack(t, testenv.Options{})
	c := guestSessions(t, s)
	q := queueOnDefault(t, b)
	publishN(b, q, 2)

	id := c.open(map[string]any{"queue": q, "prefetch": 1})
	fetched := fetch(t, s, q, 5)
	var sessionMsgs []map[string]any
	testenv.Eventually(t, 5*time.Second, "a message for the session", func() bool {
		sessionMsgs = c.take(id, 1, 1)
		return len(sessionMsgs) == 1
	})
	expectStatus(t, fetched, 200)
	fetchedTag := uint64(decode(t, fetched)["delivery_tag"].(float64))

	// A tag of the implicit session is not held by the explicit one.
	expectError(t, c.settle(id, "ack", []uint64{fetchedTag}, nil), 404, "delivery_tag_not_found")
	expectStatus(t, s.Guest("POST", fmt.Sprintf("/v1/ack/%d", fetchedTag), nil), 200)
	expectStatus(t, c.settle(id, "ack", tagsOf(sessionMsgs), nil), 200)
	testenv.Eventually(t, 5*time.Second, "the queue to be empty", func() bool { return queueTotal(t, q) == 0 })
}
