package actors

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/rmqrouter/rmqrouter/security"
	"github.com/rmqrouter/rmqrouter/transport"
)

var (
	// ErrSessionNotFound means no open session has this id and belongs to
	// the credentials of the request. A session of other credentials is
	// reported the same way, so an id reveals nothing to its non-owners.
	ErrSessionNotFound = errors.New("session not found")
	// ErrSessionLimit means the router holds --max-sessions sessions.
	ErrSessionLimit = errors.New("session capacity exhausted")
	// ErrUserSessionLimit means the user holds --max-sessions-per-user
	// sessions.
	ErrUserSessionLimit = errors.New("too many sessions for this user")
)

// SessionEndReason is the cause an explicit session ended with.
type SessionEndReason string

// Reasons a session ends. The router reports them in the detail of a 404
// session_not_found to the owner of the session.
const (
	EndClosed        SessionEndReason = "closed"           // DELETE by the client
	EndExpired       SessionEndReason = "expired"          // no request for its idle timeout
	EndQueueDeleted  SessionEndReason = "queue_deleted"    // the broker cancelled the consumer
	EndAccessRefused SessionEndReason = "access_refused"   // the broker denied basic.consume
	EndConsumeFailed SessionEndReason = "consumer_failed"  // the consumer could not be reopened
	EndConnection    SessionEndReason = "connection_ended" // its connection actor stopped
	EndShutdown      SessionEndReason = "shutdown"         // the router is stopping
)

// SessionEndedError is ErrSessionNotFound for a session that existed and
// has ended; only the credentials that created the session receive it.
type SessionEndedError struct {
	Reason SessionEndReason
}

func (e *SessionEndedError) Error() string {
	return "session ended: " + string(e.Reason)
}

func (e *SessionEndedError) Unwrap() error { return ErrSessionNotFound }

// SessionOptions are the settings of an explicit session. Zero Prefetch
// and IdleTimeout take Config.Prefetch and Config.SessionIdleTimeout.
type SessionOptions struct {
	Queue       string
	Prefetch    int
	IdleTimeout time.Duration
	// AutoAck acknowledges each message to the broker when it is handed to
	// the client (at most once delivery); its tag cannot be settled.
	AutoAck bool
}

// SessionInfo describes an open session with its effective settings.
type SessionInfo struct {
	ID          string
	Vhost       string
	Queue       string
	Prefetch    int
	IdleTimeout time.Duration
	AutoAck     bool
}

// TagResult is the outcome of one delivery tag of SettleSession: Err is nil
// when basic.ack or basic.nack was written, else ErrDeliveryTagNotFound,
// ErrDeliveryTagStale or a broker error.
type TagResult struct {
	Tag uint64
	Err error
}

// OpenSession opens an explicit consumer session on opts.Queue for creds:
// a child of the connection actor of (vhost, creds) with its own channel,
// basic.qos and basic.consume. It returns once the consumer is running, so
// a missing queue or a denied permission is reported here.
func (s *System) OpenSession(ctx context.Context, creds *security.Credentials, vhost string, opts SessionOptions) (SessionInfo, error) {
	if s.stopping.Load() {
		return SessionInfo{}, ErrShuttingDown
	}
	s.inFlight.Add(1)
	defer s.inFlight.Done()

	if opts.Prefetch <= 0 {
		opts.Prefetch = s.cfg.Prefetch
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = s.cfg.SessionIdleTimeout
	}
	r := s.route(creds, vhost)
	id, err := s.sessions.reserve(creds.Key, creds.User, s.cfg.MaxSessions, s.cfg.MaxSessionsPerUser)
	if err != nil {
		return SessionInfo{}, err
	}
	info := SessionInfo{
		ID:          id,
		Vhost:       r.vhost,
		Queue:       opts.Queue,
		Prefetch:    opts.Prefetch,
		IdleTimeout: opts.IdleTimeout,
		AutoAck:     opts.AutoAck,
	}
	cmd := &openSessionCmd{
		route: r,
		cfg: sessionConfig{
			id:          id,
			key:         explicitSessionKey(id),
			queue:       opts.Queue,
			prefetch:    opts.Prefetch,
			idleTimeout: opts.IdleTimeout,
			autoAck:     opts.AutoAck,
		},
		result: newReply[error](),
	}
	cmd.cfg.created = cmd.result
	s.root.Send(s.supervisor, cmd)

	var answered bool
	if err, answered = await(ctx, cmd.result); !answered {
		// The session notices the abandoned reply and stops itself.
		err = errNoAnswer("basic.consume")
	}
	if err != nil {
		s.sessions.release(id)
		return SessionInfo{}, err
	}
	return info, nil
}

