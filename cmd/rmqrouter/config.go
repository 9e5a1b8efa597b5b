package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/rmqrouter/rmqrouter/docs"
	"github.com/rmqrouter/rmqrouter/router"
	"github.com/rmqrouter/rmqrouter/transport"
)

// config is every setting of the router, with its parsed values.
type config struct {
	HTTPAddr              string
	AMQPURL               string
	AMQPEndpoints         string
	MaxBodyBytes          int
	PublishTimeout        time.Duration
	SessionIdleTimeout    time.Duration
	ConnectionIdleTimeout time.Duration
	Prefetch              int
	MaxConnections        int
	MaxSessions           int
	MaxSessionsPerUser    int
	PublishChannels       int
	Heartbeat             time.Duration
	DialTimeout           time.Duration
	RetryBaseDelay        time.Duration
	RetryMaxDelay         time.Duration
	RetryMaxAttempts      int
	ShutdownTimeout       time.Duration
	BreakerThreshold      int
	BreakerWindow         time.Duration
	BreakerRecovery       time.Duration
	BreakerHalfOpen       int
	BulkheadConcurrent    int
	BulkheadWaiting       int
	AdminToken            string
	LogLevel              string
	LogFormat             string
	GeneratedIDs          string

	// sources is the variable name of each setting that a variable set, so
	// that an error names what the operator wrote.
	sources map[string]string

	// Derived by validate.
	broker    transport.ParsedURL
	endpoints []transport.Endpoint
	level     slog.Level
}

// setting is one flag: its name, default, help, the environment names of
// the earlier service that mean the same, and where the value goes.
type setting struct {
	name    string
	def     string
	help    string
	aliases []string
	set     setter
}

// setter is the parser of a setting's text into the config. Its kind names
// the value's type in the usage text.
type setter struct {
	kind  string
	parse func(c *config, v string) error
}

