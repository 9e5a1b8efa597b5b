package router

import (
	"bytes"
	"context"
	"encoding/json"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/rmqrouter/rmqrouter/security"
	"github.com/rmqrouter/rmqrouter/transport"
)

// defaultExchangeAlias names the default exchange in paths, where an empty
// segment is not possible.
const defaultExchangeAlias = "amq.default"

// publishBody is the JSON body of POST /v1/publish. Pointers tell a missing
// field from a zero value.
type publishBody struct {
	Exchange      *string            `json:"exchange"`
	RoutingKey    *string            `json:"routing_key"`
	Payload       json.RawMessage    `json:"payload"`
	Mandatory     *bool              `json:"mandatory"`
	Persistence   *int64             `json:"persistence"`
	CorrelationID *string            `json:"correlation_id"`
	MessageID     *string            `json:"message_id"`
	Headers       map[string]*string `json:"headers"` // a nil value is a JSON null, which is rejected
	Priority      *int64             `json:"priority"`
	Vhost         *string            `json:"vhost"`
}

type acceptedBody struct {
	Status        string `json:"status"`
	RequestID     string `json:"request_id"`
	Exchange      string `json:"exchange"`
	RoutingKey    string `json:"routing_key"`
	MessageID     string `json:"message_id"`
	CorrelationID string `json:"correlation_id"`
}

func (s *Server) handlePublish(req *request) {
	creds, ok := s.authenticate(req)
	if !ok {
		return
	}
	var body publishBody
	if e := decodeStrict(req.ctx.PostBody(), &body); e != nil {
		s.writeError(req, e)
		return
	}
	msg, vhost, e := s.messageFromJSON(req, &body)
	if e != nil {
		s.writeError(req, e)
		return
	}
	s.publish(req, creds, vhost, msg, *body.Exchange)
}

// messageFromJSON validates a publish body and builds the message.
func (s *Server) messageFromJSON(req *request, b *publishBody) (*transport.Message, string, *apiError) {
	if b.Exchange == nil {
		return nil, "", errValidation("exchange", "is required (use \"\" for the default exchange)", "обязательно (\"\" — обменник по умолчанию)")
	}
	if b.RoutingKey == nil {
		return nil, "", errValidation("routing_key", "is required", "обязательно")
	}
	exchange := *b.Exchange
	if exchange == defaultExchangeAlias {
		exchange = ""
	}
	if err := security.ValidateName("exchange", exchange, true); err != nil {
		return nil, "", nameError(err)
	}
	if err := security.ValidateRoutingKey(*b.RoutingKey); err != nil {
		return nil, "", nameError(err)
	}
	vhost, e := s.vhost(req, b.Vhost)
	if e != nil {
		return nil, "", e
	}

	msg := &transport.Message{
		Exchange:     exchange,
		RoutingKey:   *b.RoutingKey,
		Mandatory:    true,
		DeliveryMode: 2,
		Timestamp:    time.Now(),
	}
	if b.Mandatory != nil {
		msg.Mandatory = *b.Mandatory
	}
	if b.Persistence != nil {
		if *b.Persistence != 1 && *b.Persistence != 2 {
			return nil, "", errValidation("persistence", "must be 1 (transient) or 2 (persistent)", "должно быть 1 (временное) или 2 (постоянное)")
		}
		msg.DeliveryMode = uint8(*b.Persistence)
	}
	if b.Priority != nil {
		if *b.Priority < 0 || *b.Priority > 255 {
			return nil, "", errValidation("priority", "must be between 0 and 255", "должно быть от 0 до 255")
		}
		msg.Priority = uint8(*b.Priority)
	}
	if e := s.setIDs(msg, b.MessageID, b.CorrelationID, req.id, jsonIDFields); e != nil {
		return nil, "", e
	}
	if len(b.Headers) > 0 {
		msg.Headers = make(map[string]any, len(b.Headers))
		for k, v := range b.Headers {
			if err := security.ValidateHeaderName(k); err != nil {
				return nil, "", nameError(err)
			}
			if v == nil {
				return nil, "", errValidation("headers."+k, "must be a string, not null", "должно быть строкой, а не null")
			}
			if isReservedHeader(k) {
				continue
			}
			msg.Headers[k] = *v
		}
	}

	payload := bytes.TrimSpace(b.Payload)
	switch {
	case len(payload) == 0 || string(payload) == "null":
		return nil, "", errValidation("payload", "is required", "обязательно")
	case payload[0] == '{':
		msg.ContentType = "application/json"
		msg.Body = payload
	case payload[0] == '"':
		msg.ContentType = "text/plain"
		body, e := unquote(payload)
		if e != nil {
			return nil, "", e
		}
		msg.Body = body
	default:
		return nil, "", errValidation("payload", "must be a JSON object or a string", "должно быть объектом JSON или строкой")
	}
	return msg, vhost, nil
}

