package main

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func TestParseBatchResponse(t *testing.T) {
	body := `{"results":[
		{"status":"accepted","message_id":"a"},
		{"status":202},
		{"error":"unroutable","status":422,"detail":"no queue"},
		{"error":"Publish_Nacked!!"},
		{"status":503}
	]}`
	accepted, failures, err := parseBatchResponse([]byte(body))
	if err != nil {
		t.Fatalf("parseBatchResponse: %v", err)
	}
	if accepted != 2 {
		t.Errorf("accepted = %d, want 2", accepted)
	}
	want := []string{"batch item 422 unroutable", "batch item publish_nacked", "batch item 503"}
	if strings.Join(failures, "|") != strings.Join(want, "|") {
		t.Errorf("failures = %q, want %q", failures, want)
	}
}

func TestParseBatchResponseMessagesKey(t *testing.T) {
	accepted, failures, err := parseBatchResponse([]byte(`{"messages":[{"status":"accepted"},{"status":"accepted"}]}`))
	if err != nil || accepted != 2 || len(failures) != 0 {
		t.Errorf("parseBatchResponse = %d, %v, %v, want 2 accepted", accepted, failures, err)
	}
}

func TestParseBatchResponseInvalid(t *testing.T) {
	for _, body := range []string{``, `[]`, `{"status":"ok"}`, `{"results":`} {
		if _, _, err := parseBatchResponse([]byte(body)); err == nil {
			t.Errorf("parseBatchResponse(%q) returned no error", body)
		}
	}
}

func TestAppendAckBodyKeepsTagsVerbatim(t *testing.T) {
	fetched := `{"messages":[{"delivery_tag":7,"body":{"a":1}},{"delivery_tag":"g2-8","body":"x"}]}`
	body, n, err := appendAckBody(nil, []byte(fetched))
	if err != nil {
		t.Fatalf("appendAckBody: %v", err)
	}
	if n != 2 {
		t.Errorf("count = %d, want 2", n)
	}
	if want := `{"delivery_tags":[7,"g2-8"]}`; string(body) != want {
		t.Errorf("ack body = %s, want %s", body, want)
	}
	var parsed map[string][]json.RawMessage
	if err := json.Unmarshal(body, &parsed); err != nil {
		t.Errorf("ack body is not valid JSON: %v", err)
	}
}

func TestAppendAckBodyEmptyAndInvalid(t *testing.T) {
	body, n, err := appendAckBody([]byte("keep"), []byte(`{"messages":[]}`))
	if err != nil || n != 0 || string(body) != "keep" {
		t.Errorf("empty fetch = %q, %d, %v, want dst unchanged and 0", body, n, err)
	}
	if _, _, err := appendAckBody(nil, []byte(`{"messages":[{"body":"no tag"}]}`)); err == nil {
		t.Errorf("message without delivery_tag returned no error")
	}
	if _, _, err := appendAckBody(nil, []byte(`not json`)); err == nil {
		t.Errorf("invalid JSON returned no error")
	}
}

func TestStatusErrorKind(t *testing.T) {
	cases := []struct {
		status int
		body   string
		want   string
	}{
		{429, `{"error":"too_many_in_flight","detail":"x","request_id":"r"}`, "429 too_many_in_flight"},
		{502, `<html>bad gateway</html>`, "502"},
		{400, `{"error":"<script>EVIL</script> code with spaces"}`, "400 scriptevilscriptcodewithspaces"},
		{503, `{"error":""}`, "503"},
	}
	for _, c := range cases {
		if got := statusErrorKind(c.status, []byte(c.body)); got != c.want {
			t.Errorf("statusErrorKind(%d, %s) = %q, want %q", c.status, c.body, got, c.want)
		}
	}
	long := `{"error":"` + strings.Repeat("a", 500) + `"}`
	if got := statusErrorKind(400, []byte(long)); len(got) > 4+40 {
		t.Errorf("statusErrorKind kept %d characters of a long code, want at most 40", len(got)-4)
	}
}

func TestHTTPErrorKind(t *testing.T) {
	cases := map[error]string{
		fasthttp.ErrTimeout:          "http timeout",
		fasthttp.ErrNoFreeConns:      "http no free connection",
		syscall.ECONNREFUSED:         "http connection refused",
		syscall.EPIPE:                "http broken pipe",
		errors.New("something else"): "http error",
	}
	for err, want := range cases {
		if got := httpErrorKind(err); got != want {
			t.Errorf("httpErrorKind(%v) = %q, want %q", err, got, want)
		}
	}
}

func TestEncodePublishJSON(t *testing.T) {
	topo := topology{exchange: "bench.x", routingKey: "bench"}
	var body map[string]any
	if err := json.Unmarshal(encodePublishJSON(topo, []byte(`say "hi"`)), &body); err != nil {
		t.Fatalf("publish body is not JSON: %v", err)
	}
	if body["exchange"] != "bench.x" || body["routing_key"] != "bench" || body["payload"] != `say "hi"` || body["persistence"] != 2.0 {
		t.Errorf("publish body = %v", body)
	}

	var batch struct {
		Messages []map[string]any `json:"messages"`
	}
	if err := json.Unmarshal(encodePublishBatch(topo, []byte("p"), 3), &batch); err != nil {
		t.Fatalf("batch body is not JSON: %v", err)
	}
	if len(batch.Messages) != 3 || batch.Messages[2]["payload"] != "p" {
		t.Errorf("batch body = %v, want 3 messages with payload p", batch)
	}
}

func TestMakePayloadIsPrintable(t *testing.T) {
	p := makePayload(1000)
	if len(p) != 1000 {
		t.Fatalf("len = %d, want 1000", len(p))
	}
	for i, b := range p {
		if b < '0' || b > 'z' {
			t.Fatalf("byte %d = %q is not alphanumeric", i, b)
		}
	}
	// The JSON encoding of the payload adds only the quotes, so the router's message has
	// the same size as the direct one.
	encoded, _ := json.Marshal(string(p))
	if len(encoded) != len(p)+2 {
		t.Errorf("JSON-encoded payload is %d bytes, want %d", len(encoded), len(p)+2)
	}
}

func TestRouterClientIPv6Loopback(t *testing.T) {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	server := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(fasthttp.StatusOK) }}
	go func() { _ = server.Serve(ln) }()
	t.Cleanup(func() { _ = server.Shutdown() })
	baseURL := "http://" + ln.Addr().String()

	if err := waitReady(context.Background(), baseURL, 2*time.Second, nil); err != nil {
		t.Errorf("waitReady(%s): %v", baseURL, err)
	}
	client, err := newRouterClient(baseURL, 1, 2*time.Second, "")
	if err != nil {
		t.Fatalf("newRouterClient: %v", err)
	}
	defer client.close()
	req := client.newRequest(fasthttp.MethodGet, "/health/ready", "", "", nil)
	defer fasthttp.ReleaseRequest(req)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	if err := client.do(req, resp, 0); err != nil {
		t.Fatalf("GET %s/health/ready: %v", baseURL, err)
	}
	if resp.StatusCode() != fasthttp.StatusOK {
		t.Errorf("status = %d, want 200", resp.StatusCode())
	}
}
