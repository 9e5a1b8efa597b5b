package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
)

// testAMQPURL returns the broker of the integration tests, skipping the test when it is
// not reachable or with -short.
func testAMQPURL(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a RabbitMQ broker; skipped with -short")
	}
	url := os.Getenv("RMQROUTER_TEST_AMQP_URL")
	if url == "" {
		url = "amqp://guest:guest@127.0.0.1:5672/"
	}
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Skipf("no RabbitMQ at RMQROUTER_TEST_AMQP_URL: %v", err)
	}
	_ = conn.Close()
	return url
}

// acceptingRouter responds to every request of the API as a healthy router would, but
// without a broker behind it. Publishes are accepted, and sessions exist but stay empty.
func acceptingRouter(requests *atomic.Int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		switch {
		case r.Method == "GET" && r.URL.Path == "/health/ready":
			fmt.Fprint(w, `{"status":"ready"}`)
		case r.Method == "POST" && r.URL.Path == "/v1/publish/batch":
			w.WriteHeader(207)
			fmt.Fprint(w, `{"results":[`+strings.Repeat(`{"status":"accepted"},`, 9)+`{"status":"accepted"}]}`)
		case r.Method == "POST" && strings.HasSuffix(r.URL.Path, "/publish"):
			w.WriteHeader(202)
			fmt.Fprint(w, `{"status":"accepted"}`)
		case r.Method == "POST" && r.URL.Path == "/v1/sessions":
			w.WriteHeader(201)
			fmt.Fprint(w, `{"session_id":"s"}`)
		case r.Method == "GET" && strings.HasSuffix(r.URL.Path, "/messages"):
			fmt.Fprint(w, `{"messages":[]}`)
		case r.Method == "DELETE":
			w.WriteHeader(204)
		default:
			w.WriteHeader(404)
		}
	})
}

// brokerObjects lists the queues and exchanges whose name contains "bench.".
func brokerObjects(t *testing.T) string {
	t.Helper()
	var names []string
	for _, what := range []string{"list_queues", "list_exchanges"} {
		out, err := exec.Command("rabbitmqctl", what, "name", "--quiet").Output()
		if err != nil {
			t.Logf("rabbitmqctl %s: %v; the cleanup check is skipped", what, err)
			return ""
		}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, "bench.") {
				names = append(names, strings.TrimSpace(line))
			}
		}
	}
	return strings.Join(names, ",")
}

func TestRunAgainstFakeRouter(t *testing.T) {
	amqpURL := testAMQPURL(t)
	before := brokerObjects(t)

	var requests atomic.Int64
	server := httptest.NewServer(acceptingRouter(&requests))
	defer server.Close()

	cfg, err := parseConfig([]string{
		"-amqp-url", amqpURL, "-router-url", server.URL, "-scenario", "all",
		"-duration", "300ms", "-warmup", "0s", "-rounds", "2", "-concurrency", "2",
		"-size", "128", "-batch-size", "10", "-prefill", "500", "-format", "json",
	}, io.Discard)
	if err != nil {
		t.Fatalf("parseConfig: %v", err)
	}
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), cfg, &stdout, &stderr); err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, stderr.String())
	}

	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != len(scenarioNames) {
		t.Fatalf("got %d JSON lines, want one per scenario (%d):\n%s", len(lines), len(scenarioNames), stdout.String())
	}
	for i, line := range lines {
		var rep jsonReport
		if err := json.Unmarshal([]byte(line), &rep); err != nil {
			t.Fatalf("line %d is not a report: %v", i+1, err)
		}
		if rep.Scenario != scenarioNames[i] {
			t.Errorf("line %d scenario = %s, want %s", i+1, rep.Scenario, scenarioNames[i])
		}
		if len(rep.RouterRoundMsgsPerSec) != 2 || len(rep.DirectRoundMsgsPerSec) != 2 {
			t.Errorf("%s: rounds = %v and %v, want 2 per side", rep.Scenario, rep.RouterRoundMsgsPerSec, rep.DirectRoundMsgsPerSec)
		}
		if rep.DirectMsgsPerSec <= 0 {
			t.Errorf("%s: direct msg/s = %v, want positive", rep.Scenario, rep.DirectMsgsPerSec)
		}
		if len(rep.DirectErrors) != 0 {
			t.Errorf("%s: direct errors = %v, want none", rep.Scenario, rep.DirectErrors)
		}
		if len(rep.RouterErrors) != 0 {
			t.Errorf("%s: router errors = %v, want none", rep.Scenario, rep.RouterErrors)
		}
		// The fake router runs in this test process, which the harness finds by its
		// listening socket, so router CPU and memory are measured.
		if rep.RouterRSSBytes == nil || *rep.RouterRSSBytes <= 0 {
			t.Errorf("%s: router_rss_bytes = %v, want the test process's RSS", rep.Scenario, rep.RouterRSSBytes)
		}
		if rep.RouterCPUSeconds == nil {
			t.Errorf("%s: router_cpu_seconds is null, want a value", rep.Scenario)
		}
	}

	var fetchAck jsonReport
	_ = json.Unmarshal([]byte(lines[3]), &fetchAck)
	if fetchAck.DirectConsumed == 0 {
		t.Errorf("fetch-ack: direct consumed nothing from the prefilled queue")
	}
	if fetchAck.RouterPublished+fetchAck.RouterConsumed != 0 {
		t.Errorf("fetch-ack: the fake router has no messages, but %d were counted", fetchAck.RouterPublished+fetchAck.RouterConsumed)
	}
	if requests.Load() == 0 {
		t.Errorf("the fake router received no requests")
	}
	if after := brokerObjects(t); after != before {
		t.Errorf("broker objects after the run = %q, want them as before (%q)", after, before)
	}
}

func TestRunFailsWithoutRouter(t *testing.T) {
	amqpURL := testAMQPURL(t)
	before := brokerObjects(t)

	// A port that was just free on loopback, so no server listens there.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	cfg, err := parseConfig([]string{"-amqp-url", amqpURL, "-router-url", "http://" + addr, "-duration", "300ms", "-warmup", "0s", "-rounds", "1"}, io.Discard)
	if err != nil {
		t.Fatalf("parseConfig: %v", err)
	}
	var stdout, stderr bytes.Buffer
	err = run(context.Background(), cfg, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "not ready") {
		t.Fatalf("run = %v, want an error that the router is not ready", err)
	}
	if stdout.Len() != 0 {
		t.Errorf("a report was written without a router:\n%s", stdout.String())
	}
	if after := brokerObjects(t); after != before {
		t.Errorf("broker objects after the run = %q, want them as before (%q)", after, before)
	}
}

func TestSetUpUsersWithoutRabbitmqctl(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	var stderr bytes.Buffer
	env := &environment{cfg: config{users: 2}, runID: "test", progress: newProgress(&stderr)}
	var cleanups []func()
	err := env.setUpUsers(context.Background(), &cleanups)
	if err == nil || !strings.Contains(err.Error(), "-users needs rabbitmqctl") {
		t.Fatalf("setUpUsers = %v, want an error that rabbitmqctl is missing", err)
	}
	for _, cleanup := range cleanups {
		cleanup()
	}
	if strings.Contains(stderr.String(), "cleanup failed") {
		t.Errorf("a cleanup of users that were never created failed:\n%s", stderr.String())
	}
}
