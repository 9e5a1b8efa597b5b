package router_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/rmqrouter/rmqrouter/internal/testenv"
)

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func decode(t *testing.T, r testenv.Response) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("response body is not JSON (status %d): %q", r.Status, r.Body)
	}
	return m
}

func expectStatus(t *testing.T, r testenv.Response, want int) {
	t.Helper()
	if r.Status != want {
		t.Fatalf("status = %d, want %d; body %s", r.Status, want, r.Body)
	}
}

func expectError(t *testing.T, r testenv.Response, status int, code string) map[string]any {
	t.Helper()
	expectStatus(t, r, status)
	m := decode(t, r)
	if m["error"] != code {
		t.Fatalf("error = %v, want %s; body %s", m["error"], code, r.Body)
	}
	if d, _ := m["detail"].(string); d == "" {
		t.Fatalf("error body has no detail: %s", r.Body)
	}
	if id, _ := m["request_id"].(string); id == "" || id != r.Header.Get("X-Request-ID") {
		t.Fatalf("request_id %q does not match X-Request-ID %q", m["request_id"], r.Header.Get("X-Request-ID"))
	}
	return m
}

// queueOnDefault declares a queue reachable through the default exchange.
func queueOnDefault(t *testing.T, b *testenv.Broker) string {
	return b.Queue(testenv.Name("rq"))
}

func TestPublishJSONObjectArrivesVerbatim(t *testing.T) {
	b := testenv.NewBroker(t)
	s := testenv.NewStack(t, testenv.Options{})
	q := queueOnDefault(t, b)

	payload := `{"order": 42, "lines":[{"sku":"A-1","qty":2}], "note":"привет"}`
	body := []byte(`{"exchange":"","routing_key":"` + q + `","payload":` + payload + `}`)
	r := s.Guest("POST", "/v1/publish", body)
	expectStatus(t, r, 202)
	m := decode(t, r)
	if m["status"] != "accepted" || m["routing_key"] != q || m["exchange"] != "" {
		t.Fatalf("unexpected 202 body: %s", r.Body)
	}
	if m["correlation_id"] != m["request_id"] {
		t.Fatalf("correlation_id %v should default to request_id %v", m["correlation_id"], m["request_id"])
	}
	if id, _ := m["message_id"].(string); !regexp.MustCompile(`^[A-Za-z0-9_-]{16}$`).MatchString(id) {
		t.Fatalf("message_id %q, want a generated compact id", m["message_id"])
	}
	if n := testutil.ToFloat64(s.Metrics.Messages.WithLabelValues("published")); n != 1 {
		t.Errorf("messages_total{event=published} = %v, want 1", n)
	}
	var accepted dto.Metric
	if err := s.Metrics.PublishDuration.WithLabelValues("accepted").(prometheus.Metric).Write(&accepted); err != nil {
		t.Fatal(err)
	}
	if n := accepted.GetHistogram().GetSampleCount(); n != 1 {
		t.Errorf("publish_duration_seconds{outcome=accepted} counted %d publishes, want 1", n)
	}

	d, ok := b.Get(q)
	if !ok {
		t.Fatal("queue is empty after 202")
	}
	if string(d.Body) != payload {
		t.Fatalf("body = %q, want %q", d.Body, payload)
	}
	if d.ContentType != "application/json" {
		t.Fatalf("content type = %q, want application/json", d.ContentType)
	}
	if d.DeliveryMode != 2 {
		t.Fatalf("delivery mode = %d, want 2 (persistent by default)", d.DeliveryMode)
	}
	if d.MessageId != m["message_id"] || d.CorrelationId != m["correlation_id"] {
		t.Fatalf("ids in the message (%q, %q) differ from the answer %s", d.MessageId, d.CorrelationId, r.Body)
	}
	// The message id alone matches a return with this message, so the
	// router adds no header of its own.
	if len(d.Headers) != 0 {
		t.Fatalf("message has headers %v, want none", d.Headers)
	}
}

