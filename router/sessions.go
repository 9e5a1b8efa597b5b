package router

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/rmqrouter/rmqrouter/actors"
	"github.com/rmqrouter/rmqrouter/security"
)

// SessionBackend is the part of the actor tree the explicit-session
// endpoints use; *actors.System implements it. When the Backend does not
// implement it, those endpoints respond 404 not_found.
type SessionBackend interface {
	OpenSession(ctx context.Context, creds *security.Credentials, vhost string, opts actors.SessionOptions) (actors.SessionInfo, error)
	SessionMessages(ctx context.Context, creds *security.Credentials, id string, max int, wait time.Duration) ([]actors.FetchResult, error)
	SettleSession(ctx context.Context, creds *security.Credentials, id string, tags []uint64, ack, requeue bool) ([]actors.TagResult, error)
	CloseSession(ctx context.Context, creds *security.Credentials, id string) error
}

// Limits of the session endpoints.
const (
	maxPrefetch           = 65535 // basic.qos prefetch-count is a 16-bit field
	maxSessionIdleSeconds = 86400
	maxMessagesPerRequest = 1000
	maxSessionWait        = 300 // seconds, the same as /v1/fetch
	// maxTagsPerRequest allows settling every message a session may hold
	// unacknowledged at the highest prefetch.
	maxTagsPerRequest = maxPrefetch
	// sessionOpenTimeout bounds POST /v1/sessions: a dial, channel.open,
	// queue.declare, basic.qos and basic.consume.
	sessionOpenTimeout = 30 * time.Second
)

type createSessionBody struct {
	Queue       *string  `json:"queue"`
	Prefetch    *int     `json:"prefetch"`
	IdleTimeout *float64 `json:"idle_timeout"`
	AutoAck     *bool    `json:"auto_ack"`
	Vhost       *string  `json:"vhost"`
}

// sessionBody is the 201 response of POST /v1/sessions; idle_timeout is in
// seconds.
type sessionBody struct {
	SessionID   string  `json:"session_id"`
	Queue       string  `json:"queue"`
	Prefetch    int     `json:"prefetch"`
	IdleTimeout float64 `json:"idle_timeout"`
	AutoAck     bool    `json:"auto_ack"`
	Vhost       string  `json:"vhost"`
}

type messagesBody struct {
	Messages []fetchedBody `json:"messages"`
}

type ackBody struct {
	DeliveryTags *[]uint64 `json:"delivery_tags"`
}

type nackBody struct {
	DeliveryTags *[]uint64 `json:"delivery_tags"`
	Requeue      *bool     `json:"requeue"`
}

// tagResultBody is the outcome of one tag of an ack or nack: status is
// "acknowledged", "rejected" or "failed", and a failed tag carries the
// error code and detail an error response would have.
type tagResultBody struct {
	DeliveryTag uint64 `json:"delivery_tag"`
	Status      string `json:"status"`
	Error       string `json:"error,omitempty"`
	Detail      string `json:"detail,omitempty"`
}

type settleResultsBody struct {
	Results []tagResultBody `json:"results"`
}

// dispatchSession routes /v1/sessions/{id} and its sub-resources and
// returns the route label.
func (s *Server) dispatchSession(req *request, method, path string) string {
	id, action, _ := strings.Cut(strings.TrimPrefix(path, "/v1/sessions/"), "/")
	switch action {
	case "":
		return s.only(req, method, "DELETE", "/v1/sessions/{id}", func(r *request) { s.handleCloseSession(r, id) })
	case "messages":
		// HEAD would hand out messages whose body the client never receives.
		return s.only(req, method, "GET", "/v1/sessions/{id}/messages", func(r *request) { s.handleSessionMessages(r, id) })
	case "ack":
		return s.only(req, method, "POST", "/v1/sessions/{id}/ack", func(r *request) { s.handleSessionSettle(r, id, true) })
	case "nack":
		return s.only(req, method, "POST", "/v1/sessions/{id}/nack", func(r *request) { s.handleSessionSettle(r, id, false) })
	}
	s.writeError(req, errNotFound)
	return "other"
}

// sessionBackend returns the session API of the backend, or writes 404.
func (s *Server) sessionBackend(req *request) (SessionBackend, bool) {
	b, ok := s.backend.(SessionBackend)
	if !ok {
		s.writeError(req, errNotFound)
	}
	return b, ok
}

// sessionCaller returns the session API and the request's credentials, or
// writes the error response: 404 without a session API, 401 without valid
// credentials.
func (s *Server) sessionCaller(req *request) (SessionBackend, *security.Credentials, bool) {
	backend, ok := s.sessionBackend(req)
	if !ok {
		return nil, nil, false
	}
	creds, ok := s.authenticate(req)
	return backend, creds, ok
}

