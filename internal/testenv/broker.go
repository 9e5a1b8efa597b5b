package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// AMQPURL returns the broker URL of the integration tests.
func AMQPURL() string {
	if u := os.Getenv("RMQROUTER_TEST_AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

// Broker is a direct AMQP connection for test setup and checks.
type Broker struct {
	t    testing.TB
	Conn *amqp.Connection
}

// NewBroker connects to the test broker and closes the connection in
// cleanup. It fails the test when the broker does not answer: the test
// command starts the broker first, so a missing broker is an error.
func NewBroker(t testing.TB) *Broker {
	t.Helper()
	var conn *amqp.Connection
	var err error
	for i := 0; i < 30; i++ {
		conn, err = amqp.Dial(AMQPURL())
		if err == nil {
			break
		}
		time.Sleep(time.Second)
	}
	if err != nil {
		t.Fatalf("connect to the test broker: %v (start it with `make broker`)", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &Broker{t: t, Conn: conn}
}

// Name returns a unique name with the given prefix.
func Name(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

// channel opens a channel, dialling again first when a fault test closed
// the connection.
func (b *Broker) channel() *amqp.Channel {
	b.t.Helper()
	if b.Conn.IsClosed() {
		var err error
		for i := 0; i < 60; i++ {
			var conn *amqp.Connection
			if conn, err = amqp.Dial(AMQPURL()); err == nil {
				b.Conn = conn
				b.t.Cleanup(func() { _ = conn.Close() })
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		if err != nil {
			b.t.Fatalf("reconnect to the test broker: %v", err)
		}
	}
	ch, err := b.Conn.Channel()
	if err != nil {
		b.t.Fatalf("open channel: %v", err)
	}
	return ch
}

// Queue declares a durable queue and deletes it in cleanup.
func (b *Broker) Queue(name string) string {
	b.t.Helper()
	ch := b.channel()
	defer ch.Close()
	if _, err := ch.QueueDeclare(name, true, false, false, false, nil); err != nil {
		b.t.Fatalf("declare queue %q: %v", name, err)
	}
	b.t.Cleanup(func() { b.DeleteQueue(name) })
	return name
}

// DeleteQueue deletes a queue; a missing queue is not an error.
func (b *Broker) DeleteQueue(name string) {
	conn, err := amqp.Dial(AMQPURL())
	if err != nil {
		return
	}
	defer conn.Close()
	if ch, err := conn.Channel(); err == nil {
		_, _ = ch.QueueDelete(name, false, false, false)
	}
}

// Exchange declares a durable exchange of kind and deletes it in cleanup.
func (b *Broker) Exchange(name, kind string) string {
	b.t.Helper()
	ch := b.channel()
	defer ch.Close()
	if err := ch.ExchangeDeclare(name, kind, true, false, false, false, nil); err != nil {
		b.t.Fatalf("declare exchange %q: %v", name, err)
	}
	b.t.Cleanup(func() { b.DeleteExchange(name) })
	return name
}

// DeleteExchange deletes an exchange; a missing one is not an error.
func (b *Broker) DeleteExchange(name string) {
	conn, err := amqp.Dial(AMQPURL())
	if err != nil {
		return
	}
	defer conn.Close()
	if ch, err := conn.Channel(); err == nil {
		_ = ch.ExchangeDelete(name, false, false)
	}
}

// Bind binds queue to exchange with key.
func (b *Broker) Bind(queue, exchange, key string) {
	b.t.Helper()
	b.BindArgs(queue, exchange, key, nil)
}

// BindArgs binds queue to exchange with key and binding arguments, such as
// the header matches of a headers exchange.
func (b *Broker) BindArgs(queue, exchange, key string, args amqp.Table) {
	b.t.Helper()
	ch := b.channel()
	defer ch.Close()
	if err := ch.QueueBind(queue, key, exchange, false, args); err != nil {
		b.t.Fatalf("bind %q to %q: %v", queue, exchange, err)
	}
}

// Publish sends a persistent message directly and waits for its confirm.
func (b *Broker) Publish(exchange, key string, msg amqp.Publishing) {
	b.t.Helper()
	ch := b.channel()
	defer ch.Close()
	if err := ch.Confirm(false); err != nil {
		b.t.Fatalf("confirm.select: %v", err)
	}
	dc, err := ch.PublishWithDeferredConfirm(exchange, key, false, false, msg)
	if err != nil {
		b.t.Fatalf("publish: %v", err)
	}
	if !dc.Wait() {
		b.t.Fatalf("publish to %q/%q was nacked", exchange, key)
	}
}

// Get takes one message with basic.get and acks it; ok is false when the
// queue is empty.
func (b *Broker) Get(queue string) (amqp.Delivery, bool) {
	b.t.Helper()
	ch := b.channel()
	defer ch.Close()
	d, ok, err := ch.Get(queue, true)
	if err != nil {
		b.t.Fatalf("basic.get %q: %v", queue, err)
	}
	return d, ok
}

// Count returns the number of ready messages in queue.
func (b *Broker) Count(queue string) int {
	b.t.Helper()
	ch := b.channel()
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		b.t.Fatalf("inspect queue %q: %v", queue, err)
	}
	return q.Messages
}

// Eventually polls cond every 50 ms until it holds or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Rabbitmqctl runs rabbitmqctl with args and returns its output.
func Rabbitmqctl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command("rabbitmqctl", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("rabbitmqctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// QueueStat returns one numeric column of rabbitmqctl list_queues for queue
// (such as "messages" or "messages_unacknowledged"); ok is false when the
// queue is not listed.
func QueueStat(t testing.TB, queue, column string) (n int, ok bool) {
	t.Helper()
	out := Rabbitmqctl(t, "list_queues", "-q", "--no-table-headers", "name", column)
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == queue {
			if _, err := fmt.Sscan(f[1], &n); err != nil {
				t.Fatalf("rabbitmqctl list_queues: %s of %q is %q, not a number", column, queue, f[1])
			}
			return n, true
		}
	}
	return 0, false
}

// Users creates n RabbitMQ users named prefix-1 … prefix-n with password
// and full permissions on "/" in one rabbitmqctl call, and deletes them in
// cleanup.
func Users(t testing.TB, prefix string, n int, password string) []string {
	t.Helper()
	for _, r := range prefix + password {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			t.Fatalf("Users: prefix and password must be lower-case letters, digits and '-'")
		}
	}
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%s-%d", prefix, i+1)
	}
	each := fmt.Sprintf(`U = list_to_binary("%s-" ++ integer_to_list(I))`, prefix)
	Rabbitmqctl(t, "eval", fmt.Sprintf(`[begin %s, ok = rabbit_auth_backend_internal:add_user(U, <<"%s">>, <<"rmqrouter-tests">>), ok = rabbit_auth_backend_internal:set_permissions(U, <<"/">>, <<".*">>, <<".*">>, <<".*">>, <<"rmqrouter-tests">>) end || I <- lists:seq(1, %d)], ok.`, each, password, n))
	t.Cleanup(func() {
		_ = exec.Command("rabbitmqctl", "eval", fmt.Sprintf(`[begin %s, rabbit_auth_backend_internal:delete_user(U, <<"rmqrouter-tests">>) end || I <- lists:seq(1, %d)], ok.`, each, n)).Run()
	})
	return names
}

// User creates a RabbitMQ user with full permissions on "/" and deletes it
// in cleanup.
func User(t testing.TB, name, password string) {
	t.Helper()
	Rabbitmqctl(t, "add_user", name, password)
	t.Cleanup(func() { _ = exec.Command("rabbitmqctl", "delete_user", name).Run() })
	Rabbitmqctl(t, "set_permissions", "-p", "/", name, ".*", ".*", ".*")
}
