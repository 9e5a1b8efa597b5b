package router

import (
	"errors"
	"time"

	"github.com/rmqrouter/rmqrouter/transport"
)

type healthBody struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks"`
}

type notReadyBody struct {
	errorBody
	Status string            `json:"status"`
	Checks map[string]string `json:"checks"`
}

// handleLive responds 200 while the process serves HTTP.
func (s *Server) handleLive(req *request) {
	s.writeJSON(req, 200, healthBody{Status: "ok", Checks: map[string]string{"http": "ok"}})
}

// handleReady responds 200 while the router's own broker connection is open.
func (s *Server) handleReady(req *request) {
	if err := s.ready(); err != nil {
		e := newAPIError(503, "broker_unavailable",
			"The router cannot reach the broker: "+err.Error()+".",
			"Маршрутизатор не может связаться с брокером: "+readinessReasonRU(err)+". Ответ брокера — в поле checks.broker.")
		req.ctx.Response.Header.Set("Retry-After", "5")
		s.metrics.Errors.WithLabelValues(e.code).Inc()
		s.writeJSON(req, 503, notReadyBody{
			errorBody: errorBody{Error: e.code, Detail: e.detail(req.prefersRussian()), RequestID: req.id},
			Status:    "not_ready",
			Checks:    map[string]string{"broker": err.Error()},
		})
		return
	}
	s.writeJSON(req, 200, healthBody{Status: "ready", Checks: map[string]string{"broker": "ok"}})
}

// readinessReasonRU names the cause of a failed readiness check in Russian.
// The broker's own text stays in checks.broker, which is not translated.
func readinessReasonRU(err error) string {
	switch {
	case errors.Is(err, transport.ErrAuthenticationFailed):
		return "брокер отклонил имя пользователя или пароль маршрутизатора"
	case errors.Is(err, transport.ErrAccessRefused):
		return "брокер отказал маршрутизатору в доступе к виртуальному хосту"
	default:
		return "брокер недоступен или не ответил вовремя"
	}
}

// handleStartup responds 200 once the router has started; it serves HTTP
// only after its configuration was read and the actor system started.
func (s *Server) handleStartup(req *request) {
	s.writeJSON(req, 200, map[string]any{
		"status":         "started",
		"uptime_seconds": int64(time.Since(s.started).Seconds()),
	})
}

func (s *Server) handleOpenAPI(req *request) {
	req.ctx.Response.Header.SetContentType("application/yaml")
	req.ctx.SetStatusCode(200)
	req.ctx.SetBody(s.cfg.OpenAPI)
}