// validSessionID reports whether id has the form the router issues: 32
// lowercase hex digits. Anything else cannot name a session.
func validSessionID(id string) bool {
	if len(id) != 32 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// handleCreateSession serves POST /v1/sessions.
func (s *Server) handleCreateSession(req *request) {
	backend, creds, ok := s.sessionCaller(req)
	if !ok {
		return
	}
	var body createSessionBody
	if e := decodeStrict(req.ctx.PostBody(), &body); e != nil {
		s.writeError(req, e)
		return
	}
	opts, e := sessionOptions(&body)
	if e != nil {
		s.writeError(req, e)
		return
	}
	vhost, e := s.vhost(req, body.Vhost)
	if e != nil {
		s.writeError(req, e)
		return
	}

	ctx, cancel := context.WithTimeout(context.Background(), sessionOpenTimeout)
	defer cancel()
	info, err := backend.OpenSession(ctx, creds, vhost, opts)
	if err != nil {
		s.writeError(req, mapError(err, opts.Queue))
		return
	}
	req.ctx.Response.Header.Set("Location", "/v1/sessions/"+info.ID)
	s.writeJSON(req, 201, sessionBody{
		SessionID:   info.ID,
		Queue:       info.Queue,
		Prefetch:    info.Prefetch,
		IdleTimeout: info.IdleTimeout.Seconds(),
		AutoAck:     info.AutoAck,
		Vhost:       info.Vhost,
	})
}

// sessionOptions validates the body of POST /v1/sessions. Absent prefetch
// and idle_timeout stay zero, so the actors apply the configured defaults.
func sessionOptions(body *createSessionBody) (actors.SessionOptions, *apiError) {
	var opts actors.SessionOptions
	if body.Queue == nil {
		return opts, errValidation("queue", "is required", "обязательно")
	}
	if err := security.ValidateName("queue", *body.Queue, false); err != nil {
		return opts, nameError(err)
	}
	opts.Queue = *body.Queue
	if body.Prefetch != nil {
		if *body.Prefetch < 1 || *body.Prefetch > maxPrefetch {
			return opts, errValidation("prefetch", fmt.Sprintf("must be between 1 and %d", maxPrefetch),
				fmt.Sprintf("должно быть от 1 до %d", maxPrefetch))
		}
		opts.Prefetch = *body.Prefetch
	}
	if body.IdleTimeout != nil {
		v := *body.IdleTimeout
		if math.IsNaN(v) || v < 1 || v > maxSessionIdleSeconds {
			return opts, errValidation("idle_timeout", fmt.Sprintf("must be between 1 and %d seconds", maxSessionIdleSeconds),
				fmt.Sprintf("должно быть от 1 до %d секунд", maxSessionIdleSeconds))
		}
		opts.IdleTimeout = time.Duration(v * float64(time.Second))
	}
	opts.AutoAck = body.AutoAck != nil && *body.AutoAck
	return opts, nil
}

// handleSessionMessages serves GET /v1/sessions/{id}/messages?max=N&wait=S.
func (s *Server) handleSessionMessages(req *request, id string) {
	backend, creds, ok := s.sessionCaller(req)
	if !ok {
		return
	}
	args := req.ctx.QueryArgs()
	max := 1
	if raw := args.Peek("max"); raw != nil {
		n, err := strconv.Atoi(string(raw))
		if err != nil || n < 1 || n > maxMessagesPerRequest {
			s.writeError(req, errValidation("max", fmt.Sprintf("must be an integer between 1 and %d", maxMessagesPerRequest),
				fmt.Sprintf("должно быть целым числом от 1 до %d", maxMessagesPerRequest)))
			return
		}
		max = n
	}
	wait := 0.0
	if raw := args.Peek("wait"); raw != nil {
		f, err := strconv.ParseFloat(string(raw), 64)
		if err != nil || math.IsNaN(f) || f < 0 || f > maxSessionWait {
			s.writeError(req, errValidation("wait", fmt.Sprintf("must be a number of seconds between 0 and %d", maxSessionWait),
				fmt.Sprintf("должно быть числом секунд от 0 до %d", maxSessionWait)))
			return
		}
		wait = f
	}
	if !validSessionID(id) {
		s.writeError(req, mapError(actors.ErrSessionNotFound, ""))
		return
	}

	waitFor := time.Duration(wait * float64(time.Second))
	// The session replies when waitFor passes, so the context only guards
	// against a session that cannot reply.
	ctx, cancel := context.WithTimeout(context.Background(), waitFor+15*time.Second)
	defer cancel()
	results, err := backend.SessionMessages(ctx, creds, id, max, waitFor)
	if err != nil {
		s.writeError(req, mapError(err, ""))
		return
	}
	out := messagesBody{Messages: make([]fetchedBody, 0, len(results))}
	for _, r := range results {
		out.Messages = append(out.Messages, fetchedFrom(r))
	}
	req.ctx.Response.Header.Set("Cache-Control", "no-store")
	s.writeJSON(req, 200, out)
}

// handleSessionSettle serves POST /v1/sessions/{id}/ack and /nack. Every
// tag settled: 200 with one result per tag. No tag settled and all for the
// same reason: that error response (such as 410 delivery_tag_stale).
// Otherwise: 207 with one result per tag.
func (s *Server) handleSessionSettle(req *request, id string, ack bool) {
	backend, creds, ok := s.sessionCaller(req)
	if !ok {
		return
	}
	tags, requeue, e := settleRequest(req.ctx.PostBody(), ack)
	if e != nil {
		s.writeError(req, e)
		return
	}
	if !validSessionID(id) {
		s.writeError(req, mapError(actors.ErrSessionNotFound, ""))
		return
	}

	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	results, err := backend.SettleSession(ctx, creds, id, tags, ack, requeue)
	if err != nil {
		s.writeError(req, mapError(err, ""))
		return
	}

	status := "acknowledged"
	if !ack {
		status = "rejected"
	}
	out := settleResultsBody{Results: make([]tagResultBody, len(results))}
	settled := 0
	var firstErr *apiError
	sameError := true
	for i, r := range results {
		out.Results[i] = tagResultBody{DeliveryTag: r.Tag, Status: status}
		if r.Err == nil {
			settled++
			continue
		}
		e := mapError(r.Err, "")
		out.Results[i].Status = "failed"
		out.Results[i].Error = e.code
		out.Results[i].Detail = e.detail(req.prefersRussian())
		if firstErr == nil {
			firstErr = e
		} else if firstErr.code != e.code {
			sameError = false
		}
	}
	switch {
	case settled == len(results):
		s.writeJSON(req, 200, out)
	case settled == 0 && sameError:
		s.writeError(req, firstErr)
	default:
		s.writeJSON(req, 207, out)
	}
}

// settleRequest validates the body of an ack (ack) or nack. requeue
// defaults to true, as in AMQP's basic.nack, so a nack loses no message
// unless the client asks for it.
func settleRequest(raw []byte, ack bool) (tags []uint64, requeue bool, e *apiError) {
	var list *[]uint64
	requeue = true
	if ack {
		var body ackBody
		if e := decodeStrict(raw, &body); e != nil {
			return nil, false, e
		}
		list = body.DeliveryTags
	} else {
		var body nackBody
		if e := decodeStrict(raw, &body); e != nil {
			return nil, false, e
		}
		list = body.DeliveryTags
		if body.Requeue != nil {
			requeue = *body.Requeue
		}
	}
	if list == nil || len(*list) == 0 {
		return nil, false, errValidation("delivery_tags", "must be a non-empty array of delivery tags",
			"должно быть непустым массивом delivery tag")
	}
	if len(*list) > maxTagsPerRequest {
		return nil, false, errValidation("delivery_tags", fmt.Sprintf("must contain at most %d tags", maxTagsPerRequest),
			fmt.Sprintf("должно содержать не больше %d тегов", maxTagsPerRequest))
	}
	seen := make(map[uint64]struct{}, len(*list))
	for _, tag := range *list {
		if tag == 0 {
			return nil, false, errValidation("delivery_tags", "must contain positive integers",
				"должно содержать положительные целые числа")
		}
		if _, dup := seen[tag]; dup {
			return nil, false, errValidation("delivery_tags", fmt.Sprintf("lists tag %d twice", tag),
				fmt.Sprintf("содержит тег %d дважды", tag))
		}
		seen[tag] = struct{}{}
	}
	return *list, requeue, nil
}

// handleCloseSession serves DELETE /v1/sessions/{id}.
func (s *Server) handleCloseSession(req *request, id string) {
	backend, creds, ok := s.sessionCaller(req)
	if !ok {
		return
	}
	if !validSessionID(id) {
		s.writeError(req, mapError(actors.ErrSessionNotFound, ""))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	if err := backend.CloseSession(ctx, creds, id); err != nil {
		s.writeError(req, mapError(err, ""))
		return
	}
	req.ctx.SetStatusCode(204)
}