// SessionMessages returns up to max messages of session id. When none is
// buffered it waits up to wait for the first, then returns it with every
// message that arrived together with it.
func (s *System) SessionMessages(ctx context.Context, creds *security.Credentials, id string, max int, wait time.Duration) ([]FetchResult, error) {
	cmd := &fetchCmd{max: max, wait: wait, result: newReply[fetchOutcome]()}
	out, answered, err := askSession(ctx, s, creds, id, cmd, cmd.result)
	if err != nil {
		return nil, err
	}
	if !answered {
		return nil, errNoAnswer("session")
	}
	return out.results, s.sessionError(out.err, id, creds.Key)
}

// SettleSession acknowledges (ack) or rejects (nack, with or without
// requeue) deliveries of session id by the router's tags, and returns one
// result per tag in order. Tags the session does not hold get
// ErrDeliveryTagNotFound, tags of a closed channel ErrDeliveryTagStale;
// neither reaches the broker.
func (s *System) SettleSession(ctx context.Context, creds *security.Credentials, id string, tags []uint64, ack, requeue bool) ([]TagResult, error) {
	cmd := &settleBatchCmd{tags: tags, ack: ack, requeue: requeue, result: newReply[settleBatchOutcome]()}
	out, answered, err := askSession(ctx, s, creds, id, cmd, cmd.result)
	if err != nil {
		return nil, err
	}
	if !answered {
		return nil, errNoAnswer("basic.ack")
	}
	return out.results, s.sessionError(out.err, id, creds.Key)
}

// CloseSession closes session id: it cancels the consumer and closes the
// channel, so the broker requeues every message not yet acknowledged. It
// returns after the broker confirmed the channel close, or after
// sessionCloseWait when the broker is slow.
func (s *System) CloseSession(ctx context.Context, creds *security.Credentials, id string) error {
	cmd := &closeSessionCmd{result: newReply[error]()}
	closeErr, answered, err := askSession(ctx, s, creds, id, cmd, cmd.result)
	if err != nil {
		return err
	}
	if !answered {
		return errNoAnswer("channel.close")
	}
	return s.sessionError(closeErr, id, creds.Key)
}

// askSession sends cmd to session id of creds and waits for result, the
// reply of cmd. It returns an error when the router is stopping or the
// session is not found, and answered false when ctx ended first.
func askSession[T any](ctx context.Context, s *System, creds *security.Credentials, id string, cmd any, result *reply[T]) (v T, answered bool, err error) {
	if s.stopping.Load() {
		return v, false, ErrShuttingDown
	}
	pid, err := s.sessions.lookup(id, creds.Key)
	if err != nil {
		return v, false, err
	}
	s.inFlight.Add(1)
	defer s.inFlight.Done()

	s.root.Send(pid, cmd)
	v, answered = await(ctx, result)
	return v, answered, nil
}

// sessionError turns ErrActorGone, which a request gets when the session
// stopped after the lookup, into the session's end reason.
func (s *System) sessionError(err error, id, owner string) error {
	if !errors.Is(err, ErrActorGone) {
		return err
	}
	if _, lookupErr := s.sessions.lookup(id, owner); lookupErr != nil {
		return lookupErr
	}
	return ErrSessionNotFound
}

// errNoAnswer is the error of a request whose actor sent no reply before
// the request's deadline.
func errNoAnswer(op string) error {
	return &transport.Error{Op: op, Kind: transport.ErrBrokerUnavailable, Reason: "no reply within the request's deadline", Retryable: true}
}

// explicitSessionKey is the key of an explicit session among the sessions
// of a connection actor. Implicit sessions use their queue name, which
// cannot contain a NUL (security.ValidateName rejects control characters),
// so the two never collide.
func explicitSessionKey(id string) string { return "\x00" + id }

type openSessionCmd struct {
	route  route
	cfg    sessionConfig
	result *reply[error]
}

func (c *openSessionCmd) fail(err error)           { c.result.send(err) }
func (c *openSessionCmd) routeOf() route           { return c.route }
func (c *openSessionCmd) IgnoreDeadLetterLogging() {}

type settleBatchOutcome struct {
	results []TagResult
	err     error
}

type settleBatchCmd struct {
	tags    []uint64
	ack     bool
	requeue bool
	result  *reply[settleBatchOutcome]
}

func (c *settleBatchCmd) fail(err error)           { c.result.send(settleBatchOutcome{err: err}) }
func (c *settleBatchCmd) IgnoreDeadLetterLogging() {}

type closeSessionCmd struct {
	result *reply[error]
}

func (c *closeSessionCmd) fail(err error)           { c.result.send(err) }
func (c *closeSessionCmd) IgnoreDeadLetterLogging() {}

// connectionWanted is sent by a session that received a request without a
// usable connection. A connected actor replies with connectionReady.
type connectionWanted struct {
	internal
	session *actor.PID
}

