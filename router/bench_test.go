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

// BenchmarkHandlePublish measures the router's own cost of one publish
// request, from the parsed HTTP request to the written 202, with a backend
// stub that confirms at once (no actors, no broker).
func BenchmarkHandlePublish(b *testing.B) {
	s, _ := newTestServer(&fakeBackend{})
	auth := guestAuth()
	b.ReportAllocs()
	var ctx fasthttp.RequestCtx
	for b.Loop() {
		ctx.Request.Reset()
		ctx.Response.Reset()
		ctx.Request.Header.SetMethod("POST")
		ctx.Request.SetRequestURI("/v1/publish")
		ctx.Request.Header.Set("Authorization", auth)
		ctx.Request.SetBody(benchBody)
		s.Handle(&ctx)
		if ctx.Response.StatusCode() != 202 {
			b.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
		}
	}
}

// BenchmarkHandleRawPublish is BenchmarkHandlePublish for a raw body.
func BenchmarkHandleRawPublish(b *testing.B) {
	s, _ := newTestServer(&fakeBackend{})
	auth := guestAuth()
	body := []byte(strings.Repeat("r", 256))
	b.ReportAllocs()
	var ctx fasthttp.RequestCtx
	for b.Loop() {
		ctx.Request.Reset()
		ctx.Response.Reset()
		ctx.Request.Header.SetMethod("POST")
		ctx.Request.SetRequestURI("/v1/exchanges/orders/publish?routing_key=order.created")
		ctx.Request.Header.Set("Authorization", auth)
		ctx.Request.Header.Set("X-Header-Source", "1c")
		ctx.Request.SetBody(body)
		s.Handle(&ctx)
		if ctx.Response.StatusCode() != 202 {
			b.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
		}
	}
}
