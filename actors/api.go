package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/rmqrouter/rmqrouter/metrics"
	"github.com/rmqrouter/rmqrouter/security"
	"github.com/rmqrouter/rmqrouter/transport"
)

var (
	// ErrCapacityExhausted means the cap on connection actors is reached.
	ErrCapacityExhausted = errors.New("connection capacity exhausted")
	// ErrShuttingDown means the router is stopping and takes no new work.
	ErrShuttingDown = errors.New("router is shutting down")
	// ErrDeliveryTagNotFound means the tag was never issued to these
	// credentials, or was already settled.
	ErrDeliveryTagNotFound = errors.New("delivery tag not found")
	// ErrDeliveryTagStale means the tag belongs to a channel that has
	// closed since; the broker will redeliver the message.
	ErrDeliveryTagStale = errors.New("delivery tag is from a closed channel")
	// ErrConfirmTimeout means no confirm came from the broker within the
	// request's deadline; the outcome is unknown.
	ErrConfirmTimeout = errors.New("no confirm from the broker within the publish timeout")
	// ErrRequestTimeout means a fetch, ack or reject got no response within
	// its deadline.
	ErrRequestTimeout = errors.New("no response from the broker within the request deadline")
	// ErrTooManyInFlight means the connection's publishing channels are full.
	ErrTooManyInFlight = errors.New("too many requests in flight on this connection")
	// ErrActorGone means the request reached an actor that had stopped.
	ErrActorGone = errors.New("request reached a stopped actor")
)

// Config holds the settings of the actor tree. Durations are wall-clock
// times; zero values take the defaults of withDefaults.
type Config struct {
	Endpoints    []transport.Endpoint
	DefaultVhost string
	Heartbeat    time.Duration
	DialTimeout  time.Duration
	// ConnectionIdleTimeout stops a connection actor that had no request
	// and has no session for this long.
	ConnectionIdleTimeout time.Duration
	// SessionIdleTimeout stops an implicit consumer session (of /v1/fetch)
	// that had no request for this long; its unacked messages are requeued.
	SessionIdleTimeout time.Duration
	// Prefetch is the basic.qos prefetch count of implicit sessions.
	Prefetch int
	// MaxConnections caps the number of connection actors.
	MaxConnections int
	// PublishChannels is the size of each connection's confirm channel pool.
	PublishChannels int
	// ChannelQueueLength is how many publishings may wait on one channel.
	ChannelQueueLength int
	// TopologyTTL is how long an exchange seen to exist is trusted.
	TopologyTTL time.Duration
	// RetryBaseDelay and RetryMaxDelay bound the full-jitter backoff of
	// reconnects; RetryMaxAttempts is how many are tried before giving up.
	RetryBaseDelay   time.Duration
	RetryMaxDelay    time.Duration
	RetryMaxAttempts int
	// StaleTagRetention is how long a stale delivery tag, and the reason
	// an explicit session ended, are remembered.
	StaleTagRetention time.Duration
	// MaxSessions caps the explicit consumer sessions of the process, and
	// MaxSessionsPerUser those of one user name.
	MaxSessions        int
	MaxSessionsPerUser int
	// Breaker configures the circuit breaker of each route.
	Breaker BreakerConfig
	// BulkheadMaxConcurrent and BulkheadMaxWaiting bound the publish
	// requests of one connection in flight and waiting for a slot. A
	// negative BulkheadMaxWaiting allows no waiting.
	BulkheadMaxConcurrent int
	BulkheadMaxWaiting    int
}

func (c Config) withDefaults() Config {
	if len(c.Endpoints) == 0 {
		c.Endpoints = []transport.Endpoint{{Scheme: "amqp", Host: "127.0.0.1", Port: 5672}}
	}
	if c.DefaultVhost == "" {
		c.DefaultVhost = "/"
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.Heartbeat, 10*time.Second)
	def(&c.DialTimeout, 5*time.Second)
	def(&c.ConnectionIdleTimeout, 5*time.Minute)
	def(&c.SessionIdleTimeout, 5*time.Minute)
	def(&c.TopologyTTL, time.Minute)
	def(&c.RetryBaseDelay, time.Second)
	def(&c.RetryMaxDelay, 30*time.Second)
	def(&c.StaleTagRetention, 30*time.Minute)
	if c.Prefetch <= 0 {
		c.Prefetch = 10
	}
	if c.MaxConnections <= 0 {
		c.MaxConnections = 1000
	}
	if c.PublishChannels <= 0 {
		c.PublishChannels = 2
	}
	if c.ChannelQueueLength <= 0 {
		c.ChannelQueueLength = 4096
	}
	if c.RetryMaxAttempts <= 0 {
		c.RetryMaxAttempts = 10
	}
	if c.MaxSessions <= 0 {
		c.MaxSessions = 10000
	}
	if c.MaxSessionsPerUser <= 0 {
		c.MaxSessionsPerUser = 100
	}
	if c.Breaker.FailureThreshold <= 0 {
		c.Breaker.FailureThreshold = 5
	}
	def(&c.Breaker.Window, 10*time.Second)
	def(&c.Breaker.RecoveryTimeout, 30*time.Second)
	if c.Breaker.HalfOpenRequests <= 0 {
		c.Breaker.HalfOpenRequests = 1
	}
	if c.BulkheadMaxConcurrent <= 0 {
		c.BulkheadMaxConcurrent = 100
	}
	if c.BulkheadMaxWaiting < 0 {
		c.BulkheadMaxWaiting = 0
	} else if c.BulkheadMaxWaiting == 0 {
		c.BulkheadMaxWaiting = 50
	}
	return c
}

