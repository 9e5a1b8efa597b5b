package main

import (
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
)

// publishMode selects the router endpoint a routerPublisher sends to.
type publishMode int

const (
	publishJSON      publishMode = iota // POST /v1/publish
	publishRaw                          // POST /v1/exchanges/{exchange}/publish
	publishBatch                        // POST /v1/publish/batch
	publishAlternate                    // publishJSON and publishRaw in turn
)

// routerPublisher is a router worker that sends one prepared publish request after the
// other and waits for each response.
type routerPublisher struct {
	client   *routerClient
	mode     publishMode
	batch    int
	requests []*fasthttp.Request // one, or two for publishAlternate
	next     int
	resp     *fasthttp.Response
}

func newRouterPublisher(client *routerClient, cred credential, topo topology, payload []byte, mode publishMode, batch int) *routerPublisher {
	auth := basicAuthorization(cred)
	jsonRequest := func() *fasthttp.Request {
		return client.newRequest("POST", "/v1/publish", auth, "application/json", encodePublishJSON(topo, payload))
	}
	rawRequest := func() *fasthttp.Request {
		path := "/v1/exchanges/" + url.PathEscape(topo.exchange) + "/publish?routing_key=" + url.QueryEscape(topo.routingKey)
		req := client.newRequest("POST", path, auth, "application/octet-stream", payload)
		req.Header.Set("X-Persistent", "true")
		return req
	}

	p := &routerPublisher{client: client, mode: mode, batch: 1, resp: fasthttp.AcquireResponse()}
	switch mode {
	case publishJSON:
		p.requests = []*fasthttp.Request{jsonRequest()}
	case publishRaw:
		p.requests = []*fasthttp.Request{rawRequest()}
	case publishBatch:
		p.batch = batch
		p.requests = []*fasthttp.Request{client.newRequest("POST", "/v1/publish/batch", auth, "application/json", encodePublishBatch(topo, payload, batch))}
	case publishAlternate:
		p.requests = []*fasthttp.Request{jsonRequest(), rawRequest()}
	}
	return p
}

func (p *routerPublisher) step(rc *roundCtx, st *workerStats) {
	req := p.requests[p.next]
	p.next = (p.next + 1) % len(p.requests)

	began := time.Now()
	if err := p.client.do(req, p.resp, 0); err != nil {
		rc.r.recordError(st, httpErrorKind(err))
		rc.pause()
		return
	}

	status := p.resp.StatusCode()
	if p.mode != publishBatch {
		if status == fasthttp.StatusAccepted {
			rc.r.recordSuccess(st, began, 1, 0)
		} else {
			rc.r.recordError(st, statusErrorKind(status, p.resp.Body()))
			rc.pause()
		}
		return
	}

	if status != fasthttp.StatusMultiStatus && status != fasthttp.StatusOK && status != fasthttp.StatusAccepted {
		rc.r.recordError(st, statusErrorKind(status, p.resp.Body()))
		rc.pause()
		return
	}
	accepted, failures, err := parseBatchResponse(p.resp.Body())
	if err != nil {
		rc.r.recordError(st, fmt.Sprintf("%d unreadable batch response", status))
		return
	}
	for _, kind := range failures {
		rc.r.recordError(st, kind)
	}
	if accepted > 0 {
		rc.r.recordSuccess(st, began, accepted, 0)
	}
}

func (p *routerPublisher) close() {
	for _, req := range p.requests {
		fasthttp.ReleaseRequest(req)
	}
	fasthttp.ReleaseResponse(p.resp)
}

// routerConsumer is a router worker with its own consumer session: each step fetches up
// to max messages and acknowledges them in one request.
type routerConsumer struct {
	client    *routerClient
	auth      string
	queue     string
	prefetch  int
	max       int
	wait      int
	sessionID string
	fetchReq  *fasthttp.Request
	ackReq    *fasthttp.Request
	resp      *fasthttp.Response
	ackBody   []byte
}

func newRouterConsumer(client *routerClient, cred credential, queue string, prefetch, max, wait int) (*routerConsumer, error) {
	c := &routerConsumer{
		client:   client,
		auth:     basicAuthorization(cred),
		queue:    queue,
		prefetch: prefetch,
		max:      max,
		wait:     wait,
		resp:     fasthttp.AcquireResponse(),
	}
	if _, err := c.open(); err != nil {
		fasthttp.ReleaseResponse(c.resp)
		return nil, err
	}
	return c, nil
}