func TestPublishStringPayloadIsText(t *testing.T) {
	b := testenv.NewBroker(t)
	s := testenv.NewStack(t, testenv.Options{})
	q := queueOnDefault(t, b)

	r := s.Guest("POST", "/v1/publish", mustJSON(t, map[string]any{"exchange": "", "routing_key": q, "payload": "строка \"quoted\""}))
	expectStatus(t, r, 202)
	d, ok := b.Get(q)
	if !ok {
		t.Fatal("queue is empty after 202")
	}
	if string(d.Body) != `строка "quoted"` || d.ContentType != "text/plain" {
		t.Fatalf("got body %q with content type %q", d.Body, d.ContentType)
	}
}

func TestPublishPropertiesArrive(t *testing.T) {
	b := testenv.NewBroker(t)
	s := testenv.NewStack(t, testenv.Options{})
	q := queueOnDefault(t, b)

	r := s.Guest("POST", "/v1/publish", mustJSON(t, map[string]any{
		"exchange": "amq.default", "routing_key": q, "payload": map[string]any{"a": 1},
		"message_id": "m-1", "correlation_id": "c-1", "headers": map[string]string{"source": "1c", "Order-Id": "77"},
		"priority": 7, "persistence": 1,
	}))
	expectStatus(t, r, 202)
	if m := decode(t, r); m["message_id"] != "m-1" || m["correlation_id"] != "c-1" || m["exchange"] != "amq.default" {
		t.Fatalf("unexpected 202 body: %s", r.Body)
	}
	d, ok := b.Get(q)
	if !ok {
		t.Fatal("queue is empty after 202")
	}
	if d.MessageId != "m-1" || d.CorrelationId != "c-1" {
		t.Fatalf("ids = (%q, %q), want (m-1, c-1)", d.MessageId, d.CorrelationId)
	}
	if d.Priority != 7 {
		t.Fatalf("priority = %d, want 7", d.Priority)
	}
	if d.DeliveryMode != 1 {
		t.Fatalf("delivery mode = %d, want 1", d.DeliveryMode)
	}
	if d.Headers["source"] != "1c" || d.Headers["Order-Id"] != "77" {
		t.Fatalf("headers = %v", d.Headers)
	}
}

func TestRawPublishCarriesBinaryAndHeaders(t *testing.T) {
	b := testenv.NewBroker(t)
	s := testenv.NewStack(t, testenv.Options{})
	q := queueOnDefault(t, b)

	body := []byte{0x00, 0xff, 0xfe, 0x01, 0x80, '\n', 0x00}
	r := s.Do("POST", "/v1/exchanges/amq.default/publish?routing_key="+url.QueryEscape(q), "guest", "guest", body, map[string]string{
		"Content-Type":      "application/x-custom",
		"X-Message-Id":      "raw-1",
		"X-Correlation-Id":  "corr-9",
		"X-Priority":        "3",
		"X-Expiration":      "60000",
		"X-Persistent":      "false",
		"X-Header-order_id": "A-17",
		"X-Header-Source":   "erp",
	})
	expectStatus(t, r, 202)
	d, ok := b.Get(q)
	if !ok {
		t.Fatal("queue is empty after 202")
	}
	if !bytes.Equal(d.Body, body) {
		t.Fatalf("body = %x, want %x", d.Body, body)
	}
	if d.ContentType != "application/x-custom" || d.MessageId != "raw-1" || d.CorrelationId != "corr-9" {
		t.Fatalf("properties = (%q, %q, %q)", d.ContentType, d.MessageId, d.CorrelationId)
	}
	if d.Priority != 3 || d.Expiration != "60000" || d.DeliveryMode != 1 {
		t.Fatalf("priority %d, expiration %q, delivery mode %d", d.Priority, d.Expiration, d.DeliveryMode)
	}
	if d.Headers["order_id"] != "A-17" || d.Headers["Source"] != "erp" {
		t.Fatalf("headers = %v, want order_id and Source with their case kept", d.Headers)
	}
}

