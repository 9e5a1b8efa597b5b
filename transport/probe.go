package transport

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Probe keeps one connection to the broker with the router's own (system)
// credentials and reports whether it is open; readiness checks use it. It
// redials every interval while the connection is down. Start runs one
// goroutine that Stop ends.
type Probe struct {
	cfg          DialConfig
	withPassword func(func(password []byte) error) error
	interval     time.Duration

	mu   sync.Mutex
	conn *Connection
	err  error

	stop chan struct{}
	done chan struct{}
}

// errProbeNotStarted is reported before the first dial has finished.
var errProbeNotStarted = errors.New("no connection attempt has finished yet")

// NewProbe returns a Probe that dials with cfg; cfg.Password is ignored and
// withPassword supplies the password for each dial instead, so that it stays
// sealed between dials.
func NewProbe(cfg DialConfig, withPassword func(func(password []byte) error) error, interval time.Duration) *Probe {
	cfg.Password = nil
	return &Probe{cfg: cfg, withPassword: withPassword, interval: interval, err: errProbeNotStarted, stop: make(chan struct{}), done: make(chan struct{})}
}

// Start begins dialling in a goroutine.
func (p *Probe) Start() {
	go p.run()
}

func (p *Probe) run() {
	defer close(p.done)
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		p.check()
		select {
		case <-t.C:
		case <-p.stop:
			p.mu.Lock()
			if p.conn != nil {
				p.conn.Close(time.Second)
			}
			p.mu.Unlock()
			return
		}
	}
}

func (p *Probe) check() {
	p.mu.Lock()
	conn := p.conn
	p.mu.Unlock()
	if conn != nil && !conn.IsClosed() {
		return
	}
	var c *Connection
	err := p.withPassword(func(password []byte) error {
		cfg := p.cfg
		cfg.Password = password
		var err error
		c, err = Dial(context.Background(), cfg)
		return err
	})
	p.mu.Lock()
	p.conn, p.err = c, err
	p.mu.Unlock()
}

// Ready returns nil while the probe connection is open, else the last error.
func (p *Probe) Ready() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn != nil && !p.conn.IsClosed() {
		return nil
	}
	if p.err != nil {
		return p.err
	}
	return newError("probe", ErrBrokerUnavailable, true)
}

// Stop ends the goroutine and closes the connection.
func (p *Probe) Stop() {
	close(p.stop)
	<-p.done
}
