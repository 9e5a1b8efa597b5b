package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// credential is one RabbitMQ user the workers authenticate as, both to the router (HTTP
// Basic) and to the broker (AMQP PLAIN).
type credential struct {
	user     string
	password string
}

// topology is the exchange and queue one harness run declares for itself.
type topology struct {
	exchange   string
	queue      string
	routingKey string
}

// newRunID returns a short identifier that makes the names of this run's exchange, queue
// and users unique on the broker.
func newRunID() string {
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never returns an error since Go 1.24
	return strconv.FormatInt(time.Now().Unix(), 36) + hex.EncodeToString(b[:])
}

// withChannel runs fn on a fresh channel of conn and closes the channel afterwards. A
// fresh channel per call is used because a failed AMQP method closes its channel.
func withChannel(conn *amqp.Connection, fn func(*amqp.Channel) error) error {
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open control channel: %w", err)
	}
	defer ch.Close()
	return fn(ch)
}

// declareTopology declares a durable direct exchange and a durable classic queue bound to
// it, named after runID, so persistent messages are written to disk as in production.
func declareTopology(conn *amqp.Connection, runID string) (topology, error) {
	t := topology{exchange: "bench." + runID, queue: "bench." + runID, routingKey: "bench"}
	err := withChannel(conn, func(ch *amqp.Channel) error {
		if err := ch.ExchangeDeclare(t.exchange, amqp.ExchangeDirect, true, false, false, false, nil); err != nil {
			return fmt.Errorf("declare exchange %s: %w", t.exchange, err)
		}
		if _, err := ch.QueueDeclare(t.queue, true, false, false, false, amqp.Table{"x-queue-type": "classic"}); err != nil {
			return fmt.Errorf("declare queue %s: %w", t.queue, err)
		}
		if err := ch.QueueBind(t.queue, t.routingKey, t.exchange, false, nil); err != nil {
			return fmt.Errorf("bind queue %s to exchange %s: %w", t.queue, t.exchange, err)
		}
		return nil
	})
	return t, err
}

// deleteTopology deletes the queue and the exchange of t.
func deleteTopology(conn *amqp.Connection, t topology) error {
	return withChannel(conn, func(ch *amqp.Channel) error {
		_, queueErr := ch.QueueDelete(t.queue, false, false, false)
		if queueErr != nil {
			return fmt.Errorf("delete queue %s: %w", t.queue, queueErr)
		}
		if err := ch.ExchangeDelete(t.exchange, false, false); err != nil {
			return fmt.Errorf("delete exchange %s: %w", t.exchange, err)
		}
		return nil
	})
}

// purgeQueue removes every ready message from the queue of t.
func purgeQueue(conn *amqp.Connection, t topology) error {
	return withChannel(conn, func(ch *amqp.Channel) error {
		if _, err := ch.QueuePurge(t.queue, false); err != nil {
			return fmt.Errorf("purge queue %s: %w", t.queue, err)
		}
		return nil
	})
}

// prefillQueue publishes count copies of msg to t through one confirm-mode channel, with
// up to 500 confirms outstanding, and returns once the broker has confirmed them all.
func prefillQueue(ctx context.Context, conn *amqp.Connection, t topology, msg amqp.Publishing, count int) error {
	const window = 500
	return withChannel(conn, func(ch *amqp.Channel) error {
		if err := ch.Confirm(false); err != nil {
			return fmt.Errorf("enable publisher confirms: %w", err)
		}
		pending := make([]*amqp.DeferredConfirmation, 0, window)
		for sent := 0; sent < count; {
			pending = pending[:0]
			for ; sent < count && len(pending) < window; sent++ {
				dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, t.exchange, t.routingKey, false, false, msg)
				if err != nil {
					return fmt.Errorf("prefill publish: %w", err)
				}
				pending = append(pending, dc)
			}
			for _, dc := range pending {
				acked, err := dc.WaitContext(ctx)
				if err != nil {
					return fmt.Errorf("prefill confirm: %w", err)
				}
				if !acked {
					return errors.New("prefill publish was nacked by the broker")
				}
			}
		}
		return nil
	})
}

// dialAs opens an AMQP connection to the broker of base as cred.
func dialAs(base amqp.URI, cred credential, name string) (*amqp.Connection, error) {
	uri := base
	uri.Username, uri.Password = cred.user, cred.password
	conn, err := amqp.DialConfig(uri.String(), amqp.Config{
		Heartbeat:  10 * time.Second,
		Locale:     "en_US",
		Properties: amqp.Table{"connection_name": name},
	})
	if err != nil {
		return nil, fmt.Errorf("connect to %s:%d as %s: %w", base.Host, base.Port, cred.user, err)
	}
	return conn, nil
}