func fetch(t *testing.T, s *testenv.Stack, q string, timeout float64) testenv.Response {
	t.Helper()
	return s.Guest("POST", "/v1/fetch", mustJSON(t, map[string]any{"queue": q, "timeout": timeout}))
}

func TestFetchRejectRequeueRedelivers(t *testing.T) {
	b := testenv.NewBroker(t)
	s := testenv.NewStack(t, testenv.Options{})
	q := queueOnDefault(t, b)
	b.Publish("", q, amqp.Publishing{ContentType: "application/json", Body: []byte(`{"n":1}`), CorrelationId: "c-7", Headers: amqp.Table{"k": "v"}})

	r := fetch(t, s, q, 5)
	expectStatus(t, r, 200)
	first := decode(t, r)
	if first["redelivered"] != false {
		t.Fatalf("first delivery marked redelivered: %s", r.Body)
	}
	if body, _ := first["body"].(map[string]any); body["n"] != float64(1) {
		t.Fatalf("body = %v, want the JSON object", first["body"])
	}
	if first["correlation_id"] != "c-7" || first["routing_key"] != q || first["exchange"] != "" {
		t.Fatalf("unexpected fetch body: %s", r.Body)
	}
	if h, _ := first["headers"].(map[string]any); h["k"] != "v" {
		t.Fatalf("headers = %v", first["headers"])
	}
	tag := uint64(first["delivery_tag"].(float64))

	r = s.Guest("POST", fmt.Sprintf("/v1/reject/%d", tag), []byte(`{"requeue": true}`))
	expectStatus(t, r, 200)
	if m := decode(t, r); m["status"] != "rejected" || uint64(m["delivery_tag"].(float64)) != tag {
		t.Fatalf("unexpected reject body: %s", r.Body)
	}

	r = fetch(t, s, q, 5)
	expectStatus(t, r, 200)
	second := decode(t, r)
	if second["redelivered"] != true {
		t.Fatalf("requeued message not marked redelivered: %s", r.Body)
	}
	if uint64(second["delivery_tag"].(float64)) == tag {
		t.Fatalf("the router reused delivery tag %d", tag)
	}

	// The old tag is settled: a second reject is unknown, not forwarded.
	r = s.Guest("POST", fmt.Sprintf("/v1/reject/%d", tag), nil)
	expectError(t, r, 404, "delivery_tag_not_found")
}

func TestFetchAckEmptiesQueue(t *testing.T) {
	b := testenv.NewBroker(t)
	s := testenv.NewStack(t, testenv.Options{})
	q := queueOnDefault(t, b)
	b.Publish("", q, amqp.Publishing{Body: []byte("plain text")})

	r := fetch(t, s, q, 5)
	expectStatus(t, r, 200)
	m := decode(t, r)
	if m["body"] != "plain text" {
		t.Fatalf("body = %v, want the string", m["body"])
	}
	tag := uint64(m["delivery_tag"].(float64))
	r = s.Guest("POST", fmt.Sprintf("/v1/ack/%d", tag), nil)
	expectStatus(t, r, 200)
	if a := decode(t, r); a["status"] != "acknowledged" {
		t.Fatalf("unexpected ack body: %s", r.Body)
	}

	// An ack is a frame without a reply, so give the broker a moment.
	testenv.Eventually(t, 5*time.Second, "queue to be empty", func() bool {
		return b.Count(q) == 0 && consumerUnacked(t, q) == 0
	})
	r = fetch(t, s, q, 0)
	expectStatus(t, r, 204)
}

// consumerUnacked returns the number of unacknowledged messages of queue.
func consumerUnacked(t *testing.T, queue string) int {
	n, _ := testenv.QueueStat(t, queue, "messages_unacknowledged")
	return n
}

