package transport_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/rmqrouter/rmqrouter/internal/testenv"
	. "github.com/rmqrouter/rmqrouter/transport"
)

// TestReturnsBeyondBuffer checks that every one of many more unroutable
// publishings than the return listener buffers gets ErrUnroutable. The
// broker's returns wait for the monitor and are neither lost nor stuck.
func TestReturnsBeyondBuffer(t *testing.T) {
	broker := testenv.NewBroker(t)
	exchange := broker.Exchange(testenv.Name("returns"), "direct")
	conn, _ := dialRecorded(t)
	ch, err := OpenConfirmChannel(conn, 1, ChannelOptions{QueueLength: 512, ReturnBuffer: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close(5 * time.Second)

	const n = 300
	results := make(chan error, n)
	batch := make([]*Publish, n)
	for i := range batch {
		batch[i] = &Publish{
			Msg:  &Message{Exchange: exchange, RoutingKey: "nowhere", Mandatory: true, Body: []byte("x")},
			Done: func(err error) { results <- err },
		}
	}
	if !ch.EnqueueBatch(batch) {
		t.Fatal("the channel rejected the batch")
	}
	for i := range n {
		select {
		case err := <-results:
			if !errors.Is(err, ErrUnroutable) {
				t.Fatalf("publishing %d: %v, want unroutable", i, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("timed out with %d of %d publishings done", i, n)
		}
	}
}

// TestReturnsMatchedWithoutHeader checks that returns find their publishings
// in one pipelined batch: by exchange, routing key and message id where those
// differ, and by a publish id header where two waiting publishings share them.
// A headers exchange routes on a header the three do not include, so
// publishings with the same three can differ in routing.
func TestReturnsMatchedWithoutHeader(t *testing.T) {
	broker := testenv.NewBroker(t)
	exchange := broker.Exchange(testenv.Name("returns-headers"), "headers")
	queue := broker.Queue(testenv.Name("returns-headers"))
	broker.BindArgs(queue, exchange, "", amqp.Table{"x-match": "all", "route": "yes"})
	conn, _ := dialRecorded(t)
	ch, err := OpenConfirmChannel(conn, 1, ChannelOptions{QueueLength: 512}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close(5 * time.Second)

	// Odd publishings are unroutable. The first 60 have a message id each. The
	// next 60 share one and start with an unroutable one, so both the keyed
	// publishing of that id and some with a header are returned.
	const n = 120
	results := make([]chan error, n)
	batch := make([]*Publish, n)
	for i := range batch {
		route := "yes"
		if i%2 == 1 {
			route = "no"
		}
		id := "shared"
		if i < n/2 {
			id = fmt.Sprintf("own-%d", i)
		}
		if i == n/2 {
			route = "no"
		}
		done := make(chan error, 1)
		results[i] = done
		batch[i] = &Publish{
			Msg: &Message{
				Exchange: exchange, Mandatory: true, MessageID: id, DeliveryMode: 2,
				Headers: map[string]any{"route": route}, Body: []byte(id),
			},
			Done: func(err error) { done <- err },
		}
	}
	if !ch.EnqueueBatch(batch) {
		t.Fatal("the channel rejected the batch")
	}
	routed, withHeader := 0, 0
	for i, done := range results {
		var err error
		select {
		case err = <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("publishing %d got no result", i)
		}
		unroutable := batch[i].Msg.Headers["route"] == "no"
		switch {
		case unroutable && !errors.Is(err, ErrUnroutable):
			t.Fatalf("publishing %d (unroutable): %v, want unroutable", i, err)
		case !unroutable && err != nil:
			t.Fatalf("publishing %d (routable): %v, want an ack", i, err)
		case !unroutable:
			routed++
		}
		if batch[i].Msg.PublishID != "" {
			withHeader++
		}
	}
	if batch[0].Msg.PublishID != "" {
		t.Error("publishing 0, the first with its message id, got a publish id header")
	}
	if batch[n/2].Msg.PublishID != "" {
		t.Error("the first publishing of the shared message id got a publish id header")
	}
	if withHeader == 0 {
		t.Fatal("no publishing sharing a message id got a publish id header; the header path was not tested")
	}
	testenv.Eventually(t, 5*time.Second, "routed messages in the queue", func() bool { return broker.Count(queue) == routed })
	for range routed {
		d, ok := broker.Get(queue)
		if !ok {
			t.Fatal("the queue holds fewer messages than were routed")
		}
		if d.Headers["route"] != "yes" {
			t.Fatalf("an unroutable message reached the queue: %v", d.Headers)
		}
		if _, has := d.Headers[PublishIDHeader]; has == (d.MessageId != "shared") {
			t.Fatalf("message %s: publish id header present = %v", d.MessageId, has)
		}
	}
}

// TestCallerPublishIDHeaderIgnored publishes an unroutable message whose own
// headers carry PublishIDHeader. The channel drops that header, so the return
// is still matched by key and the publishing gets ErrUnroutable, not an ack.
func TestCallerPublishIDHeaderIgnored(t *testing.T) {
	broker := testenv.NewBroker(t)
	exchange := broker.Exchange(testenv.Name("returns-caller-header"), "direct")
	conn, _ := dialRecorded(t)
	ch, err := OpenConfirmChannel(conn, 1, ChannelOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close(5 * time.Second)

	done := make(chan error, 1)
	ok := ch.Enqueue(&Publish{
		Msg: &Message{
			Exchange: exchange, RoutingKey: "nowhere", Mandatory: true, MessageID: "m",
			Headers: map[string]any{PublishIDHeader: "from-caller"}, Body: []byte("x"),
		},
		Done: func(err error) { done <- err },
	})
	if !ok {
		t.Fatal("the channel rejected the publishing")
	}
	select {
	case err := <-done:
		if !errors.Is(err, ErrUnroutable) {
			t.Fatalf("result %v, want unroutable", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no result")
	}
}
