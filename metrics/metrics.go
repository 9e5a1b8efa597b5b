package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics holds every collector of the router, registered on Registry.
type Metrics struct {
	Registry *prometheus.Registry

	// PublishDuration is the time from a publish request's arrival at its
	// connection actor to the broker's answer, by outcome (error code or
	// "accepted").
	PublishDuration *prometheus.HistogramVec
	// ConsumeDuration is the time from a delivery's arrival at the router
	// to the client's ack or reject.
	ConsumeDuration prometheus.Histogram
	// Errors counts error responses by API error code.
	Errors *prometheus.CounterVec
	// ActiveConnections is the number of open AMQP connections.
	ActiveConnections prometheus.Gauge
	// ChannelsOpen is the number of open AMQP channels, by use.
	ChannelsOpen *prometheus.GaugeVec
	// SessionsOpen is the number of consumer sessions.
	SessionsOpen prometheus.Gauge
	// SessionsExpired counts explicit sessions closed by their idle timeout.
	SessionsExpired prometheus.Counter
	// DeliveriesBuffered is the number of messages the sessions received
	// from the broker and have not yet handed to a client.
	DeliveriesBuffered prometheus.Gauge
	// Messages counts messages by event: published, delivered, acked,
	// rejected, returned.
	Messages *prometheus.CounterVec
	// ActorRestarts counts actor restarts and reconnects by actor kind.
	ActorRestarts *prometheus.CounterVec
	// BreakersOpen is the number of circuit breakers that are open or
	// half-open.
	BreakersOpen prometheus.Gauge
	// BreakerTransitions counts breakers opening and closing, by new state.
	BreakerTransitions *prometheus.CounterVec
	// BulkheadRejections counts requests rejected by a full bulkhead.
	BulkheadRejections prometheus.Counter
	// HTTPRequests counts HTTP requests by route, method and status.
	HTTPRequests *prometheus.CounterVec
	// HTTPDuration is the HTTP request duration by route.
	HTTPDuration *prometheus.HistogramVec
}

// PublishOutcomes are the values of the outcome label of PublishDuration.
var PublishOutcomes = []string{"accepted", "unroutable", "exchange_not_found", "nacked", "access_refused", "blocked", "failed"}

// latencyBuckets spans 0.5 ms to 30 s: confirms on loopback take about a
// millisecond, and a publish timeout is tens of seconds.
var latencyBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// New creates the collectors and registers them, with the Go runtime and
// process collectors, on a new registry.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		PublishDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "rmq_middleware_publish_duration_seconds",
			Help:    "Time from a publish request reaching its connection to the broker's answer, by outcome.",
			Buckets: latencyBuckets,
		}, []string{"outcome"}),
		ConsumeDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "rmq_middleware_consume_duration_seconds",
			Help:    "Time from a delivery reaching the router to the client's ack or reject.",
			Buckets: []float64{0.001, 0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800},
		}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rmq_middleware_error_total",
			Help: "Error responses, by API error code.",
		}, []string{"code"}),
		ActiveConnections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rmq_middleware_active_connections",
			Help: "Open AMQP connections.",
		}),
		ChannelsOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "rmq_middleware_channels_open",
			Help: "Open AMQP channels, by use (publish, consume).",
		}, []string{"use"}),
		SessionsOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rmq_middleware_sessions_open",
			Help: "Open consumer sessions, implicit ones of /v1/fetch included.",
		}),
		SessionsExpired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rmq_middleware_sessions_expired_total",
			Help: "Explicit consumer sessions closed after their idle timeout.",
		}),
		DeliveriesBuffered: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rmq_middleware_deliveries_buffered",
			Help: "Messages received by consumer sessions and not yet handed to a client.",
		}),
		Messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rmq_middleware_messages_total",
			Help: "Messages by event: published (confirmed), returned, delivered, acked, rejected.",
		}, []string{"event"}),
		ActorRestarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rmq_middleware_actor_restarts_total",
			Help: "Actor restarts and reconnects, by actor kind.",
		}, []string{"kind"}),
		BreakersOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rmq_middleware_circuit_breakers_open",
			Help: "Circuit breakers that are open or half-open.",
		}),
		BreakerTransitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rmq_middleware_circuit_breaker_transitions_total",
			Help: "Circuit breakers opening and closing, by the new state.",
		}, []string{"state"}),
		BulkheadRejections: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rmq_middleware_bulkhead_rejections_total",
			Help: "Requests rejected because a connection had too many in flight and waiting.",
		}),
		HTTPRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rmq_middleware_http_requests_total",
			Help: "HTTP requests, by route, method and status code.",
		}, []string{"route", "method", "status"}),
		HTTPDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "rmq_middleware_http_request_duration_seconds",
			Help:    "HTTP request duration, by route.",
			Buckets: latencyBuckets,
		}, []string{"route"}),
	}
	// Create the common series up front, so that dashboards and alerts see
	// zeros instead of missing series before the first event.
	for _, outcome := range PublishOutcomes {
		m.PublishDuration.WithLabelValues(outcome)
	}
	for _, event := range []string{"published", "returned", "delivered", "acked", "rejected"} {
		m.Messages.WithLabelValues(event)
	}
	for _, kind := range []string{"connection", "publisher", "session"} {
		m.ActorRestarts.WithLabelValues(kind)
	}
	for _, state := range []string{"open", "closed"} {
		m.BreakerTransitions.WithLabelValues(state)
	}
	m.Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.PublishDuration, m.ConsumeDuration, m.Errors, m.ActiveConnections,
		m.ChannelsOpen, m.SessionsOpen, m.Messages, m.ActorRestarts,
		m.SessionsExpired, m.DeliveriesBuffered,
		m.HTTPRequests, m.HTTPDuration,
		m.BreakersOpen, m.BreakerTransitions, m.BulkheadRejections,
	)
	return m
}
