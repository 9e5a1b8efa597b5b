package transport_test

import (
	"errors"
	"testing"
	"time"

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
