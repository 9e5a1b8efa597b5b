package router

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rmqrouter/rmqrouter/metrics"
)

// httpSeries is the label set of one rmq_middleware_http_requests_total series.
type httpSeries struct {
	route  string
	method string
	status int
}

// httpMetrics records HTTP requests. It keeps the series it has resolved, because
// the label lookup of client_golang hashes and checks every value on every request.
type httpMetrics struct {
	vecs      *metrics.Metrics
	requests  sync.Map // httpSeries → prometheus.Counter
	durations sync.Map // route → prometheus.Observer
}

// observe counts one request and records its duration.
func (h *httpMetrics) observe(route string, method []byte, status int, elapsed time.Duration) {
	h.count(route, method, status)
	observer, ok := h.durations.Load(route)
	if !ok {
		observer, _ = h.durations.LoadOrStore(route, h.vecs.HTTPDuration.WithLabelValues(route))
	}
	observer.(prometheus.Observer).Observe(elapsed.Seconds())
}

// count adds one request to the series of its labels.
func (h *httpMetrics) count(route string, method []byte, status int) {
	key := httpSeries{route: route, method: methodLabel(method), status: status}
	counter, ok := h.requests.Load(key)
	if !ok {
		counter, _ = h.requests.LoadOrStore(key, h.vecs.HTTPRequests.WithLabelValues(key.route, key.method, strconv.Itoa(status)))
	}
	counter.(prometheus.Counter).Inc()
}

// standardMethods maps each of HTTP's standard methods to its label.
var standardMethods = map[string]string{
	"GET": "GET", "HEAD": "HEAD", "POST": "POST", "PUT": "PUT", "DELETE": "DELETE",
	"PATCH": "PATCH", "OPTIONS": "OPTIONS", "CONNECT": "CONNECT", "TRACE": "TRACE",
}

// methodLabel returns the method label of a request: the method when it is one of
// HTTP's standard methods, else "other". fasthttp accepts any token as a method, and
// each distinct label value is a new series kept for the life of the process.
func methodLabel(method []byte) string {
	if label, ok := standardMethods[string(method)]; ok {
		return label
	}
	return "other"
}