// idFields names the message id and correlation id where a request gives them,
// for error details: JSON fields or request headers.
type idFields struct{ messageID, correlationID string }

var (
	jsonIDFields   = idFields{messageID: "message_id", correlationID: "correlation_id"}
	headerIDFields = idFields{messageID: "X-Message-Id", correlationID: "X-Correlation-Id"}
)

// isReservedHeader reports whether name is the router's publish id header in
// any letter case. A client's value is dropped rather than rejected: a
// consumer that republishes a fetched message with all its headers may carry
// one, because the router adds it to some messages.
func isReservedHeader(name string) bool {
	return strings.EqualFold(name, transport.PublishIDHeader)
}

// setIDs sets the message id and the correlation id of msg from the client's
// values, or to a new message id and the request id.
func (s *Server) setIDs(msg *transport.Message, messageID, correlationID *string, requestID string, fields idFields) *apiError {
	if messageID != nil && *messageID != "" {
		if len(*messageID) > security.MaxNameBytes || !utf8.ValidString(*messageID) {
			return errValidation(fields.messageID, "must be valid UTF-8 of at most 255 bytes", "должно быть UTF-8 длиной не более 255 байт")
		}
		msg.MessageID = *messageID
	} else {
		msg.MessageID = s.ids.newMessageID()
	}
	if correlationID != nil && *correlationID != "" {
		if len(*correlationID) > security.MaxNameBytes || !utf8.ValidString(*correlationID) {
			return errValidation(fields.correlationID, "must be valid UTF-8 of at most 255 bytes", "должно быть UTF-8 длиной не более 255 байт")
		}
		msg.CorrelationID = *correlationID
	} else {
		msg.CorrelationID = requestID
	}
	return nil
}

// publish sends msg and writes the 202 or the error. exchange is the name
// as the client gave it, echoed in the response.
func (s *Server) publish(req *request, creds *security.Credentials, vhost string, msg *transport.Message, exchange string) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.PublishTimeout)
	defer cancel()
	if err := s.backend.Publish(ctx, creds, vhost, msg); err != nil {
		s.writeError(req, mapError(err, msg.Exchange))
		return
	}
	s.writeJSON(req, 202, acceptedBody{
		Status:        "accepted",
		RequestID:     req.id,
		Exchange:      exchange,
		RoutingKey:    msg.RoutingKey,
		MessageID:     msg.MessageID,
		CorrelationID: msg.CorrelationID,
	})
}

// vhost returns the request's vhost: the JSON field, else X-Vhost, else the
// default.
func (s *Server) vhost(req *request, field *string) (string, *apiError) {
	v := header(req.ctx, "X-Vhost")
	if field != nil {
		v = *field
	}
	if v == "" {
		return s.backend.DefaultVhost(), nil
	}
	if err := security.ValidateName("vhost", v, false); err != nil {
		return "", nameError(err)
	}
	return v, nil
}

func nameError(err error) *apiError {
	if ne, ok := err.(*security.NameError); ok {
		return errInvalidName(ne.Field, ne.Reason)
	}
	return errInvalidName("name", err.Error())
}