// open creates the session and prepares the fetch and ack requests for it. On failure it
// returns a short report key along with the error.
func (c *routerConsumer) open() (string, error) {
	body := fmt.Appendf(nil, `{"queue":%s,"prefetch":%d}`, strconv.Quote(c.queue), c.prefetch)
	req := c.client.newRequest("POST", "/v1/sessions", c.auth, "application/json", body)
	defer fasthttp.ReleaseRequest(req)

	if err := c.client.do(req, c.resp, 0); err != nil {
		kind := httpErrorKind(err)
		return kind, fmt.Errorf("create session on queue %s: %s: %w", c.queue, kind, err)
	}
	if status := c.resp.StatusCode(); status != fasthttp.StatusCreated {
		kind := "session create " + statusErrorKind(status, c.resp.Body())
		return kind, fmt.Errorf("create session on queue %s: HTTP %s", c.queue, statusErrorKind(status, c.resp.Body()))
	}
	id, err := parseSessionID(c.resp.Body())
	if err != nil {
		return "session create unreadable response", fmt.Errorf("create session on queue %s: %w", c.queue, err)
	}

	c.releaseRequests()
	c.sessionID = id
	sessionPath := "/v1/sessions/" + url.PathEscape(id)
	c.fetchReq = c.client.newRequest("GET", fmt.Sprintf("%s/messages?max=%d&wait=%d", sessionPath, c.max, c.wait), c.auth, "", nil)
	c.ackReq = c.client.newRequest("POST", sessionPath+"/ack", c.auth, "application/json", nil)
	return "", nil
}

func (c *routerConsumer) step(rc *roundCtx, st *workerStats) {
	if c.sessionID == "" {
		if kind, err := c.open(); err != nil {
			rc.r.recordError(st, kind)
			rc.pause()
			return
		}
	}

	began := time.Now()
	if err := c.client.do(c.fetchReq, c.resp, time.Duration(c.wait)*time.Second); err != nil {
		rc.r.recordError(st, httpErrorKind(err))
		rc.pause()
		return
	}
	status := c.resp.StatusCode()
	switch {
	case status == fasthttp.StatusNoContent:
		st.emptyPolls++
		return
	case status == fasthttp.StatusNotFound:
		// The session expired or the router restarted: count it and start a new one.
		rc.r.recordError(st, "fetch "+statusErrorKind(status, c.resp.Body()))
		c.sessionID = ""
		return
	case status != fasthttp.StatusOK:
		rc.r.recordError(st, "fetch "+statusErrorKind(status, c.resp.Body()))
		rc.pause()
		return
	}

	var count int
	var err error
	c.ackBody, count, err = appendAckBody(c.ackBody[:0], c.resp.Body())
	if err != nil {
		rc.r.recordError(st, "fetch unreadable response")
		return
	}
	if count == 0 {
		st.emptyPolls++
		return
	}

	c.ackReq.SetBody(c.ackBody)
	if err := c.client.do(c.ackReq, c.resp, 0); err != nil {
		rc.r.recordError(st, httpErrorKind(err))
		return
	}
	if status := c.resp.StatusCode(); status < 200 || status > 299 {
		rc.r.recordError(st, "ack "+statusErrorKind(status, c.resp.Body()))
		rc.pause()
		return
	}
	rc.r.recordSuccess(st, began, 0, count)
}

// close deletes the session, which returns its unacknowledged messages to the queue.
func (c *routerConsumer) close() {
	if c.sessionID != "" {
		req := c.client.newRequest("DELETE", "/v1/sessions/"+url.PathEscape(c.sessionID), c.auth, "", nil)
		_ = c.client.do(req, c.resp, 0)
		fasthttp.ReleaseRequest(req)
		c.sessionID = ""
	}
	c.releaseRequests()
	fasthttp.ReleaseResponse(c.resp)
}

func (c *routerConsumer) releaseRequests() {
	if c.fetchReq != nil {
		fasthttp.ReleaseRequest(c.fetchReq)
		c.fetchReq = nil
	}
	if c.ackReq != nil {
		fasthttp.ReleaseRequest(c.ackReq)
		c.ackReq = nil
	}
}