// isLoopbackHost reports whether host is a loopback address or "localhost", that is
// whether a process serving it runs on this machine.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// parseErlangPID parses the output of `rabbitmqctl eval 'os:getpid().'`, an Erlang string
// such as "2965" in double quotes.
func parseErlangPID(output string) (int, error) {
	text := strings.Trim(strings.TrimSpace(output), `"`)
	pid, err := strconv.Atoi(text)
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("invalid process id %q from rabbitmqctl", strings.TrimSpace(output))
	}
	return pid, nil
}

// findBrokerPID returns the process id of the local RabbitMQ node, asking the node itself
// first and falling back to the oldest beam.smp process.
func findBrokerPID(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()

	out, evalErr := exec.CommandContext(ctx, "rabbitmqctl", "eval", "os:getpid().").Output()
	if evalErr == nil {
		if pid, err := parseErlangPID(string(out)); err == nil {
			return pid, nil
		}
	}

	out, pgrepErr := exec.CommandContext(ctx, "pgrep", "-o", "-x", "beam.smp").Output()
	if pgrepErr != nil {
		return 0, fmt.Errorf("find the broker process: rabbitmqctl eval failed (%v) and pgrep found no beam.smp (%v)", evalErr, pgrepErr)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		return 0, fmt.Errorf("invalid process id %q from pgrep", strings.TrimSpace(string(out)))
	}
	return pid, nil
}

// rabbitmqctl runs one rabbitmqctl command and includes its output in the error.
func rabbitmqctl(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "rabbitmqctl", args...).CombinedOutput()
	if err == nil {
		return nil
	}
	if output := strings.TrimSpace(string(out)); output != "" {
		return fmt.Errorf("rabbitmqctl %s: %w: %s", args[0], err, output)
	}
	return fmt.Errorf("rabbitmqctl %s: %w", args[0], err)
}

// userSet is the temporary users one run created.
type userSet struct {
	mu      sync.Mutex
	created []string
}

// createUsers adds count users named bench-<runID>-<n> with random passwords and full
// permissions on vhost, running up to four rabbitmqctl commands at once. The returned set
// lists every user it tried to add, also when an error stopped the loop, so that
// deleteAll removes them.
func createUsers(ctx context.Context, runID string, count int, vhost string) ([]credential, *userSet, error) {
	set := &userSet{}
	creds := make([]credential, count)
	for i := range creds {
		var secret [16]byte
		_, _ = rand.Read(secret[:])
		creds[i] = credential{user: fmt.Sprintf("bench-%s-%d", runID, i+1), password: hex.EncodeToString(secret[:])}
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var firstErr error
	var errOnce sync.Once
	slots := make(chan struct{}, 4)
	for _, cred := range creds {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			if ctx.Err() != nil {
				return
			}
			err := addUser(ctx, set, vhost, cred)
			if err != nil {
				errOnce.Do(func() { firstErr = err; cancel() })
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, set, firstErr
	}
	return creds, set, nil
}

func addUser(ctx context.Context, set *userSet, vhost string, cred credential) error {
	// The name is recorded first: an interrupt can stop rabbitmqctl after the broker
	// has added the user, and deleting a user that does not exist is harmless.
	set.mu.Lock()
	set.created = append(set.created, cred.user)
	set.mu.Unlock()

	// NOTE: rabbitmqctl 3.10 takes the password as an argument, so it is visible in the
	// process list while the command runs. These users exist only for one run.
	if err := rabbitmqctl(ctx, "add_user", cred.user, cred.password); err != nil {
		return err
	}
	return rabbitmqctl(ctx, "set_permissions", "-p", vhost, cred.user, ".*", ".*", ".*")
}

// deleteAll deletes every user of the set, four at a time, and returns the errors joined.
// A user that does not exist is not an error.
func (s *userSet) deleteAll(ctx context.Context) error {
	s.mu.Lock()
	names := s.created
	s.created = nil
	s.mu.Unlock()

	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	slots := make(chan struct{}, 4)
	for _, name := range names {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			err := rabbitmqctl(ctx, "delete_user", name)
			if err != nil && !strings.Contains(err.Error(), "does not exist") {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// brokerVersion returns the RabbitMQ version reported by rabbitmqctl, or "unknown".
func brokerVersion(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "rabbitmqctl", "version").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}
