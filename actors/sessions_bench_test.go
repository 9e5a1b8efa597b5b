package actors_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rmqrouter/rmqrouter/actors"
	"github.com/rmqrouter/rmqrouter/internal/testenv"
	"github.com/rmqrouter/rmqrouter/metrics"
	"github.com/rmqrouter/rmqrouter/security"
	"github.com/rmqrouter/rmqrouter/transport"
)

// BenchmarkIdleSessions opens 1,000 explicit sessions on one queue of the
// test broker and reports the router's resident memory per idle session
// (VmRSS growth after a GC), the Go heap per session, and goroutines per
// session. The broker's own memory is not included. Run it with
//
//	go test -run '^$' -bench BenchmarkIdleSessions -benchtime 1x ./actors/
func BenchmarkIdleSessions(b *testing.B) {
	const sessions = 1000
	broker := testenv.NewBroker(b)
	queue := broker.Queue(testenv.Name("bench-idle"))
	parsed, err := transport.ParseURL(testenv.AMQPURL())
	if err != nil {
		b.Fatal(err)
	}
	sys := actors.NewSystem(actors.Config{
		Endpoints:          []transport.Endpoint{parsed.Endpoint},
		DefaultVhost:       parsed.Vhost,
		MaxSessions:        sessions,
		MaxSessionsPerUser: sessions,
	}, slog.New(slog.NewTextHandler(io.Discard, nil)), metrics.New())
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		sys.Shutdown(ctx)
	}()
	creds, err := security.NewStore(1).NewCredentials(parsed.User, []byte(parsed.Password))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()

	// The first session opens the connection and its publisher; the
	// measurement starts after them.
	warm, err := sys.OpenSession(ctx, creds, "", actors.SessionOptions{Queue: queue})
	if err != nil {
		b.Fatalf("open session: %v", err)
	}
	if err := sys.CloseSession(ctx, creds, warm.ID); err != nil {
		b.Fatalf("close session: %v", err)
	}

	for i := 0; i < b.N; i++ {
		rssBefore, heapBefore := settledMemory(b)
		goroutinesBefore := runtime.NumGoroutine()

		ids := openSessions(b, sys, creds, queue, sessions)

		rssAfter, heapAfter := settledMemory(b)
		goroutines := runtime.NumGoroutine() - goroutinesBefore
		b.ReportMetric(float64(rssAfter-rssBefore)/sessions, "B/session")
		b.ReportMetric(float64(heapAfter-heapBefore)/sessions, "heap-B/session")
		b.ReportMetric(float64(goroutines)/sessions, "goroutines/session")

		for _, id := range ids {
			if err := sys.CloseSession(ctx, creds, id); err != nil {
				b.Fatalf("close session: %v", err)
			}
		}
	}
}

// openSessions opens n sessions on queue from 8 goroutines and returns
// their ids.
func openSessions(b *testing.B, sys *actors.System, creds *security.Credentials, queue string, n int) []string {
	ids := make([]string, n)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	const workers = 8
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < n; i += workers {
				info, err := sys.OpenSession(context.Background(), creds, "", actors.SessionOptions{Queue: queue})
				if err != nil {
					errs <- err
					return
				}
				ids[i] = info.ID
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatalf("open session: %v", err)
	}
	return ids
}

// settledMemory runs the garbage collector, returns freed memory to the OS
// and reads VmRSS from /proc/self/status and the Go heap in use, in bytes.
func settledMemory(b *testing.B) (rss, heap uint64) {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatalf("read /proc/self/status: %v", err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if value, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kib, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(value), "kB")), 10, 64)
			if err != nil {
				b.Fatalf("parse VmRSS %q: %v", value, err)
			}
			return kib * 1024, ms.HeapInuse
		}
	}
	b.Fatal("/proc/self/status has no VmRSS line")
	return 0, 0
}
