package transport_test

import (
	"context"
	"encoding/binary"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/rmqrouter/rmqrouter/internal/testenv"
	. "github.com/rmqrouter/rmqrouter/transport"
)

// ackRecorder is a socket that records every basic.ack and basic.nack frame
// written through it.
type ackRecorder struct {
	net.Conn

	mu      sync.Mutex
	started bool
	stream  []byte
	frames  []ackFrame
}

type ackFrame struct {
	tag      uint64
	multiple bool
}

func (r *ackRecorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	r.stream = append(r.stream, p...)
	if !r.started {
		// The connection opens with the 8-byte protocol header.
		if len(r.stream) < 8 {
			r.mu.Unlock()
			return r.Conn.Write(p)
		}
		r.stream = r.stream[8:]
		r.started = true
	}
	for {
		// A frame is type (1), channel (2), size (4), payload, end (1).
		if len(r.stream) < 7 {
			break
		}
		size := int(binary.BigEndian.Uint32(r.stream[3:7]))
		if len(r.stream) < 8+size {
			break
		}
		payload := r.stream[7 : 7+size]
		// Method frames carry class and method ids; basic.ack is 60/80
		// and basic.nack 60/120, both followed by the tag and a flag byte.
		if r.stream[0] == 1 && size >= 13 && binary.BigEndian.Uint16(payload) == 60 {
			if m := binary.BigEndian.Uint16(payload[2:]); m == 80 || m == 120 {
				r.frames = append(r.frames, ackFrame{tag: binary.BigEndian.Uint64(payload[4:]), multiple: payload[12]&1 == 1})
			}
		}
		r.stream = r.stream[8+size:]
	}
	r.mu.Unlock()
	return r.Conn.Write(p)
}

func (r *ackRecorder) take() []ackFrame {
	r.mu.Lock()
	defer r.mu.Unlock()
	f := r.frames
	r.frames = nil
	return f
}

func dialRecorded(t *testing.T) (*Connection, *ackRecorder) {
	t.Helper()
	u, err := amqp.ParseURI(testenv.AMQPURL())
	if err != nil {
		t.Fatal(err)
	}
	rec := &ackRecorder{}
	SetWrapConn(func(c net.Conn) net.Conn { rec.Conn = c; return rec })
	defer SetWrapConn(nil)
	conn, err := Dial(context.Background(), DialConfig{
		Endpoint: Endpoint{Scheme: u.Scheme, Host: u.Host, Port: u.Port},
		Vhost:    u.Vhost,
		User:     u.Username,
		Password: []byte(u.Password),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(5 * time.Second) })
	return conn, rec
}

// TestSettleGroupFrames checks that a group covering exactly the oldest
// unsettled deliveries goes out as one frame with the multiple flag. Any
// other group goes out frame by frame, so the broker settles nothing else.
func TestSettleGroupFrames(t *testing.T) {
	broker := testenv.NewBroker(t)
	queue := broker.Queue(testenv.Name("settle"))
	for i := 1; i <= 10; i++ {
		broker.Publish("", queue, amqp.Publishing{Body: []byte(strconv.Itoa(i))})
	}

	conn, rec := dialRecorded(t)
	deliveries := make(chan Delivery, 10)
	consumer, err := OpenConsumer(conn, ConsumerOptions{Queue: queue, Prefetch: 10, Generation: 1}, ConsumerHandler{
		OnDelivery: func(d Delivery) { deliveries <- d },
	})
	if err != nil {
		t.Fatal(err)
	}
	consumer.Start()
	defer consumer.Close()
	tags := make([]uint64, 0, 10)
	for len(tags) < 10 {
		select {
		case d := <-deliveries:
			tags = append(tags, d.BrokerTag)
		case <-time.After(5 * time.Second):
			t.Fatalf("got %d of 10 deliveries", len(tags))
		}
	}

	settle := func(ack bool, ts ...uint64) {
		t.Helper()
		var wg sync.WaitGroup
		group := make([]Settlement, len(ts))
		for i, tag := range ts {
			wg.Add(1)
			group[i] = Settlement{Tag: tag, Done: func(err error) {
				if err != nil {
					t.Errorf("settle %d: %v", tag, err)
				}
				wg.Done()
			}}
		}
		consumer.Settle(group, ack, true)
		wg.Wait()
	}
	unacked := func(want int) {
		t.Helper()
		testenv.Eventually(t, 10*time.Second, "messages_unacknowledged = "+strconv.Itoa(want), func() bool {
			n, ok := testenv.QueueStat(t, queue, "messages_unacknowledged")
			return ok && n == want
		})
	}

	// The oldest three, out of order: one frame up to the third.
	settle(true, tags[2], tags[0], tags[1])
	if got := rec.take(); len(got) != 1 || got[0] != (ackFrame{tag: tags[2], multiple: true}) {
		t.Fatalf("frames for the oldest three: %+v", got)
	}
	unacked(7)

	// A gap (the fourth stays unsettled): one frame per delivery.
	settle(true, tags[4], tags[5])
	if got := rec.take(); len(got) != 2 || got[0] != (ackFrame{tag: tags[4]}) || got[1] != (ackFrame{tag: tags[5]}) {
		t.Fatalf("frames around a gap: %+v", got)
	}
	unacked(5)

	// Rejections share a frame the same way. After them the rest is the oldest.
	settle(false, tags[3], tags[6])
	if got := rec.take(); len(got) != 1 || got[0] != (ackFrame{tag: tags[6], multiple: true}) {
		t.Fatalf("frames for a rejection of the oldest: %+v", got)
	}
	settle(true, tags[9], tags[7], tags[8])
	if got := rec.take(); len(got) != 1 || got[0] != (ackFrame{tag: tags[9], multiple: true}) {
		t.Fatalf("frames for the last three: %+v", got)
	}
	// The two rejected with requeue come back, and nothing else is
	// unsettled.
	testenv.Eventually(t, 10*time.Second, "two redeliveries", func() bool { return len(deliveries) == 2 })
	unacked(2)
}