func TestFetchBinaryBodyIsBase64(t *testing.T) {
	b := testenv.NewBroker(t)
	s := testenv.NewStack(t, testenv.Options{})
	q := queueOnDefault(t, b)
	b.Publish("", q, amqp.Publishing{Body: []byte{0xff, 0x00, 0xfe}})

	r := s.Guest("POST", "/v1/fetch", mustJSON(t, map[string]any{"queue": q, "timeout": 5, "auto_ack": true}))
	expectStatus(t, r, 200)
	m := decode(t, r)
	if m["body"] != "/wD+" || m["body_encoding"] != "base64" {
		t.Fatalf("body = %v (%v), want base64 /wD+", m["body"], m["body_encoding"])
	}
	testenv.Eventually(t, 5*time.Second, "auto-acked message to leave the queue", func() bool {
		return b.Count(q) == 0 && consumerUnacked(t, q) == 0
	})
}

func TestFetchEmptyQueueWaitsThenNoContent(t *testing.T) {
	b := testenv.NewBroker(t)
	s := testenv.NewStack(t, testenv.Options{})
	q := queueOnDefault(t, b)

	start := time.Now()
	r := fetch(t, s, q, 2)
	elapsed := time.Since(start)
	expectStatus(t, r, 204)
	if elapsed < 1900*time.Millisecond || elapsed > 6*time.Second {
		t.Fatalf("fetch with timeout 2 returned after %v", elapsed)
	}
}

func TestFetchReturnsMessagePublishedDuringWait(t *testing.T) {
	b := testenv.NewBroker(t)
	s := testenv.NewStack(t, testenv.Options{})
	q := queueOnDefault(t, b)

	go func() {
		time.Sleep(500 * time.Millisecond)
		_, _ = s.Send("POST", "/v1/publish", "guest", "guest", []byte(`{"exchange":"","routing_key":"`+q+`","payload":"late"}`), nil)
	}()
	start := time.Now()
	r := fetch(t, s, q, 20)
	expectStatus(t, r, 200)
	if elapsed := time.Since(start); elapsed > 10*time.Second {
		t.Fatalf("message published during the wait came after %v", elapsed)
	}
	if m := decode(t, r); m["body"] != "late" {
		t.Fatalf("body = %v", m["body"])
	}
}

func TestErrorsOfBrokerObjects(t *testing.T) {
	b := testenv.NewBroker(t)
	s := testenv.NewStack(t, testenv.Options{})
	q := queueOnDefault(t, b)

	r := s.Guest("POST", "/v1/publish", mustJSON(t, map[string]any{"exchange": testenv.Name("missing"), "routing_key": "k", "payload": "x"}))
	expectError(t, r, 404, "exchange_not_found")
	r = fetch(t, s, testenv.Name("missing"), 1)
	expectError(t, r, 404, "queue_not_found")
	r = s.Guest("POST", "/v1/ack/987654321", nil)
	expectError(t, r, 404, "delivery_tag_not_found")
	r = s.Guest("POST", "/v1/publish", mustJSON(t, map[string]any{"exchange": "", "routing_key": testenv.Name("nowhere"), "payload": "x"}))
	expectError(t, r, 422, "unroutable")
	r = s.Guest("POST", "/v1/publish", mustJSON(t, map[string]any{"exchange": "", "routing_key": testenv.Name("nowhere"), "payload": "x", "mandatory": false}))
	expectStatus(t, r, 202)

	// The router still publishes after all of these.
	r = s.Guest("POST", "/v1/publish", mustJSON(t, map[string]any{"exchange": "", "routing_key": q, "payload": "after"}))
	expectStatus(t, r, 202)
}

