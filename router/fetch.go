package router

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/rmqrouter/rmqrouter/actors"
	"github.com/rmqrouter/rmqrouter/security"
	"github.com/rmqrouter/rmqrouter/transport"
)

// maxFetchTimeout is the longest long-poll of /v1/fetch, in seconds.
const maxFetchTimeout = 300

// settleTimeout bounds an ack or reject; it is a single frame write.
const settleTimeout = 10 * time.Second

type fetchBody struct {
	Queue   *string  `json:"queue"`
	Timeout *float64 `json:"timeout"`
	AutoAck *bool    `json:"auto_ack"`
	Vhost   *string  `json:"vhost"`
}

// fetchedBody is the 200 answer of /v1/fetch.
type fetchedBody struct {
	DeliveryTag   uint64          `json:"delivery_tag"`
	Body          json.RawMessage `json:"body"`
	BodyEncoding  string          `json:"body_encoding,omitempty"`
	RoutingKey    string          `json:"routing_key"`
	Exchange      string          `json:"exchange"`
	CorrelationID string          `json:"correlation_id"`
	MessageID     string          `json:"message_id"`
	ContentType   string          `json:"content_type"`
	Headers       map[string]any  `json:"headers"`
	Redelivered   bool            `json:"redelivered"`
}

func (s *Server) handleFetch(req *request) {
	creds, ok := s.authenticate(req)
	if !ok {
		return
	}
	var body fetchBody
	if e := decodeStrict(req.ctx.PostBody(), &body); e != nil {
		s.writeError(req, e)
		return
	}
	if body.Queue == nil {
		s.writeError(req, errValidation("queue", "is required", "обязательно"))
		return
	}
	if err := security.ValidateName("queue", *body.Queue, false); err != nil {
		s.writeError(req, nameError(err))
		return
	}
	timeout := 30.0
	if body.Timeout != nil {
		timeout = *body.Timeout
	}
	if math.IsNaN(timeout) || timeout < 0 || timeout > maxFetchTimeout {
		s.writeError(req, errValidation("timeout", fmt.Sprintf("must be between 0 and %d seconds", maxFetchTimeout),
			fmt.Sprintf("должно быть от 0 до %d секунд", maxFetchTimeout)))
		return
	}
	autoAck := body.AutoAck != nil && *body.AutoAck
	vhost, e := s.vhost(req, body.Vhost)
	if e != nil {
		s.writeError(req, e)
		return
	}

	wait := time.Duration(timeout * float64(time.Second))
	// The session answers when wait passes; the context only guards
	// against a session that cannot answer.
	ctx, cancel := context.WithTimeout(context.Background(), wait+15*time.Second)
	defer cancel()
	res, err := s.backend.Fetch(ctx, creds, vhost, *body.Queue, wait, autoAck)
	if err != nil {
		s.writeError(req, mapError(err, *body.Queue))
		return
	}
	if res.Delivery == nil {
		req.ctx.SetStatusCode(204)
		return
	}
	s.writeJSON(req, 200, fetchedFrom(res))
}

func fetchedFrom(res actors.FetchResult) fetchedBody {
	d := res.Delivery
	out := fetchedBody{
		DeliveryTag:   res.Tag,
		RoutingKey:    d.RoutingKey,
		Exchange:      d.Exchange,
		CorrelationID: d.CorrelationID,
		MessageID:     d.MessageID,
		ContentType:   d.ContentType,
		Headers:       jsonHeaders(d.Headers),
		Redelivered:   d.Redelivered,
	}
	out.Body, out.BodyEncoding = encodeBody(d)
	return out
}

// encodeBody returns a body as JSON when it parses as JSON, else as a JSON
// string when it is UTF-8, else as base64.
func encodeBody(d *transport.Delivery) (json.RawMessage, string) {
	if len(d.Body) > 0 && json.Valid(d.Body) {
		return json.RawMessage(d.Body), ""
	}
	if utf8.Valid(d.Body) {
		s, _ := json.Marshal(string(d.Body))
		return s, ""
	}
	s, _ := json.Marshal(base64.StdEncoding.EncodeToString(d.Body))
	return s, "base64"
}

// jsonHeaders converts AMQP table values to values encoding/json writes
// faithfully: byte arrays become base64 strings, timestamps RFC 3339, and
// decimals numbers.
func jsonHeaders(h map[string]any) map[string]any {
	out := make(map[string]any, len(h))
	for k, v := range h {
		out[k] = jsonValue(v)
	}
	return out
}

func jsonValue(v any) any {
	switch x := v.(type) {
	case map[string]any:
		return jsonHeaders(x)
	case []any:
		list := make([]any, len(x))
		for i, e := range x {
			list[i] = jsonValue(e)
		}
		return list
	case []byte:
		return base64.StdEncoding.EncodeToString(x)
	case time.Time:
		return x.UTC().Format(time.RFC3339)
	case float32:
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return nil
		}
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil
		}
	}
	return v
}

type settledBody struct {
	Status      string `json:"status"`
	DeliveryTag uint64 `json:"delivery_tag"`
}

type rejectBody struct {
	Requeue *bool `json:"requeue"`
}

func (s *Server) handleAck(req *request) {
	s.settle(req, "/v1/ack/", true)
}

func (s *Server) handleReject(req *request) {
	s.settle(req, "/v1/reject/", false)
}

func (s *Server) settle(req *request, prefix string, ack bool) {
	creds, ok := s.authenticate(req)
	if !ok {
		return
	}
	path := string(req.ctx.URI().PathOriginal())
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	tag, err := strconv.ParseUint(strings.TrimPrefix(path, prefix), 10, 64)
	if err != nil || tag == 0 {
		s.writeError(req, errValidation("delivery_tag", "must be a positive integer", "должно быть положительным целым числом"))
		return
	}
	requeue := false
	if !ack && len(strings.TrimSpace(string(req.ctx.PostBody()))) > 0 {
		var body rejectBody
		if e := decodeStrict(req.ctx.PostBody(), &body); e != nil {
			s.writeError(req, e)
			return
		}
		requeue = body.Requeue != nil && *body.Requeue
	}

	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	if err := s.backend.Settle(ctx, creds, tag, ack, requeue); err != nil {
		s.writeError(req, mapError(err, ""))
		return
	}
	status := "acknowledged"
	if !ack {
		status = "rejected"
	}
	s.writeJSON(req, 200, settledBody{Status: status, DeliveryTag: tag})
}
