package router

import (
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

var benchBody = []byte(`{"exchange":"orders","routing_key":"order.created","payload":{"id":42,"lines":[{"sku":"A-1","qty":2}],"note":"` +
	strings.Repeat("x", 200) + `"},"headers":{"source":"1c"},"priority":1,"persistence":2}`)

// BenchmarkDecodePublishBody measures parsing and validating a publish body.
func BenchmarkDecodePublishBody(b *testing.B) {
	s, _ := newTestServer(&fakeBackend{})
	req := &request{ctx: &fasthttp.RequestCtx{}, id: "bench"}
	b.ReportAllocs()
	b.SetBytes(int64(len(benchBody)))
	for b.Loop() {
		var body publishBody
		if e := decodeStrict(benchBody, &body); e != nil {
			b.Fatal(e)
		}
		if _, _, e := s.messageFromJSON(req, &body); e != nil {
			b.Fatal(e)
		}
	}
}

// benchmarkHandle serves the same request b.N times through Handle, with a
// backend stub that confirms at once (no actors, no broker).
func benchmarkHandle(b *testing.B, uri string, headers map[string]string, body []byte) {
	s, _ := newTestServer(&fakeBackend{})
	auth := guestAuth()
	b.ReportAllocs()
	var ctx fasthttp.RequestCtx
	for b.Loop() {
		ctx.Request.Reset()
		ctx.Response.Reset()
		ctx.Request.Header.SetMethod("POST")
		ctx.Request.SetRequestURI(uri)
		ctx.Request.Header.Set("Authorization", auth)
		for k, v := range headers {
			ctx.Request.Header.Set(k, v)
		}
		ctx.Request.SetBody(body)
		s.Handle(&ctx)
		if ctx.Response.StatusCode() != 202 {
			b.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
		}
	}
}

// BenchmarkHandlePublish measures the router's own cost of one JSON publish
// request, from the parsed HTTP request to the written 202.
func BenchmarkHandlePublish(b *testing.B) {
	benchmarkHandle(b, "/v1/publish", nil, benchBody)
}

// BenchmarkHandleRawPublish is BenchmarkHandlePublish for a raw body.
func BenchmarkHandleRawPublish(b *testing.B) {
	benchmarkHandle(b, "/v1/exchanges/orders/publish?routing_key=order.created",
		map[string]string{"X-Header-Source": "1c"}, []byte(strings.Repeat("r", 256)))
}
