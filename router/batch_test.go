package router_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rmqrouter/rmqrouter/actors"
	"github.com/rmqrouter/rmqrouter/internal/testenv"
)

type batchAnswer struct {
	RequestID string `json:"request_id"`
	Accepted  int    `json:"accepted"`
	Failed    int    `json:"failed"`
	Results   []struct {
		Index     int    `json:"index"`
		Status    int    `json:"status"`
		MessageID string `json:"message_id"`
		Error     string `json:"error"`
		Detail    string `json:"detail"`
	} `json:"results"`
}

func TestBatchPublishResultsInOrder(t *testing.T) {
	b := testenv.NewBroker(t)
	s := testenv.NewStack(t, testenv.Options{})
	q := b.Queue(testenv.Name("batch"))

	var msgs []string
	for i := 0; i < 100; i++ {
		msgs = append(msgs, fmt.Sprintf(`{"exchange":"","routing_key":%q,"payload":{"n":%d},"message_id":"b-%d"}`, q, i, i))
	}
	msgs[10] = `{"exchange":"` + testenv.Name("missing") + `","routing_key":"k","payload":"x"}`
	msgs[20] = `{"exchange":"","routing_key":"k","payload":"x","priority":300}`
	msgs[30] = `{"exchange":"","routing_key":"` + testenv.Name("nowhere") + `","payload":"x"}`
	msgs[40] = `{"exchange":"","routing_key":"k","payload":"x","colour":"red"}`
	r := s.Guest("POST", "/v1/publish/batch", []byte(`{"messages":[`+strings.Join(msgs, ",")+`]}`))
	expectStatus(t, r, 207)

	var a batchAnswer
	if err := json.Unmarshal(r.Body, &a); err != nil {
		t.Fatal(err)
	}
	if len(a.Results) != 100 || a.Accepted != 96 || a.Failed != 4 {
		t.Fatalf("accepted %d, failed %d of %d results: %s", a.Accepted, a.Failed, len(a.Results), r.Body)
	}
	want := map[int]string{10: "exchange_not_found", 20: "validation_error", 30: "unroutable", 40: "validation_error"}
	for i, res := range a.Results {
		if res.Index != i {
			t.Fatalf("result %d has index %d", i, res.Index)
		}
		if code, bad := want[i]; bad {
			if res.Error != code || res.Status < 400 || res.Detail == "" {
				t.Fatalf("result %d = %+v, want %s", i, res, code)
			}
			continue
		}
		if res.Status != 202 || res.MessageID != fmt.Sprintf("b-%d", i) {
			t.Fatalf("result %d = %+v, want 202", i, res)
		}
	}
	testenv.Eventually(t, 5*time.Second, "96 messages in the queue", func() bool { return b.Count(q) == 96 })

	// The stored order is the order of the batch.
	prev := -1
	for {
		d, ok := b.Get(q)
		if !ok {
			break
		}
		var n int
		fmt.Sscanf(d.MessageId, "b-%d", &n)
		if n <= prev {
			t.Fatalf("message %s stored after b-%d", d.MessageId, prev)
		}
		prev = n
	}
}

func TestBatchPublishLimits(t *testing.T) {
	s := testenv.NewStack(t, testenv.Options{})
	r := s.Guest("POST", "/v1/publish/batch", []byte(`{"messages":[]}`))
	expectError(t, r, 422, "validation_error")
	many := strings.Repeat(`{"exchange":"","routing_key":"k","payload":"x"},`, actors.MaxBatch+1)
	r = s.Guest("POST", "/v1/publish/batch", []byte(`{"messages":[`+strings.TrimSuffix(many, ",")+`]}`))
	expectError(t, r, 422, "validation_error")
	r = s.Guest("POST", "/v1/publish/batch", []byte(`{"messages":{}}`))
	expectError(t, r, 422, "validation_error")
	r = s.Do("POST", "/v1/publish/batch", "", "", []byte(`{"messages":[]}`), nil)
	expectError(t, r, 401, "authentication_required")
}

// TestManyConcurrentPublishesOneUser sends 3,000 publishes of one user at
// once: they stay within the channel pool (no channel id exhaustion, no
// 5xx) and the overflow gets the bulkhead's 429 with Retry-After.
func TestManyConcurrentPublishesOneUser(t *testing.T) {
	b := testenv.NewBroker(t)
	s := testenv.NewStack(t, testenv.Options{Quiet: true})
	q := b.Queue(testenv.Name("many"))

	const n = 3000
	var mu sync.Mutex
	count := map[int]int{}
	missingRetryAfter := 0
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-start
			r, err := s.Send("POST", "/v1/publish", "guest", "guest", []byte(`{"exchange":"","routing_key":"`+q+`","payload":"x"}`), nil)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				count[-1]++
				return
			}
			count[r.Status]++
			if r.Status == 429 && r.Header.Get("Retry-After") == "" {
				missingRetryAfter++
			}
		}(i)
	}
	close(start)
	wg.Wait()
	t.Logf("statuses: %v", count)
	if count[202]+count[429] != n {
		t.Fatalf("statuses %v, want only 202 and 429", count)
	}
	if count[429] == 0 {
		t.Fatal("no request was turned away by the bulkhead")
	}
	if missingRetryAfter > 0 {
		t.Fatalf("%d answers 429 lack Retry-After", missingRetryAfter)
	}
	testenv.Eventually(t, 10*time.Second, "accepted messages in the queue", func() bool { return b.Count(q) == count[202] })
	if strings.Contains(s.Logs.String(), "channel id space exhausted") {
		t.Fatal("the router ran out of channel ids")
	}
}