func settings() []setting {
	return []setting{
		{"http-addr", "127.0.0.1:8000", "HTTP listen address (host:port)", []string{"HTTP_ADDR"}, str(func(c *config) *string { return &c.HTTPAddr })},
		{"amqp-url", "amqp://guest:guest@127.0.0.1:5672/", "broker URL; its user and password are the router's own, used by the readiness check; its vhost is the default vhost", []string{"RABBITMQ_URL", "AMQP_URL"}, str(func(c *config) *string { return &c.AMQPURL })},
		{"amqp-endpoints", "", "more brokers to fail over to, comma-separated host:port or amqp:// URLs (credentials in them are ignored)", []string{"RABBITMQ_ENDPOINTS"}, str(func(c *config) *string { return &c.AMQPEndpoints })},
		{"max-body-bytes", "1048576", "largest request body accepted, in bytes", []string{"MAX_BODY_BYTES", "MAX_MESSAGE_SIZE"}, integer(func(c *config) *int { return &c.MaxBodyBytes })},
		{"publish-timeout", "10s", "how long a publish waits for the broker's confirm before 504 (Go duration, or seconds)", []string{"PUBLISH_TIMEOUT"}, duration(func(c *config) *time.Duration { return &c.PublishTimeout })},
		{"session-idle-timeout", "5m", "a consumer session with no request for this long closes and its unacked messages return to the queue; the default idle_timeout of POST /v1/sessions", []string{"SESSION_IDLE_TIMEOUT"}, duration(func(c *config) *time.Duration { return &c.SessionIdleTimeout })},
		{"connection-idle-timeout", "5m", "a broker connection with no request and no session for this long is closed", nil, duration(func(c *config) *time.Duration { return &c.ConnectionIdleTimeout })},
		{"prefetch", "10", "basic.qos prefetch count of implicit /v1/fetch sessions, and the default prefetch of POST /v1/sessions", []string{"RABBITMQ_PREFETCH_COUNT"}, integer(func(c *config) *int { return &c.Prefetch })},
		{"max-connections", "1000", "most broker connections (one per vhost, user and password) held at once", []string{"MAX_CONNECTIONS"}, integer(func(c *config) *int { return &c.MaxConnections })},
		{"max-sessions", "10000", "maximum open consumer sessions of /v1/sessions; past it POST /v1/sessions gets 503 capacity_exhausted", []string{"MAX_SESSIONS"}, integer(func(c *config) *int { return &c.MaxSessions })},
		{"max-sessions-per-user", "100", "maximum open consumer sessions of /v1/sessions per user name; past it POST /v1/sessions gets 429 rate_limited", []string{"MAX_SESSIONS_PER_USER"}, integer(func(c *config) *int { return &c.MaxSessionsPerUser })},
		{"publish-channels", "2", "confirm-mode channels per connection used for publishing; the first carries up to 128 publishings in flight before the others share the load", nil, integer(func(c *config) *int { return &c.PublishChannels })},
		{"heartbeat", "10s", "AMQP heartbeat interval", []string{"RABBITMQ_HEARTBEAT"}, duration(func(c *config) *time.Duration { return &c.Heartbeat })},
		{"dial-timeout", "5s", "time limit for opening a broker connection", []string{"RABBITMQ_CONNECT_TIMEOUT"}, duration(func(c *config) *time.Duration { return &c.DialTimeout })},
		{"retry-base-delay", "1s", "first reconnect delay ceiling; the delay is random in [0, min(max, base*2^attempt))", nil, duration(func(c *config) *time.Duration { return &c.RetryBaseDelay })},
		{"retry-max-delay", "30s", "largest reconnect delay", nil, duration(func(c *config) *time.Duration { return &c.RetryMaxDelay })},
		{"retry-max-attempts", "10", "reconnect attempts before giving up until the next request", []string{"RECONNECT_MAX_ATTEMPTS"}, integer(func(c *config) *int { return &c.RetryMaxAttempts })},
		{"breaker-failure-threshold", "5", "infrastructure failures of one connection within --breaker-window that open its circuit breaker", []string{"CB_FAILURE_THRESHOLD"}, integer(func(c *config) *int { return &c.BreakerThreshold })},
		{"breaker-window", "10s", "time window in which breaker failures are counted", nil, duration(func(c *config) *time.Duration { return &c.BreakerWindow })},
		{"breaker-recovery-timeout", "30s", "how long an open breaker answers 503 circuit_open before it lets a probe through", []string{"CB_RECOVERY_TIMEOUT"}, duration(func(c *config) *time.Duration { return &c.BreakerRecovery })},
		{"breaker-half-open-requests", "1", "probe requests let through by a half-open breaker", []string{"CB_HALF_OPEN_REQUESTS"}, integer(func(c *config) *int { return &c.BreakerHalfOpen })},
		{"bulkhead-max-concurrent", "100", "publish requests of one connection in flight at once", nil, integer(func(c *config) *int { return &c.BulkheadConcurrent })},
		{"bulkhead-max-waiting", "50", "publish requests of one connection waiting for a slot; more get 429 too_many_in_flight", nil, integer(func(c *config) *int { return &c.BulkheadWaiting })},
		{"admin-token", "", "bearer token of GET /v1/admin/supervision; empty disables the admin endpoints", []string{"ADMIN_TOKEN"}, str(func(c *config) *string { return &c.AdminToken })},
		{"shutdown-timeout", "15s", "how long a shutdown waits for requests in flight", []string{"SHUTDOWN_TIMEOUT"}, duration(func(c *config) *time.Duration { return &c.ShutdownTimeout })},
		{"log-level", "info", "debug, info, warn or error", []string{"LOG_LEVEL"}, str(func(c *config) *string { return &c.LogLevel })},
		{"log-format", "json", "json or text", []string{"LOG_FORMAT"}, str(func(c *config) *string { return &c.LogFormat })},
		{"generated-ids", "compact", "format of the message ids and request ids the router generates when a client sends none: compact (16 URL-safe characters) or uuid (UUID message ids, 32 hex-digit request ids)", nil, str(func(c *config) *string { return &c.GeneratedIDs })},
	}
}