// System owns the protoactor ActorSystem, the supervisor and every goroutine
// the actors start. Its methods are safe for concurrent use; each blocks
// until its request is answered or ctx is done.
type System struct {
	cfg       Config
	log       *slog.Logger
	metrics   *metrics.Metrics
	publishes publishSeries

	actors     *actor.ActorSystem
	root       *actor.RootContext
	supervisor *actor.PID
	tags       *tagRegistry
	sessions   *sessionRegistry

	bulkheads  sync.Map // route key → *bulkhead
	channelIDs atomic.Uint64
	stopping   atomic.Bool
	inFlight   sync.WaitGroup
	tasks      sync.WaitGroup
	stopTicker chan struct{}
}

// NewSystem starts the actor system and the connection supervisor.
func NewSystem(cfg Config, log *slog.Logger, m *metrics.Metrics) *System {
	cfg = cfg.withDefaults()
	s := &System{
		cfg:        cfg,
		log:        log,
		metrics:    m,
		publishes:  newPublishSeries(m),
		tags:       newTagRegistry(),
		sessions:   newSessionRegistry(),
		stopTicker: make(chan struct{}),
	}
	s.actors = actor.NewActorSystem(
		actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
			return log.With("component", "protoactor")
		}),
		actor.WithDeadLetterRequestLogging(false),
	)
	s.root = s.actors.Root
	s.actors.EventStream.Subscribe(s.onDeadLetter)
	s.supervisor = s.root.Spawn(actor.PropsFromProducer(func() actor.Actor {
		return newSupervisorActor(s)
	}))

	s.goTask(s.sweepTags)
	return s
}

// goTask runs fn in a goroutine that Shutdown waits for.
func (s *System) goTask(fn func()) {
	s.tasks.Add(1)
	go func() {
		defer s.tasks.Done()
		fn()
	}()
}

func (s *System) sweepTags() {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			s.tags.sweep(s.cfg.StaleTagRetention)
			s.sessions.sweep(s.cfg.StaleTagRetention)
		case <-s.stopTicker:
			return
		}
	}
}

// onDeadLetter replies to a request that reached a stopped actor, so its
// caller does not wait for its deadline.
func (s *System) onDeadLetter(evt any) {
	dl, ok := evt.(*actor.DeadLetterEvent)
	if !ok {
		return
	}
	switch m := dl.Message.(type) {
	case failer:
		m.fail(ErrActorGone)
	case *dialResult:
		// The actor stopped while it dialled, so no actor owns this connection.
		if m.conn != nil {
			s.goTask(func() { m.conn.Close(time.Second) })
		}
	}
}

// Publish sends msg through the connection actor of (vhost, creds) and
// waits for the broker's confirm. It returns nil only after basic.ack. When
// ctx ends first it returns ErrConfirmTimeout: the message may still be
// stored. Before the request reaches a mailbox it takes a slot of the
// route's bulkhead, or fails at once with ErrTooManyInFlight.
func (s *System) Publish(ctx context.Context, creds *security.Credentials, vhost string, msg *transport.Message) error {
	if s.stopping.Load() {
		return ErrShuttingDown
	}
	s.inFlight.Add(1)
	defer s.inFlight.Done()

	r := s.route(creds, vhost)
	bh := s.bulkheadOf(r.key)
	if err := bh.circuitOpen(time.Now()); err != nil {
		return err
	}
	if err := bh.acquire(ctx); err != nil {
		s.metrics.BulkheadRejections.Inc()
		return err
	}
	defer bh.release()

	cmd := &publishCmd{
		route:  r,
		msg:    msg,
		start:  time.Now(),
		result: newReply[error](),
	}
	if dl, ok := ctx.Deadline(); ok {
		cmd.deadline = dl
	}
	s.root.Send(s.supervisor, cmd)
	err, answered := await(ctx, cmd.result)
	if !answered {
		err = ErrConfirmTimeout
	}
	s.report(r.key, err, cmd.isProbe())
	return err
}