func TestCyrillicNamesAndDottedRoutingKey(t *testing.T) {
	b := testenv.NewBroker(t)
	s := testenv.NewStack(t, testenv.Options{})
	ex := b.Exchange(testenv.Name("заказы"), "topic")
	q := b.Queue(testenv.Name("очередь"))
	b.Bind(q, ex, "order.*")

	r := s.Guest("POST", "/v1/publish", mustJSON(t, map[string]any{"exchange": ex, "routing_key": "order.created", "payload": map[string]any{"id": 1}}))
	expectStatus(t, r, 202)
	r = s.Do("POST", "/v1/exchanges/"+url.PathEscape(ex)+"/publish?routing_key=order.created", "guest", "guest", []byte("raw"), nil)
	expectStatus(t, r, 202)

	r = fetch(t, s, q, 5)
	expectStatus(t, r, 200)
	m := decode(t, r)
	if m["routing_key"] != "order.created" || m["exchange"] != ex {
		t.Fatalf("unexpected delivery: %s", r.Body)
	}
	if _, err := s.Send("POST", fmt.Sprintf("/v1/ack/%d", uint64(m["delivery_tag"].(float64))), "guest", "guest", nil, nil); err != nil {
		t.Fatal(err)
	}
	r = fetch(t, s, q, 5)
	expectStatus(t, r, 200)
	if m := decode(t, r); m["body"] != "raw" {
		t.Fatalf("second delivery body = %v", m["body"])
	}
}

// TestUnroutableAmongConcurrentPublishes sends 100 routable publishings and
// one unroutable one at once: returns must be matched by exchange, routing key
// and message id, not by arrival order, so exactly one request gets 422.
func TestUnroutableAmongConcurrentPublishes(t *testing.T) {
	b := testenv.NewBroker(t)
	s := testenv.NewStack(t, testenv.Options{})
	q := queueOnDefault(t, b)

	const routable = 100
	statuses := make([]int, routable+1)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i <= routable; i++ {
		key := q
		if i == routable/2 {
			key = testenv.Name("nowhere")
		}
		wg.Add(1)
		go func(i int, key string) {
			defer wg.Done()
			<-start
			r, err := s.Send("POST", "/v1/publish", "guest", "guest", []byte(`{"exchange":"","routing_key":"`+key+`","payload":{"i":`+fmt.Sprint(i)+`}}`), nil)
			if err == nil {
				statuses[i] = r.Status
			}
		}(i, key)
	}
	close(start)
	wg.Wait()

	count := map[int]int{}
	for i, st := range statuses {
		count[st]++
		if i == routable/2 && st != 422 {
			t.Errorf("the unroutable publish got %d, want 422", st)
		}
	}
	if count[422] != 1 || count[202] != routable {
		t.Fatalf("statuses %v, want 100×202 and 1×422", count)
	}
	testenv.Eventually(t, 5*time.Second, "all routable messages in the queue", func() bool { return b.Count(q) == routable })
}