func str(field func(*config) *string) setter {
	return setter{"string", func(c *config, v string) error { *field(c) = v; return nil }}
}

func integer(field func(*config) *int) setter {
	return setter{"int", func(c *config, v string) error {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return errors.New("must be an integer")
		}
		*field(c) = n
		return nil
	}}
}

// duration accepts Go durations ("200ms", "3s") and, as the earlier service
// did, a bare number of seconds ("5", "2.5").
func duration(field func(*config) *time.Duration) setter {
	return setter{"duration", func(c *config, v string) error {
		v = strings.TrimSpace(v)
		if d, err := time.ParseDuration(v); err == nil {
			*field(c) = d
			return nil
		}
		if f, err := strconv.ParseFloat(v, 64); err == nil && f >= 0 && f < 1e9 {
			*field(c) = time.Duration(f * float64(time.Second))
			return nil
		}
		return errors.New("must be a duration such as 500ms, 10s or 5m, or a number of seconds")
	}}
}

// printUsage writes every flag with its type, help, variables and default.
func printUsage(w io.Writer, all []setting) {
	fmt.Fprintln(w, "Usage: rmqrouter [flags]")
	fmt.Fprintln(w, "Every flag can also be set by the variable named after it. See docs/configuration.md.")
	for _, s := range all {
		fmt.Fprintf(w, "  --%s %s\n    \t%s\n    \tvariable %s", s.name, s.set.kind, s.help, envName(s.name))
		for _, alias := range s.aliases {
			fmt.Fprintf(w, " or %s", alias)
		}
		if s.def != "" {
			fmt.Fprintf(w, "; default %q", s.def)
		}
		fmt.Fprintln(w)
	}
}

// envName returns the RMQROUTER_ variable of a flag.
func envName(flagName string) string {
	return "RMQROUTER_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// loadConfig reads settings from args, then from RMQROUTER_* variables,
// then from the earlier service's names; a flag wins over the environment.
// The error names the setting and the reason, and never holds a password.
func loadConfig(args []string, getenv func(string) string, usage io.Writer) (*config, error) {
	c := &config{sources: map[string]string{}}
	all := settings()
	fs := flag.NewFlagSet("rmqrouter", flag.ContinueOnError)
	// The caller reports a parse error in one line. Only -h prints the
	// usage.
	fs.SetOutput(io.Discard)
	values := make(map[string]*string, len(all))
	for _, s := range all {
		values[s.name] = fs.String(s.name, s.def, s.help)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(usage, all)
			return nil, err
		}
		return nil, fmt.Errorf("%v (run rmqrouter -h for the flags)", err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })

	for _, s := range all {
		value, source := *values[s.name], "--"+s.name
		if !given[s.name] {
			if v := getenv(envName(s.name)); v != "" {
				value, source = v, envName(s.name)
			} else {
				for _, alias := range s.aliases {
					if v := getenv(alias); v != "" {
						value, source = v, alias
						break
					}
				}
			}
		}
		if source != "--"+s.name {
			c.sources[s.name] = source
		}
		if err := s.set.parse(c, value); err != nil {
			// Only integer and duration settings can fail here, so the
			// value holds no password and can be shown.
			return nil, fmt.Errorf("invalid %s %q: %v", source, value, err)
		}
	}
	return c, c.validate()
}

// server returns the settings of the HTTP front end.
func (c *config) server() router.Config {
	return router.Config{
		MaxBodyBytes:   c.MaxBodyBytes,
		PublishTimeout: c.PublishTimeout,
		OpenAPI:        docs.OpenAPI,
		AdminToken:     c.AdminToken,
		IDFormat:       c.GeneratedIDs,
	}
}

// origin returns the name under which setting name was given: the variable
// that set it, else its flag.
func (c *config) origin(name string) string {
	if source, ok := c.sources[name]; ok {
		return source
	}
	return "--" + name
}

