package transport

import (
	"net"
	"sync"
)

// maxCorked is how many bytes a corked connection buffers before it writes
// anyway.
const maxCorked = 64 << 10

// corkedConn is a net.Conn whose writes can be held back and sent together:
// while at least one holder is active, Write only buffers, and the last
// release writes the buffer in one system call. amqp091-go flushes every
// publishing on its own; a channel writer that has several publishings
// queued holds the connection across them, so they share one write.
type corkedConn struct {
	net.Conn

	mu      sync.Mutex
	holders int
	buf     []byte
	err     error
}

func (c *corkedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if c.holders > 0 && len(c.buf)+len(p) < maxCorked {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	if len(c.buf) > 0 {
		c.buf = append(c.buf, p...)
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	n, err := c.Conn.Write(p)
	if err != nil {
		c.err = err
	}
	return n, err
}

func (c *corkedConn) flushLocked() error {
	_, err := c.Conn.Write(c.buf)
	c.buf = c.buf[:0]
	if err != nil {
		c.err = err
	}
	return err
}

// hold starts holding writes back.
func (c *corkedConn) hold() {
	c.mu.Lock()
	c.holders++
	c.mu.Unlock()
}

// release ends one hold; the last one writes what was held back.
func (c *corkedConn) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.holders--
	if c.holders == 0 && len(c.buf) > 0 && c.err == nil {
		_ = c.flushLocked()
	}
}