// TestMissingExchangeUnderLoad deletes an exchange the router has seen,
// then publishes to it while other publishings share the channel. The
// broker closes that channel: no request may get 202 without its own ack,
// and publishing goes on afterwards.
func TestMissingExchangeUnderLoad(t *testing.T) {
	b := testenv.NewBroker(t)
	s := testenv.NewStack(t, testenv.Options{Actors: actorsOneChannel()})
	q := queueOnDefault(t, b)
	gone := b.Exchange(testenv.Name("gone"), "fanout")
	b.Bind(q, gone, "")

	// The router caches that the exchange exists.
	r := s.Guest("POST", "/v1/publish", mustJSON(t, map[string]any{"exchange": gone, "routing_key": "", "payload": "seed", "message_id": "seed"}))
	expectStatus(t, r, 202)
	b.DeleteExchange(gone)

	const workers, perWorker = 32, 20
	var mu sync.Mutex
	count := map[int]int{}
	accepted := map[string]bool{"seed": true}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < perWorker; i++ {
				ex := ""
				if w == 0 && i%5 == 0 {
					ex = gone
				}
				id := fmt.Sprintf("m-%d-%d", w, i)
				r, err := s.Send("POST", "/v1/publish", "guest", "guest", []byte(`{"exchange":"`+ex+`","routing_key":"`+q+`","payload":"m","message_id":"`+id+`"}`), nil)
				if err != nil {
					continue
				}
				mu.Lock()
				count[r.Status]++
				if r.Status == 202 {
					accepted[id] = true
				}
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	t.Logf("statuses: %v", count)

	if count[500] != 0 {
		t.Fatalf("500 answers: %v", count)
	}
	if count[404] == 0 {
		t.Fatalf("no publish to the deleted exchange got 404: %v", count)
	}
	if count[202] < workers*perWorker/2 {
		t.Fatalf("too few publishes succeeded around the channel error: %v", count)
	}

	// Every accepted message is in the queue. A message whose confirm was
	// lost with the channel is sent again, so it may be there twice, but
	// both copies carry the same message id and body.
	testenv.Eventually(t, 5*time.Second, "accepted messages in the queue", func() bool { return b.Count(q) >= len(accepted) })
	seen := map[string]string{}
	for {
		d, ok := b.Get(q)
		if !ok {
			break
		}
		id := d.MessageId
		if prev, dup := seen[id]; dup && prev != string(d.Body) {
			t.Fatalf("message %s stored twice with different bodies %q and %q", id, prev, d.Body)
		}
		seen[id] = string(d.Body)
	}
	for id := range accepted {
		if _, ok := seen[id]; !ok {
			t.Fatalf("message %s was answered 202 but is not in the queue", id)
		}
	}

	r = s.Guest("POST", "/v1/publish", mustJSON(t, map[string]any{"exchange": "", "routing_key": q, "payload": "after"}))
	expectStatus(t, r, 202)
}

func TestWrongPasswordAfterRightOne(t *testing.T) {
	testenv.NewBroker(t)
	s := testenv.NewStack(t, testenv.Options{})
	user, password := testenv.Name("u"), "right-секрет"
	testenv.User(t, user, password)
	b := testenv.NewBroker(t)
	q := queueOnDefault(t, b)
	body := mustJSON(t, map[string]any{"exchange": "", "routing_key": q, "payload": "x"})

	r := s.Do("POST", "/v1/publish", user, password, body, nil)
	expectStatus(t, r, 202)
	for i := 0; i < 3; i++ {
		r = s.Do("POST", "/v1/publish", user, "wrong", body, nil)
		expectError(t, r, 401, "authentication_failed")
		if r.Header.Get("WWW-Authenticate") == "" {
			t.Fatal("401 without WWW-Authenticate")
		}
	}
	r = s.Do("POST", "/v1/publish", user, password, body, nil)
	expectStatus(t, r, 202)
	if n := b.Count(q); n != 2 {
		t.Fatalf("queue holds %d messages, want the 2 published with the right password", n)
	}
	if strings.Contains(s.Logs.String(), password) || strings.Contains(s.Logs.String(), "wrong") {
		t.Fatal("a password appears in the logs")
	}
}

func TestBadInput(t *testing.T) {
	b := testenv.NewBroker(t)
	s := testenv.NewStack(t, testenv.Options{})
	q := queueOnDefault(t, b)

	cases := []struct {
		name, path, body string
		status           int
		code, field      string
	}{
		{"malformed JSON", "/v1/publish", `{"exchange": "", "routing_key":`, 400, "invalid_json", ""},
		{"not JSON", "/v1/publish", `hello`, 400, "invalid_json", ""},
		{"empty body", "/v1/publish", ``, 400, "invalid_json", ""},
		{"array body", "/v1/publish", `[1,2]`, 422, "validation_error", ""},
		{"unknown field", "/v1/publish", `{"exchange":"","routing_key":"k","payload":"x","colour":1}`, 422, "validation_error", "colour"},
		{"priority 256", "/v1/publish", `{"exchange":"","routing_key":"k","payload":"x","priority":256}`, 422, "validation_error", "priority"},
		{"priority negative", "/v1/publish", `{"exchange":"","routing_key":"k","payload":"x","priority":-1}`, 422, "validation_error", "priority"},
		{"priority string", "/v1/publish", `{"exchange":"","routing_key":"k","payload":"x","priority":"high"}`, 422, "validation_error", "priority"},
		{"persistence 3", "/v1/publish", `{"exchange":"","routing_key":"k","payload":"x","persistence":3}`, 422, "validation_error", "persistence"},
		{"payload missing", "/v1/publish", `{"exchange":"","routing_key":"k"}`, 422, "validation_error", "payload"},
		{"payload number", "/v1/publish", `{"exchange":"","routing_key":"k","payload":5}`, 422, "validation_error", "payload"},
		{"exchange missing", "/v1/publish", `{"routing_key":"k","payload":"x"}`, 422, "validation_error", "exchange"},
		{"exchange too long", "/v1/publish", `{"exchange":"` + strings.Repeat("x", 256) + `","routing_key":"k","payload":"x"}`, 400, "invalid_name", ""},
		{"control character", "/v1/publish", `{"exchange":"a\u0001b","routing_key":"k","payload":"x"}`, 400, "invalid_name", ""},
		{"timeout 301", "/v1/fetch", `{"queue":"` + q + `","timeout":301}`, 422, "validation_error", "timeout"},
		{"timeout negative", "/v1/fetch", `{"queue":"` + q + `","timeout":-1}`, 422, "validation_error", "timeout"},
		{"queue missing", "/v1/fetch", `{"timeout":1}`, 422, "validation_error", "queue"},
		{"fetch unknown field", "/v1/fetch", `{"queue":"` + q + `","wait":1}`, 422, "validation_error", "wait"},
		{"ack tag not a number", "/v1/ack/abc", ``, 422, "validation_error", "delivery_tag"},
		{"ack tag zero", "/v1/ack/0", ``, 422, "validation_error", "delivery_tag"},
		{"reject bad body", "/v1/reject/5", `{"requeue":"yes"}`, 422, "validation_error", "requeue"},
		{"raw bad priority", "/v1/exchanges/amq.default/publish?routing_key=k", ``, 422, "validation_error", "X-Priority"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			headers := map[string]string{}
			if c.name == "raw bad priority" {
				headers["X-Priority"] = "999"
			}
			r := s.Do("POST", c.path, "guest", "guest", []byte(c.body), headers)
			m := expectError(t, r, c.status, c.code)
			if c.field != "" && !strings.Contains(m["detail"].(string), `"`+c.field+`"`) {
				t.Fatalf("detail %q does not name the field %q", m["detail"], c.field)
			}
		})
	}
	if b.Count(q) != 0 {
		t.Fatal("bad input changed the queue")
	}
}

