package router

import (
	"context"
	"crypto/subtle"
	"strings"
	"time"
)

var (
	errAdminDisabled = newAPIError(404, "not_found",
		"The admin endpoints are disabled: start the router with --admin-token to enable them.",
		"Административные адреса выключены: задайте --admin-token при запуске маршрутизатора.")
	errAdminToken = newAPIError(401, "authentication_required",
		"This endpoint needs the admin bearer token (Authorization: Bearer <token>).",
		"Для этого адреса нужен административный токен (Authorization: Bearer <токен>).")
)

// handleSupervision serves GET /v1/admin/supervision: the actor tree with
// each route's breaker, bulkhead and restarts. User names appear, passwords
// never do.
func (s *Server) handleSupervision(req *request) {
	if s.cfg.AdminToken == "" {
		s.writeError(req, errAdminDisabled)
		return
	}
	scheme, token, _ := strings.Cut(header(req.ctx, "Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare([]byte(token), []byte(s.cfg.AdminToken)) != 1 {
		req.ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="rmqrouter-admin"`)
		s.writeError(req, errAdminToken)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	snap, err := s.backend.Snapshot(ctx)
	if err != nil {
		s.writeError(req, mapError(err, ""))
		return
	}
	s.writeJSON(req, 200, snap)
}
