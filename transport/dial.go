package transport

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Endpoint is a broker address without credentials: scheme ("amqp" or
// "amqps"), host and port. Credentials always travel separately, so an
// Endpoint can be logged.
type Endpoint struct {
	Scheme string
	Host   string
	Port   int
}

// String returns the endpoint as a URL without user information.
func (e Endpoint) String() string {
	return fmt.Sprintf("%s://%s", e.Scheme, net.JoinHostPort(e.Host, fmt.Sprint(e.Port)))
}

// ParsedURL is an AMQP URL split into an Endpoint, a default vhost and the
// user and password it carries, if any.
type ParsedURL struct {
	Endpoint Endpoint
	Vhost    string
	User     string
	Password string
}

// ParseURL parses an amqp:// or amqps:// URL. The error never contains the
// password.
func ParseURL(raw string) (ParsedURL, error) {
	u, err := amqp.ParseURI(raw)
	if err != nil {
		if _, perr := url.Parse(raw); perr != nil {
			// The parser's message quotes the whole URL, password included.
			return ParsedURL{}, fmt.Errorf("invalid AMQP URL %s: not a valid URL; percent-encode reserved characters in the user name and password", Redact(raw))
		}
		return ParsedURL{}, fmt.Errorf("invalid AMQP URL %s: %s", Redact(raw), redactMessage(err.Error(), raw))
	}
	if u.Port < 1 || u.Port > 65535 {
		return ParsedURL{}, fmt.Errorf("invalid AMQP URL %s: port %d is outside 1..65535", Redact(raw), u.Port)
	}
	return ParsedURL{
		Endpoint: Endpoint{Scheme: u.Scheme, Host: u.Host, Port: u.Port},
		Vhost:    u.Vhost,
		User:     u.Username,
		Password: u.Password,
	}, nil
}

// Redact returns raw with any password replaced by "xxxxx", for logs and
// error messages. A string that does not parse as a URL is replaced whole.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<unparsable URL>"
	}
	if u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
	}
	return u.String()
}

func redactMessage(msg, raw string) string {
	msg = strings.ReplaceAll(msg, raw, Redact(raw))
	if u, err := url.Parse(raw); err == nil && u.User != nil {
		if p, has := u.User.Password(); has && p != "" {
			msg = strings.ReplaceAll(msg, p, "xxxxx")
		}
	}
	return msg
}

// DialConfig holds what Dial needs. Password is read during the call and
// must be wiped by the caller afterwards.
type DialConfig struct {
	Endpoint       Endpoint
	Vhost          string
	User           string
	Password       []byte
	Heartbeat      time.Duration
	DialTimeout    time.Duration
	ConnectionName string
}

// wrapConn, when set by a test, wraps every new socket: tests use it to see
// the frames the router writes.
var wrapConn func(net.Conn) net.Conn

// Dial opens an AMQP connection and authenticates with SASL PLAIN. The
// password never becomes part of a URL. It blocks until the handshake
// completes, ctx is done, or DialTimeout passes.
//
// NOTE: amqp091-go takes the password as a string, so one immutable copy of
// it lives on the Go heap until the garbage collector reclaims it.
func Dial(ctx context.Context, cfg DialConfig) (*Connection, error) {
	timeout := cfg.DialTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
		timeout = time.Until(dl)
	}
	if timeout <= 0 {
		return nil, newError("dial", ErrBrokerUnavailable, true)
	}

	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(cfg.ConnectionName)
	var corked *corkedConn
	dial := amqp.DefaultDial(timeout)
	conn, err := amqp.DialConfig(cfg.Endpoint.String()+"/", amqp.Config{
		SASL:       []amqp.Authentication{&amqp.PlainAuth{Username: cfg.User, Password: string(cfg.Password)}},
		Vhost:      cfg.Vhost,
		Heartbeat:  cfg.Heartbeat,
		Locale:     "en_US",
		Properties: props,
		Dial: func(network, addr string) (net.Conn, error) {
			c, err := dial(network, addr)
			if err != nil {
				return nil, err
			}
			if wrapConn != nil {
				c = wrapConn(c)
			}
			corked = &corkedConn{Conn: c}
			return corked, nil
		},
	})
	if err != nil {
		return nil, classify("dial", "", err)
	}
	return &Connection{raw: conn, corked: corked}, nil
}

// Connection is an open AMQP connection. Channels are opened from it with
// OpenConfirmChannel, OpenConsumer and NewTopology.
type Connection struct {
	raw    *amqp.Connection
	corked *corkedConn
}

// IsClosed reports whether the connection is closed.
func (c *Connection) IsClosed() bool { return c.raw.IsClosed() }

// Close closes the connection and waits up to timeout for the broker's
// close-ok; every channel on it closes too.
func (c *Connection) Close(timeout time.Duration) {
	_ = c.raw.CloseDeadline(time.Now().Add(timeout))
}

// WatchConnection drains the close and blocked notifications of conn and
// calls onBlocked (true when blocked, false when unblocked) and, once, onClose
// with the close reason (nil for a close the application asked for). It starts
// one goroutine that ends after onClose returns.
func WatchConnection(c *Connection, onBlocked func(blocked bool, reason string), onClose func(err error)) {
	conn := c.raw
	closeCh := conn.NotifyClose(make(chan *amqp.Error, 1))
	blockedCh := conn.NotifyBlocked(make(chan amqp.Blocking, 4))
	go func() {
		for {
			select {
			case b, ok := <-blockedCh:
				if !ok {
					blockedCh = nil
					continue
				}
				onBlocked(b.Active, b.Reason)
			case e, ok := <-closeCh:
				// Keep draining blocked notifications until amqp091-go closes
				// that channel too; it does so during the same shutdown.
				if blockedCh != nil {
					go func(ch <-chan amqp.Blocking) {
						for range ch {
						}
					}(blockedCh)
				}
				if !ok || e == nil {
					onClose(nil)
					return
				}
				onClose(classify("connection", "", e))
				return
			}
		}
	}()
}