// openSession spawns the explicit session of cmd. The session replies to
// cmd once its first consumer is open or has failed.
func (a *connectionActor) openSession(ctx actor.Context, cmd *openSessionCmd) {
	conn, cfg := a.conn, cmd.cfg
	pid := ctx.Spawn(actor.PropsFromProducer(func() actor.Actor {
		return newSessionActor(a.sys, a.route, cfg, conn)
	}))
	a.sessions[cfg.key] = pid
	a.queues[pid.Id] = cfg.key
	a.sys.metrics.SessionsOpen.Inc()
}

// maxEndedSessions bounds the remembered end reasons; past it an ended
// session is reported as unknown.
const maxEndedSessions = 100000

// sessionRegistry maps explicit session ids to their actors and owners,
// counts sessions for the limits, and remembers for a while why a session
// ended.
type sessionRegistry struct {
	mu      sync.Mutex
	live    map[string]*sessionEntry
	perUser map[string]int
	ended   map[string]endedSession
}

type sessionEntry struct {
	pid   *actor.PID // nil until the first consumer is open
	owner string     // credentials key
	user  string
}

type endedSession struct {
	owner  string
	reason SessionEndReason
	at     time.Time
}

func newSessionRegistry() *sessionRegistry {
	return &sessionRegistry{
		live:    make(map[string]*sessionEntry),
		perUser: make(map[string]int),
		ended:   make(map[string]endedSession),
	}
}

// newSessionID returns 128 random bits in hex.
func newSessionID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// reserve counts a new session of user against the limits and returns its
// id. The session cannot be looked up until activate.
func (r *sessionRegistry) reserve(owner, user string, maxTotal, maxPerUser int) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.live) >= maxTotal {
		return "", ErrSessionLimit
	}
	if r.perUser[user] >= maxPerUser {
		return "", ErrUserSessionLimit
	}
	id := newSessionID()
	r.live[id] = &sessionEntry{owner: owner, user: user}
	r.perUser[user]++
	return id, nil
}

// activate makes a reserved session reachable. It returns false when the
// reservation was released meanwhile.
func (r *sessionRegistry) activate(id string, pid *actor.PID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.live[id]
	if !ok {
		return false
	}
	e.pid = pid
	return true
}

// release drops a session that never opened.
func (r *sessionRegistry) release(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.drop(id)
}

// end removes a live session and records its end reason. Only the first
// call for an id counts.
func (r *sessionRegistry) end(id string, reason SessionEndReason) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.drop(id)
	if e == nil || e.pid == nil || len(r.ended) >= maxEndedSessions {
		return
	}
	r.ended[id] = endedSession{owner: e.owner, reason: reason, at: time.Now()}
}

func (r *sessionRegistry) drop(id string) *sessionEntry {
	e, ok := r.live[id]
	if !ok {
		return nil
	}
	delete(r.live, id)
	if r.perUser[e.user]--; r.perUser[e.user] <= 0 {
		delete(r.perUser, e.user)
	}
	return e
}

// lookup returns the actor of session id when owner owns it. Otherwise it
// returns ErrSessionNotFound, or a SessionEndedError for the owner of a
// session that ended recently.
func (r *sessionRegistry) lookup(id, owner string) (*actor.PID, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.live[id]; ok && e.pid != nil && e.owner == owner {
		return e.pid, nil
	}
	if e, ok := r.ended[id]; ok && e.owner == owner {
		return nil, &SessionEndedError{Reason: e.reason}
	}
	return nil, ErrSessionNotFound
}

// count returns the number of sessions, reserved ones included.
func (r *sessionRegistry) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.live)
}

// sweep removes end reasons older than retention.
func (r *sessionRegistry) sweep(retention time.Duration) {
	cutoff := time.Now().Add(-retention)
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, e := range r.ended {
		if e.at.Before(cutoff) {
			delete(r.ended, id)
		}
	}
}

// onConnectionWanted gives a session that has no usable connection the
// current one. While disconnected the actor is already reconnecting with
// backoff (or retires after RetryMaxAttempts, ending its sessions), so the
// request does not dial by itself.
func (a *connectionActor) onConnectionWanted(ctx actor.Context, msg *connectionWanted) {
	if a.state == connected && a.conn != nil {
		ctx.Send(msg.session, &connectionReady{conn: a.conn, generation: a.generation})
	}
}

// fetchImplicit requests one message from the implicit session of
// (r, queue).
func (s *System) fetchImplicit(ctx context.Context, r route, queue string, wait time.Duration, autoAck bool) fetchOutcome {
	cmd := &fetchCmd{
		route:   r,
		queue:   queue,
		max:     1,
		wait:    wait,
		autoAck: autoAck,
		result:  newReply[fetchOutcome](),
	}
	s.root.Send(s.supervisor, cmd)
	out, answered := await(ctx, cmd.result)
	if !answered {
		return fetchOutcome{err: ErrRequestTimeout}
	}
	return out
}