func (c *config) validate() error {
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		// The value is not shown: a URL put here by mistake may hold a password.
		return fmt.Errorf("invalid %s: must be host:port, such as 127.0.0.1:8000", c.origin("http-addr"))
	}
	broker, err := transport.ParseURL(c.AMQPURL)
	if err != nil {
		return fmt.Errorf("invalid %s: %v", c.origin("amqp-url"), err)
	}
	c.broker = broker
	c.endpoints = []transport.Endpoint{broker.Endpoint}
	for _, raw := range strings.Split(c.AMQPEndpoints, ",") {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			continue
		}
		if !strings.Contains(raw, "://") {
			raw = broker.Endpoint.Scheme + "://" + raw
		}
		p, err := transport.ParseURL(raw)
		if err != nil {
			return fmt.Errorf("invalid %s: %v", c.origin("amqp-endpoints"), err)
		}
		c.endpoints = append(c.endpoints, p.Endpoint)
	}

	positive := []struct {
		name string
		d    time.Duration
	}{
		{"publish-timeout", c.PublishTimeout}, {"session-idle-timeout", c.SessionIdleTimeout},
		{"connection-idle-timeout", c.ConnectionIdleTimeout}, {"dial-timeout", c.DialTimeout},
		{"breaker-window", c.BreakerWindow}, {"breaker-recovery-timeout", c.BreakerRecovery},
		{"retry-base-delay", c.RetryBaseDelay}, {"retry-max-delay", c.RetryMaxDelay},
		{"shutdown-timeout", c.ShutdownTimeout},
	}
	for _, p := range positive {
		if p.d <= 0 {
			return fmt.Errorf("invalid %s: must be greater than zero", c.origin(p.name))
		}
	}
	if c.Heartbeat < 0 {
		return fmt.Errorf("invalid %s: must not be negative (0 disables heartbeats)", c.origin("heartbeat"))
	}
	if c.RetryMaxDelay < c.RetryBaseDelay {
		return fmt.Errorf("invalid %s: %v is less than %s (%v)", c.origin("retry-max-delay"), c.RetryMaxDelay, c.origin("retry-base-delay"), c.RetryBaseDelay)
	}
	ints := []struct {
		name      string
		v, lo, hi int
	}{
		{"max-body-bytes", c.MaxBodyBytes, 1, 512 << 20},
		{"prefetch", c.Prefetch, 1, 65535},
		{"max-connections", c.MaxConnections, 1, 1 << 20},
		{"max-sessions", c.MaxSessions, 1, 1 << 20},
		{"max-sessions-per-user", c.MaxSessionsPerUser, 1, 1 << 20},
		{"publish-channels", c.PublishChannels, 1, 64},
		{"retry-max-attempts", c.RetryMaxAttempts, 1, 1000},
		{"breaker-failure-threshold", c.BreakerThreshold, 1, 1000000},
		{"breaker-half-open-requests", c.BreakerHalfOpen, 1, 10000},
		{"bulkhead-max-concurrent", c.BulkheadConcurrent, 1, 1000000},
		{"bulkhead-max-waiting", c.BulkheadWaiting, 0, 1000000},
	}
	for _, i := range ints {
		if i.v < i.lo || i.v > i.hi {
			return fmt.Errorf("invalid %s: %d is outside %d..%d", c.origin(i.name), i.v, i.lo, i.hi)
		}
	}
	if err := c.level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return fmt.Errorf("invalid %s %q: must be debug, info, warn or error", c.origin("log-level"), c.LogLevel)
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		return fmt.Errorf("invalid %s %q: must be json or text", c.origin("log-format"), c.LogFormat)
	}
	if c.GeneratedIDs != router.IDsCompact && c.GeneratedIDs != router.IDsUUID {
		return fmt.Errorf("invalid %s %q: must be %s or %s", c.origin("generated-ids"), c.GeneratedIDs, router.IDsCompact, router.IDsUUID)
	}
	return nil
}