func TestAuthenticationRequired(t *testing.T) {
	s := testenv.NewStack(t, testenv.Options{})
	for _, path := range []string{"/v1/publish", "/v1/fetch", "/v1/ack/1", "/v1/reject/1", "/v1/exchanges/amq.default/publish"} {
		r := s.Do("POST", path, "", "", []byte(`{}`), nil)
		expectError(t, r, 401, "authentication_required")
		if !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Basic") {
			t.Fatalf("%s: WWW-Authenticate = %q", path, r.Header.Get("WWW-Authenticate"))
		}
	}
	r := s.Do("POST", "/v1/publish", "", "", []byte(`{}`), map[string]string{"Authorization": "Basic !!!"})
	expectError(t, r, 401, "authentication_required")
}

func TestRussianDetailAndRequestID(t *testing.T) {
	s := testenv.NewStack(t, testenv.Options{})
	r := s.Do("POST", "/v1/publish", "guest", "guest", []byte(`{`), map[string]string{
		"Accept-Language": "ru-RU,ru;q=0.9,en;q=0.8",
		"X-Request-ID":    "erp-42.7",
	})
	m := expectError(t, r, 400, "invalid_json")
	if !strings.Contains(m["detail"].(string), "Тело запроса") {
		t.Fatalf("detail is not Russian: %q", m["detail"])
	}
	if m["request_id"] != "erp-42.7" || r.Header.Get("X-Request-ID") != "erp-42.7" {
		t.Fatalf("request id not echoed: %v / %q", m["request_id"], r.Header.Get("X-Request-ID"))
	}
	r = s.Do("POST", "/v1/publish", "guest", "guest", []byte(`{`), map[string]string{"Accept-Language": "en-US,ru;q=0.5"})
	if m := expectError(t, r, 400, "invalid_json"); strings.Contains(m["detail"].(string), "Тело") {
		t.Fatalf("detail is Russian although English is preferred: %q", m["detail"])
	}
}

