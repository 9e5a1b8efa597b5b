// Command rmqrouter runs the HTTP-to-RabbitMQ router. See README.md for the
// settings; every flag also reads RMQROUTER_<FLAG>.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/rmqrouter/rmqrouter/actors"
	"github.com/rmqrouter/rmqrouter/metrics"
	"github.com/rmqrouter/rmqrouter/router"
	"github.com/rmqrouter/rmqrouter/security"
	"github.com/rmqrouter/rmqrouter/transport"
)

// defaultGCPercent replaces Go's default of 100 when GOGC is not set. The
// router allocates a few KB per request and keeps little; with 100, garbage
// collection took about a third of its CPU under load on a 2-core machine,
// and 400 cut the CPU per published message from about 95 to 64 µs
// (docs/benchmarks.md) for about 20 MB more resident memory.
const defaultGCPercent = 400

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
	cfg, err := loadConfig(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "rmqrouter: %v\n", err)
		os.Exit(2)
	}
	if err := run(cfg); err != nil {
		fmt.Fprintf(os.Stderr, "rmqrouter: %v\n", err)
		os.Exit(1)
	}
}

// bulkheadWaiting maps the flag, where 0 means no waiting, to the actors
// setting, where 0 means the default and a negative value no waiting.
func bulkheadWaiting(flag int) int {
	if flag == 0 {
		return -1
	}
	return flag
}

func newLogger(cfg *config) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.level}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, opts))
}

// run wires the parts, serves until SIGINT or SIGTERM, and shuts down in
// order: stop accepting HTTP, wait for requests in flight, stop the actors
// (closing channels and connections), stop the readiness probe.
func run(cfg *config) error {
	base := newLogger(cfg)
	log := base.With("task", "main")
	m := metrics.New()
	store := security.NewStore(10000)

	system := actors.NewSystem(actors.Config{
		Endpoints:             cfg.endpoints,
		DefaultVhost:          cfg.broker.Vhost,
		Heartbeat:             cfg.Heartbeat,
		DialTimeout:           cfg.DialTimeout,
		ConnectionIdleTimeout: cfg.ConnectionIdleTimeout,
		SessionIdleTimeout:    cfg.SessionIdleTimeout,
		Prefetch:              cfg.Prefetch,
		MaxConnections:        cfg.MaxConnections,
		MaxSessions:           cfg.MaxSessions,
		MaxSessionsPerUser:    cfg.MaxSessionsPerUser,
		PublishChannels:       cfg.PublishChannels,
		RetryBaseDelay:        cfg.RetryBaseDelay,
		RetryMaxDelay:         cfg.RetryMaxDelay,
		RetryMaxAttempts:      cfg.RetryMaxAttempts,
		Breaker: actors.BreakerConfig{
			FailureThreshold: cfg.BreakerThreshold,
			Window:           cfg.BreakerWindow,
			RecoveryTimeout:  cfg.BreakerRecovery,
			HalfOpenRequests: cfg.BreakerHalfOpen,
		},
		BulkheadMaxConcurrent: cfg.BulkheadConcurrent,
		BulkheadMaxWaiting:    bulkheadWaiting(cfg.BulkheadWaiting),
	}, base.With("task", "actors"), m)

	systemCreds, err := store.NewCredentials(cfg.broker.User, []byte(cfg.broker.Password))
	if err != nil {
		return fmt.Errorf("seal broker credentials: %w", err)
	}
	cfg.broker.Password = ""
	probe := transport.NewProbe(transport.DialConfig{
		Endpoint:       cfg.broker.Endpoint,
		Vhost:          cfg.broker.Vhost,
		User:           cfg.broker.User,
		Heartbeat:      cfg.Heartbeat,
		DialTimeout:    cfg.DialTimeout,
		ConnectionName: "rmqrouter readiness",
	}, systemCreds.WithPassword, 5*time.Second)
	probe.Start()

	server := router.New(cfg.server(), system, store, m, base, probe.Ready)

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		probe.Stop()
		system.Shutdown(context.Background())
		return fmt.Errorf("listen on %s: %w", cfg.HTTPAddr, err)
	}
	log.Info("rmqrouter started", "http_addr", ln.Addr().String(), "broker", cfg.broker.Endpoint.String(), "vhost", cfg.broker.Vhost)

	serveErr := make(chan error, 1)
	go func() { serveErr <- server.Serve(ln) }()

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(signals)
	select {
	case sig := <-signals:
		log.Info("shutting down", "signal", sig.String(), "timeout", cfg.ShutdownTimeout.String())
	case err := <-serveErr:
		if err != nil {
			log.Error("http server stopped", "error", err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := server.Shutdown(ctx); err != nil {
		log.Warn("http shutdown incomplete", "error", err)
	}
	system.Shutdown(ctx)
	probe.Stop()
	log.Info("rmqrouter stopped")
	return nil
}
