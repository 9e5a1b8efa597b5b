package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// routerClient sends requests to one router over a fasthttp HostClient shared by all
// workers of a run.
type routerClient struct {
	hc      *fasthttp.HostClient
	baseURL string // scheme://host:port
	vhost   string // sent as X-Vhost when not empty
	timeout time.Duration
}

// newRouterClient creates a client for baseURL (scheme://host[:port]) with up to maxConns
// connections, enough for every worker to have a request in flight at once.
func newRouterClient(baseURL string, maxConns int, timeout time.Duration, vhost string) (*routerClient, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("invalid router URL %q: %w", baseURL, err)
	}
	addr := u.Host
	if u.Port() == "" {
		port := "80"
		if u.Scheme == "https" {
			port = "443"
		}
		addr = net.JoinHostPort(u.Hostname(), port)
	}

	hc := &fasthttp.HostClient{
		Addr:                      addr,
		Name:                      "rmqrouter-bench",
		DialDualStack:             true, // a host name such as localhost may resolve to ::1 only
		IsTLS:                     u.Scheme == "https",
		MaxConns:                  maxConns,
		MaxConnWaitTimeout:        timeout,
		MaxIdleConnDuration:       30 * time.Second,
		MaxIdemponentCallAttempts: 1, // a retried fetch could strand delivered messages
		ReadBufferSize:            64 << 10,
		MaxResponseBodySize:       256 << 20,
	}
	return &routerClient{hc: hc, baseURL: baseURL, vhost: vhost, timeout: timeout}, nil
}

func (c *routerClient) close() { c.hc.CloseIdleConnections() }

// newRequest prepares a reusable request. fasthttp's Do leaves the request unchanged, so
// a worker sends the same object again and again.
func (c *routerClient) newRequest(method, path, authorization, contentType string, body []byte) *fasthttp.Request {
	req := fasthttp.AcquireRequest()
	req.SetRequestURI(c.baseURL + path)
	req.Header.SetMethod(method)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	if c.vhost != "" {
		req.Header.Set("X-Vhost", c.vhost)
	}
	if contentType != "" {
		req.Header.SetContentType(contentType)
	}
	if body != nil {
		req.SetBody(body)
	}
	return req
}

// do sends req, allowing extra time on top of the client timeout for a fetch that waits
// on the server.
func (c *routerClient) do(req *fasthttp.Request, resp *fasthttp.Response, extra time.Duration) error {
	return c.hc.DoTimeout(req, resp, c.timeout+extra)
}

func basicAuthorization(cred credential) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(cred.user+":"+cred.password))
}

// httpErrorKind groups a transport error from fasthttp into a short report key.
func httpErrorKind(err error) string {
	var netErr net.Error
	switch {
	case errors.Is(err, fasthttp.ErrTimeout):
		return "http timeout"
	case errors.Is(err, fasthttp.ErrNoFreeConns):
		return "http no free connection"
	case errors.Is(err, fasthttp.ErrConnectionClosed):
		return "http connection closed by the router"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "http connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "http connection reset"
	case errors.Is(err, syscall.EPIPE):
		return "http broken pipe"
	case errors.As(err, &netErr) && netErr.Timeout():
		return "http timeout"
	default:
		return "http error"
	}
}

// statusErrorKind names a failed response by its status and the router's error code, for
// example "429 too_many_in_flight". The code is lower-cased and only its letters and
// underscores are kept, so a malformed body cannot create unbounded report keys.
func statusErrorKind(status int, body []byte) string {
	var envelope struct {
		Error string `json:"error"`
	}
	key := strconv.Itoa(status)
	if json.Unmarshal(body, &envelope) == nil {
		if code := sanitizeCode(envelope.Error); code != "" {
			key += " " + code
		}
	}
	return key
}

func sanitizeCode(code string) string {
	if len(code) > 40 {
		code = code[:40]
	}
	return strings.Map(func(r rune) rune {
		if (r >= 'a' && r <= 'z') || r == '_' {
			return r
		}
		return -1
	}, strings.ToLower(code))
}

