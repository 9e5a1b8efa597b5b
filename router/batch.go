package router

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/rmqrouter/rmqrouter/actors"
	"github.com/rmqrouter/rmqrouter/transport"
)

// batchBody is the JSON body of POST /v1/publish/batch.
type batchBody struct {
	Messages []json.RawMessage `json:"messages"`
	Vhost    *string           `json:"vhost"`
}

// batchResult is the outcome of one message of a batch: status 202 with its
// ids, or the status and error body it would have had on its own.
type batchResult struct {
	Index         int    `json:"index"`
	Status        int    `json:"status"`
	MessageID     string `json:"message_id,omitempty"`
	CorrelationID string `json:"correlation_id,omitempty"`
	Error         string `json:"error,omitempty"`
	Detail        string `json:"detail,omitempty"`
}

type batchAnswer struct {
	RequestID string        `json:"request_id"`
	Accepted  int           `json:"accepted"`
	Failed    int           `json:"failed"`
	Results   []batchResult `json:"results"`
}

// sameConnectionError returns the error of the whole batch when every
// message failed with 401 or with the same 403: the broker refused the
// credentials or the vhost, so no message could have been published.
func sameConnectionError(results []batchResult) *apiError {
	first := results[0]
	if first.Status != 401 && first.Status != 403 {
		return nil
	}
	for _, r := range results[1:] {
		if r.Status != first.Status || r.Error != first.Error {
			return nil
		}
	}
	if first.Status == 401 {
		return errAuthFailed
	}
	return newAPIError(403, first.Error, first.Detail, first.Detail)
}

// handleBatch serves POST /v1/publish/batch: up to 1000 publish bodies,
// validated one by one, the valid ones published together on one channel.
// The answer is 207 with one result per message, in order, unless the body
// as a whole is invalid.
func (s *Server) handleBatch(req *request) {
	creds, ok := s.authenticate(req)
	if !ok {
		return
	}
	var body batchBody
	if e := decodeStrict(req.ctx.PostBody(), &body); e != nil {
		s.writeError(req, e)
		return
	}
	if len(body.Messages) == 0 || len(body.Messages) > actors.MaxBatch {
		s.writeError(req, errValidation("messages", fmt.Sprintf("must contain 1 to %d messages", actors.MaxBatch),
			fmt.Sprintf("должно содержать от 1 до %d сообщений", actors.MaxBatch)))
		return
	}
	vhost, e := s.vhost(req, body.Vhost)
	if e != nil {
		s.writeError(req, e)
		return
	}

	russian := req.prefersRussian()
	results := make([]batchResult, len(body.Messages))
	var msgs []*transport.Message
	var positions []int
	for i, raw := range body.Messages {
		results[i].Index = i
		var pb publishBody
		e := decodeStrict(raw, &pb)
		var msg *transport.Message
		if e == nil {
			if pb.Vhost != nil {
				e = errValidation("vhost", "is set once for the whole batch", "задаётся один раз для всего пакета")
			} else {
				msg, _, e = s.messageFromJSON(req, &pb)
			}
		}
		if e != nil {
			results[i].Status, results[i].Error, results[i].Detail = e.status, e.code, e.detail(russian)
			continue
		}
		msgs = append(msgs, msg)
		positions = append(positions, i)
	}

	if len(msgs) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.PublishTimeout)
		errs := s.backend.PublishBatch(ctx, creds, vhost, msgs)
		cancel()
		for j, err := range errs {
			r := &results[positions[j]]
			if err != nil {
				e := mapError(err, msgs[j].Exchange)
				r.Status, r.Error, r.Detail = e.status, e.code, e.detail(russian)
				continue
			}
			r.Status, r.MessageID, r.CorrelationID = 202, msgs[j].MessageID, msgs[j].CorrelationID
		}
	}

	// A refused login or vhost concerns the request, not its messages.
	if e := sameConnectionError(results); e != nil {
		s.writeError(req, e)
		return
	}

	answer := batchAnswer{RequestID: req.id, Results: results}
	for _, r := range results {
		if r.Status == 202 {
			answer.Accepted++
		} else {
			answer.Failed++
			s.metrics.Errors.WithLabelValues(r.Error).Inc()
		}
	}
	s.writeJSON(req, 207, answer)
}
