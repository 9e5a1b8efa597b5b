package main

import (
	"math"
	"testing"
	"time"
)

func durations(values ...int) []time.Duration {
	out := make([]time.Duration, len(values))
	for i, v := range values {
		out[i] = time.Duration(v) * time.Millisecond
	}
	return out
}

func TestPercentileNearestRank(t *testing.T) {
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}

	cases := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"single p50", durations(7), 50, 7 * time.Millisecond},
		{"single p99", durations(7), 99, 7 * time.Millisecond},
		{"hundred p50", hundred, 50, 50 * time.Millisecond},
		{"hundred p95", hundred, 95, 95 * time.Millisecond},
		{"hundred p99", hundred, 99, 99 * time.Millisecond},
		{"hundred p100", hundred, 100, 100 * time.Millisecond},
		{"hundred p0 is min", hundred, 0, 1 * time.Millisecond},
		{"four p50", durations(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"four p51", durations(1, 2, 3, 4), 51, 3 * time.Millisecond},
		{"four p95", durations(1, 2, 3, 4), 95, 4 * time.Millisecond},
		{"ten p95 rounds rank up", durations(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 95, 10 * time.Millisecond},
		{"ten p90", durations(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 90, 9 * time.Millisecond},
		{"above 100 is max", durations(1, 2, 3), 150, 3 * time.Millisecond},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := percentile(c.sorted, c.p); got != c.want {
				t.Errorf("percentile(%v, %v) = %v, want %v", c.sorted, c.p, got, c.want)
			}
		})
	}
}

func TestRoundMergeUsesLastCompletion(t *testing.T) {
	r := newRound(sideRouter, 1, 2)
	r.start = time.Now()
	began := r.start

	r.recordSuccess(r.workers[0], began, 1, 0)
	r.recordSuccess(r.workers[1], began, 0, 3)
	r.recordError(r.workers[1], "429 too_many_in_flight")
	r.workers[0].lastDone = r.start.Add(2 * time.Second)
	r.workers[1].lastDone = r.start.Add(1500 * time.Millisecond)

	res := r.merge(10 * time.Second)
	if res.elapsed != 2*time.Second {
		t.Errorf("elapsed = %v, want 2s (the last completion)", res.elapsed)
	}
	if res.published != 1 || res.consumed != 3 {
		t.Errorf("published, consumed = %d, %d, want 1, 3", res.published, res.consumed)
	}
	if res.errors["429 too_many_in_flight"] != 1 {
		t.Errorf("errors = %v, want one 429 too_many_in_flight", res.errors)
	}
	if len(res.latencies) != 2 {
		t.Errorf("got %d latencies, want 2", len(res.latencies))
	}
	if got := r.messages.Load(); got != 4 {
		t.Errorf("live message counter = %d, want 4", got)
	}
	if got := r.errorCount.Load(); got != 1 {
		t.Errorf("live error counter = %d, want 1", got)
	}
}

func TestRoundMergeWithoutCompletionUsesDeadline(t *testing.T) {
	r := newRound(sideDirect, 1, 1)
	r.start = time.Now()
	res := r.merge(3 * time.Second)
	if res.elapsed != 3*time.Second {
		t.Errorf("elapsed = %v, want the 3s deadline", res.elapsed)
	}
	if res.rate() != 0 {
		t.Errorf("rate = %v, want 0", res.rate())
	}
}

func TestRoundFinishesAtConsumeTarget(t *testing.T) {
	r := newRound(sideDirect, 1, 1)
	finished := 0
	r.finish = func() { finished++ }
	r.consumeTarget = 5

	r.recordSuccess(r.workers[0], time.Now(), 0, 4)
	if finished != 0 {
		t.Fatalf("finish called after 4 of 5 messages")
	}
	r.recordSuccess(r.workers[0], time.Now(), 0, 1)
	if finished != 1 {
		t.Errorf("finish called %d times after 5 of 5 messages, want 1", finished)
	}
}

func TestSummarizeAcrossRounds(t *testing.T) {
	rounds := []roundResult{
		{published: 100, elapsed: time.Second, latencies: durations(1, 2, 3), errors: map[string]int64{"x": 1},
			routerCPU: 0.5, brokerCPU: 1, harnessCPU: 0.25, routerRSS: 10},
		{published: 300, elapsed: time.Second, latencies: durations(4, 5), errors: map[string]int64{"x": 2, "y": 1},
			routerCPU: 0.5, brokerCPU: 2, harnessCPU: 0.25, routerRSS: 30},
	}
	s := summarize(rounds)

	if s.Rate != 200 {
		t.Errorf("rate = %v, want 200 (400 messages in 2 s)", s.Rate)
	}
	if len(s.RoundRates) != 2 || s.RoundRates[0] != 100 || s.RoundRates[1] != 300 {
		t.Errorf("round rates = %v, want [100 300]", s.RoundRates)
	}
	if s.P50 != 3*time.Millisecond {
		t.Errorf("p50 = %v, want 3ms over the merged samples", s.P50)
	}
	if s.P99 != 5*time.Millisecond {
		t.Errorf("p99 = %v, want 5ms", s.P99)
	}
	if s.Errors["x"] != 3 || s.Errors["y"] != 1 {
		t.Errorf("errors = %v, want x:3 y:1", s.Errors)
	}
	if s.RouterCPU != 1 || s.BrokerCPU != 3 || s.HarnessCPU != 0.5 {
		t.Errorf("CPU = %v, %v, %v, want 1, 3, 0.5", s.RouterCPU, s.BrokerCPU, s.HarnessCPU)
	}
	if s.RouterRSS != 30 {
		t.Errorf("router RSS = %d, want the maximum 30", s.RouterRSS)
	}
}

func TestSummarizeUnknownCPUStaysNaN(t *testing.T) {
	s := summarize([]roundResult{
		{published: 1, elapsed: time.Second, routerCPU: math.NaN(), brokerCPU: 1, routerRSS: -1},
		{published: 1, elapsed: time.Second, routerCPU: math.NaN(), brokerCPU: 1, routerRSS: -1},
	})
	if !math.IsNaN(s.RouterCPU) {
		t.Errorf("router CPU = %v, want NaN when no round could read it", s.RouterCPU)
	}
	if s.RouterRSS != -1 {
		t.Errorf("router RSS = %d, want -1", s.RouterRSS)
	}

	empty := summarize(nil)
	if !math.IsNaN(empty.BrokerCPU) || empty.Rate != 0 {
		t.Errorf("summary of no rounds = %+v, want NaN broker CPU and zero rate", empty)
	}
}