// publishBody is the part of a POST /v1/publish body that the harness sets. The router
// fills in the defaults (mandatory true, no headers, priority 0).
type publishBody struct {
	Exchange    string `json:"exchange"`
	RoutingKey  string `json:"routing_key"`
	Payload     string `json:"payload"`
	Persistence int    `json:"persistence"`
}

// encodePublishJSON returns the body of one POST /v1/publish request. A string payload is
// sent by the router as a text/plain message of exactly len(payload) bytes.
func encodePublishJSON(topo topology, payload []byte) []byte {
	body, _ := json.Marshal(publishBody{Exchange: topo.exchange, RoutingKey: topo.routingKey, Payload: string(payload), Persistence: 2})
	return body
}

// encodePublishBatch returns a POST /v1/publish/batch body with count identical messages.
func encodePublishBatch(topo topology, payload []byte, count int) []byte {
	messages := make([]publishBody, count)
	for i := range messages {
		messages[i] = publishBody{Exchange: topo.exchange, RoutingKey: topo.routingKey, Payload: string(payload), Persistence: 2}
	}
	body, _ := json.Marshal(struct {
		Messages []publishBody `json:"messages"`
	}{messages})
	return body
}

// batchItem is the part of one per-message result of a 207 batch response that the
// harness reads: a failed message carries an error code, and may carry its status.
type batchItem struct {
	Status json.RawMessage `json:"status"`
	Error  string          `json:"error"`
}

// parseBatchResponse counts the accepted messages of a batch response and names each
// failure. It reads the result list from "results", or from "messages" if that is absent.
// A result fails when it has an "error" code or a numeric "status" of 400 or more.
func parseBatchResponse(body []byte) (accepted int, failures []string, err error) {
	var envelope struct {
		Results  []batchItem `json:"results"`
		Messages []batchItem `json:"messages"`
	}
	if err := json.Unmarshal(body, &envelope); err != nil {
		return 0, nil, fmt.Errorf("invalid batch response: %w", err)
	}
	items := envelope.Results
	if items == nil {
		items = envelope.Messages
	}
	if items == nil {
		return 0, nil, errors.New("invalid batch response: no results list")
	}

	for _, item := range items {
		status, _ := strconv.Atoi(string(item.Status))
		switch {
		case item.Error != "":
			kind := "batch item " + sanitizeCode(item.Error)
			if status >= 400 {
				kind = fmt.Sprintf("batch item %d %s", status, sanitizeCode(item.Error))
			}
			failures = append(failures, kind)
		case status >= 400:
			failures = append(failures, fmt.Sprintf("batch item %d", status))
		default:
			accepted++
		}
	}
	return accepted, failures, nil
}

// parseSessionID reads session_id from a 201 POST /v1/sessions response.
func parseSessionID(body []byte) (string, error) {
	var created struct {
		SessionID string `json:"session_id"`
	}
	if err := json.Unmarshal(body, &created); err != nil {
		return "", fmt.Errorf("invalid session response: %w", err)
	}
	if created.SessionID == "" {
		return "", errors.New("invalid session response: no session_id")
	}
	return created.SessionID, nil
}

// appendAckBody parses a GET /v1/sessions/{id}/messages response and appends the body of
// the matching ack request, {"delivery_tags": [...]}, to dst. The tags are copied as they
// came, whether the router sends them as numbers or strings. It returns the extended dst
// and the number of messages.
func appendAckBody(dst, fetched []byte) ([]byte, int, error) {
	var batch struct {
		Messages []struct {
			DeliveryTag json.RawMessage `json:"delivery_tag"`
		} `json:"messages"`
	}
	if err := json.Unmarshal(fetched, &batch); err != nil {
		return dst, 0, fmt.Errorf("invalid fetch response: %w", err)
	}
	if len(batch.Messages) == 0 {
		return dst, 0, nil
	}

	dst = append(dst, `{"delivery_tags":[`...)
	for i, m := range batch.Messages {
		if len(m.DeliveryTag) == 0 {
			return dst, 0, errors.New("invalid fetch response: a message has no delivery_tag")
		}
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, bytes.TrimSpace(m.DeliveryTag)...)
	}
	dst = append(dst, "]}"...)
	return dst, len(batch.Messages), nil
}