// handleRawPublish serves POST /v1/exchanges/{exchange}/publish: the body
// is the message and the properties come from headers.
func (s *Server) handleRawPublish(req *request) {
	creds, ok := s.authenticate(req)
	if !ok {
		return
	}
	path := string(req.ctx.URI().PathOriginal())
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	segment := strings.TrimSuffix(strings.TrimPrefix(path, "/v1/exchanges/"), "/publish")
	given, err := url.PathUnescape(segment)
	if err != nil || segment == "" || strings.Contains(segment, "/") {
		s.writeError(req, errInvalidName("exchange", "the path must be /v1/exchanges/{exchange}/publish with the name percent-encoded; use amq.default for the default exchange"))
		return
	}
	exchange := given
	if exchange == defaultExchangeAlias {
		exchange = ""
	}
	if err := security.ValidateName("exchange", exchange, true); err != nil {
		s.writeError(req, nameError(err))
		return
	}
	args := req.ctx.QueryArgs()
	routingKey := string(args.Peek("routing_key"))
	if err := security.ValidateRoutingKey(routingKey); err != nil {
		s.writeError(req, nameError(err))
		return
	}
	vhost, e := s.vhost(req, nil)
	if e != nil {
		s.writeError(req, e)
		return
	}

	msg, e := s.messageFromHeaders(req)
	if e != nil {
		s.writeError(req, e)
		return
	}
	msg.Exchange = exchange
	msg.RoutingKey = routingKey
	if v := args.Peek("mandatory"); v != nil {
		b, err := strconv.ParseBool(string(v))
		if err != nil {
			s.writeError(req, errValidation("mandatory", "must be true or false", "должно быть true или false"))
			return
		}
		msg.Mandatory = b
	}
	// The body belongs to fasthttp and is reused after the handler returns.
	msg.Body = append([]byte(nil), req.ctx.PostBody()...)
	s.publish(req, creds, vhost, msg, given)
}

// messageFromHeaders reads the AMQP properties of a raw publish from the
// request headers.
func (s *Server) messageFromHeaders(req *request) (*transport.Message, *apiError) {
	msg := &transport.Message{Mandatory: true, DeliveryMode: 2, Timestamp: time.Now()}
	var messageID, correlationID *string
	var e *apiError
	for k, v := range req.ctx.Request.Header.All() {
		name := string(k)
		value := string(v)
		switch {
		case strings.EqualFold(name, "Content-Type"):
			msg.ContentType = value
		case strings.EqualFold(name, "X-Message-Id"):
			messageID = &value
		case strings.EqualFold(name, "X-Correlation-Id"):
			correlationID = &value
		case strings.EqualFold(name, "X-Priority"):
			p, err := strconv.Atoi(value)
			if err != nil || p < 0 || p > 255 {
				e = errValidation("X-Priority", "must be an integer between 0 and 255", "должно быть целым числом от 0 до 255")
			}
			msg.Priority = uint8(p)
		case strings.EqualFold(name, "X-Expiration"):
			if n, err := strconv.ParseUint(value, 10, 32); err != nil || n > 1<<31 {
				e = errValidation("X-Expiration", "must be a number of milliseconds from 0 to 2147483648", "должно быть числом миллисекунд от 0 до 2147483648")
			}
			msg.Expiration = value
		case strings.EqualFold(name, "X-Persistent"):
			b, err := strconv.ParseBool(value)
			if err != nil {
				e = errValidation("X-Persistent", "must be true or false", "должно быть true или false")
			}
			msg.DeliveryMode = 1
			if b {
				msg.DeliveryMode = 2
			}
		case len(name) >= len("X-Header-") && strings.EqualFold(name[:len("X-Header-")], "X-Header-"):
			hname := name[len("X-Header-"):]
			if err := security.ValidateHeaderName(hname); err != nil {
				e = nameError(err)
			} else if !isReservedHeader(hname) {
				if msg.Headers == nil {
					msg.Headers = make(map[string]any)
				}
				msg.Headers[hname] = value
			}
		}
		if e != nil {
			return nil, e
		}
	}
	if msg.ContentType == "" {
		msg.ContentType = "application/octet-stream"
	}
	if e := s.setIDs(msg, messageID, correlationID, req.id, headerIDFields); e != nil {
		return nil, e
	}
	return msg, nil
}