// report feeds a request's outcome to the route's breaker: a confirm
// timeout is a failure, and the outcome of a half-open probe closes or
// reopens it. Other failures are reported by the actors where they happen,
// once per event rather than once per request.
func (s *System) report(key string, err error, probe bool) {
	switch {
	case errors.Is(err, ErrConfirmTimeout):
		s.root.Send(s.supervisor, &infraEvent{key: key, failed: true, cause: "confirm timeout"})
	case probe:
		s.root.Send(s.supervisor, &infraEvent{key: key, failed: isInfraFailure(err), cause: fmt.Sprint(err)})
	}
}

// isInfraFailure reports whether err is a broker or network failure, as
// opposed to a client error.
func isInfraFailure(err error) bool {
	return errors.Is(err, transport.ErrBrokerUnavailable) || errors.Is(err, transport.ErrOutcomeUnknown) ||
		errors.Is(err, transport.ErrNotSent) || errors.Is(err, ErrConfirmTimeout) || errors.Is(err, ErrActorGone)
}

func (s *System) bulkheadOf(key string) *bulkhead {
	if b, ok := s.bulkheads.Load(key); ok {
		return b.(*bulkhead)
	}
	b, _ := s.bulkheads.LoadOrStore(key, newBulkhead(s.cfg.BulkheadMaxConcurrent, s.cfg.BulkheadMaxWaiting))
	return b.(*bulkhead)
}

func (s *System) dropBulkhead(key string) { s.bulkheads.Delete(key) }

// Snapshot returns the state of the supervision tree: per route, whether
// its connection actor runs, its restarts, breaker and bulkhead.
func (s *System) Snapshot(ctx context.Context) (*Snapshot, error) {
	timeout := 5 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	res, err := s.root.RequestFuture(s.supervisor, &snapshotRequest{}, timeout).Result()
	if err != nil {
		return nil, fmt.Errorf("supervision snapshot: %w", err)
	}
	return res.(*Snapshot), nil
}

// FetchResult is the outcome of Fetch: a delivery with the router's tag, or
// no message when none arrived in time.
type FetchResult struct {
	Delivery *transport.Delivery
	Tag      uint64
}

// Fetch waits up to wait for one message from queue through the implicit
// consumer session of (creds, vhost, queue). With autoAck the message is
// acknowledged to the broker before it is returned and gets no tag.
func (s *System) Fetch(ctx context.Context, creds *security.Credentials, vhost, queue string, wait time.Duration, autoAck bool) (FetchResult, error) {
	if s.stopping.Load() {
		return FetchResult{}, ErrShuttingDown
	}
	s.inFlight.Add(1)
	defer s.inFlight.Done()

	out := s.fetchImplicit(ctx, s.route(creds, vhost), queue, wait, autoAck)
	if errors.Is(out.err, ErrActorGone) && ctx.Err() == nil {
		// The session was ending; its connection actor has forgotten it
		// by now and starts a new one.
		out = s.fetchImplicit(ctx, s.route(creds, vhost), queue, wait, autoAck)
	}
	if out.err != nil || len(out.results) == 0 {
		return FetchResult{}, out.err
	}
	return out.results[0], nil
}

// Settle acknowledges (ack) or rejects a delivery by the router's tag. An
// unknown tag, or one issued to other credentials, is ErrDeliveryTagNotFound
// and a stale one ErrDeliveryTagStale; neither reaches the broker.
func (s *System) Settle(ctx context.Context, creds *security.Credentials, tag uint64, ack, requeue bool) error {
	if s.stopping.Load() {
		return ErrShuttingDown
	}
	entry, ok := s.tags.lookup(tag)
	if !ok || entry.owner != creds.Key {
		return ErrDeliveryTagNotFound
	}
	if entry.stale {
		return ErrDeliveryTagStale
	}
	s.inFlight.Add(1)
	defer s.inFlight.Done()

	cmd := &settleCmd{tag: tag, ack: ack, requeue: requeue, result: newReply[error]()}
	s.root.Send(entry.session, cmd)
	err, answered := await(ctx, cmd.result)
	if !answered {
		return ErrRequestTimeout
	}
	return err
}

func (s *System) route(creds *security.Credentials, vhost string) route {
	if vhost == "" {
		vhost = s.cfg.DefaultVhost
	}
	return route{key: vhost + "\x00" + creds.Key, vhost: vhost, creds: creds}
}

// Shutdown stops taking requests, waits up to ctx for those in flight, then
// stops every actor (closing channels and connections) and the actor system.
func (s *System) Shutdown(ctx context.Context) {
	if !s.stopping.CompareAndSwap(false, true) {
		return
	}
	drained := make(chan struct{})
	go func() {
		s.inFlight.Wait()
		close(drained)
	}()
	select {
	case <-drained:
	case <-ctx.Done():
		s.log.Warn("shutdown timeout passed with requests in flight")
	}

	_ = s.root.StopFuture(s.supervisor).Wait()
	close(s.stopTicker)
	s.tasks.Wait()
	s.actors.Shutdown()
}

// DefaultVhost returns the vhost used when a request names none.
func (s *System) DefaultVhost() string { return s.cfg.DefaultVhost }
