package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// progress writes the progress line and notes to stderr. On a terminal the status line is
// rewritten in place, and elsewhere every status update is a line of its own.
type progress struct {
	mu       sync.Mutex
	out      io.Writer
	terminal bool
	pending  bool // a status line without newline is on the terminal
}

func newProgress(out io.Writer) *progress {
	p := &progress{out: out}
	if f, ok := out.(*os.File); ok {
		if info, err := f.Stat(); err == nil && info.Mode()&os.ModeCharDevice != 0 {
			p.terminal = true
		}
	}
	return p
}

// status shows a transient line, such as the counters of the running round.
func (p *progress) status(line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.terminal {
		fmt.Fprintf(p.out, "\r\033[Kbench: %s", line)
		p.pending = true
		return
	}
	fmt.Fprintf(p.out, "bench: %s\n", line)
}

// done replaces the status line with a permanent one.
func (p *progress) done(line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clearLocked()
	fmt.Fprintf(p.out, "bench: %s\n", line)
}

// logf writes a note on a line of its own.
func (p *progress) logf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clearLocked()
	fmt.Fprintf(p.out, "bench: "+format+"\n", args...)
}

func (p *progress) clearLocked() {
	if p.pending {
		fmt.Fprint(p.out, "\r\033[K")
		p.pending = false
	}
}

// roundLabel names a round in progress lines, for example
// "publish-json c=16 router round 2/3".
type roundLabel struct {
	scenario    string
	concurrency int
	side        side
	index       int
	rounds      int
	duration    time.Duration
}

func (l roundLabel) String() string {
	if l.index == 0 {
		return fmt.Sprintf("%s c=%d %s warm-up", l.scenario, l.concurrency, l.side)
	}
	return fmt.Sprintf("%s c=%d %s round %d/%d", l.scenario, l.concurrency, l.side, l.index, l.rounds)
}

// line summarizes a finished round for the progress output.
func (r roundResult) line() string {
	var errs int64
	for _, n := range r.errors {
		errs += n
	}
	return fmt.Sprintf("%.1f s, %d msgs, %.0f msg/s, p95 %.2f ms, %d errors",
		r.elapsed.Seconds(), r.messages(), r.rate(), milliseconds(percentile(r.latencies, 95)), errs)
}

func milliseconds(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