func TestHealthReadyMetricsOpenAPI(t *testing.T) {
	s := testenv.NewStack(t, testenv.Options{})
	for _, path := range []string{"/health", "/ready", "/health/live", "/health/ready", "/health/startup"} {
		r := s.Do("GET", path, "", "", nil, nil)
		expectStatus(t, r, 200)
		if m := decode(t, r); m["status"] == nil {
			t.Fatalf("%s: body without status: %s", path, r.Body)
		}
	}
	s.Guest("POST", "/v1/publish", []byte(`{`))
	r := s.Do("GET", "/metrics", "", "", nil, nil)
	expectStatus(t, r, 200)
	for _, name := range []string{"rmq_middleware_publish_duration_seconds", "rmq_middleware_http_requests_total", "rmq_middleware_error_total"} {
		if !strings.Contains(string(r.Body), name) {
			t.Fatalf("/metrics lacks %s", name)
		}
	}
	r = s.Do("GET", "/openapi.yaml", "", "", nil, nil)
	expectStatus(t, r, 200)
	if !strings.HasPrefix(string(r.Body), "openapi:") {
		t.Fatalf("/openapi.yaml does not start with openapi: %q", r.Body[:min(40, len(r.Body))])
	}
	r = s.Do("GET", "/v1/publish", "", "", nil, nil)
	expectError(t, r, 405, "method_not_allowed")
	r = s.Do("GET", "/nowhere", "", "", nil, nil)
	expectError(t, r, 404, "not_found")
}

func TestBodyTooLarge(t *testing.T) {
	// A small limit, so that the whole body fits in the socket buffers:
	// the router answers after the headers and closes the connection, and
	// a client still writing a large body would see a reset instead.
	s := testenv.NewStack(t, testenv.Options{MaxBodyBytes: 1024})
	big := bytes.Repeat([]byte("x"), 1025)
	r, err := s.Send("POST", "/v1/exchanges/amq.default/publish?routing_key=k", "guest", "guest", big, nil)
	if err != nil {
		t.Fatal(err)
	}
	expectError(t, r, 413, "payload_too_large")
	if n := testutil.ToFloat64(s.Metrics.HTTPRequests.WithLabelValues("other", "POST", "413")); n != 1 {
		t.Fatalf("413 counted %v times in the HTTP request metric", n)
	}
}

// TestConcurrentWrongPasswords sends wrong passwords at once: the
// connection actor retires after the refused login, and requests that
// reach it meanwhile go to a new actor, so every one gets 401.
func TestConcurrentWrongPasswords(t *testing.T) {
	b := testenv.NewBroker(t)
	s := testenv.NewStack(t, testenv.Options{Quiet: true})
	q := queueOnDefault(t, b)
	body := mustJSON(t, map[string]any{"exchange": "", "routing_key": q, "payload": "x"})

	var wg sync.WaitGroup
	statuses := make([]string, 20)
	for i := range statuses {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			r, err := s.Send("POST", "/v1/publish", "guest", "wrong-password", body, nil)
			if err != nil {
				statuses[i] = err.Error()
				return
			}
			var e struct{ Error string }
			_ = json.Unmarshal(r.Body, &e)
			statuses[i] = fmt.Sprint(r.Status, " ", e.Error)
		}(i)
	}
	wg.Wait()
	for i, st := range statuses {
		if st != "401 authentication_failed" {
			t.Fatalf("request %d got %s, want 401 authentication_failed (all: %v)", i, st, statuses)
		}
	}
}
