package main

import (
	"math"
	"slices"
	"sync/atomic"
	"time"
)

// percentile returns the p-th percentile (0 < p ≤ 100) of sorted by the nearest-rank
// method: the smallest sample such that at least p percent of the samples are less than or
// equal to it. It returns 0 for an empty slice and the minimum for p ≤ 0.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	if p <= 0 {
		return sorted[0]
	}
	if p >= 100 {
		return sorted[len(sorted)-1]
	}

	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	if rank < 1 {
		rank = 1
	}
	return sorted[rank-1]
}

// side is the client path a round measures.
type side int

const (
	sideRouter side = iota
	sideDirect
)

func (s side) String() string {
	if s == sideRouter {
		return "router"
	}
	return "direct"
}

// workerStats is the figures of one worker goroutine. Only that goroutine writes it while
// the round runs.
type workerStats struct {
	latencies  []time.Duration
	published  int64
	consumed   int64
	emptyPolls int64
	errors     map[string]int64
	lastDone   time.Time
}

// round is the shared state of one timed round: live counters for the progress line and
// the per-worker figures merged when the round ends.
type round struct {
	side  side
	index int // 0 is the warm-up round
	start time.Time

	messages   atomic.Int64
	errorCount atomic.Int64
	consumed   atomic.Int64

	// consumeTarget, when positive, is the number of prefilled messages: the round ends as
	// soon as that many have been acknowledged.
	consumeTarget int64
	finish        func()

	workers []*workerStats
}

func newRound(s side, index, workers int) *round {
	r := &round{side: s, index: index, workers: make([]*workerStats, workers)}
	for i := range r.workers {
		r.workers[i] = &workerStats{errors: map[string]int64{}}
	}
	return r
}

// recordSuccess records one completed operation that began at began and moved the given
// numbers of messages in each direction.
func (r *round) recordSuccess(w *workerStats, began time.Time, published, consumed int) {
	now := time.Now()
	w.latencies = append(w.latencies, now.Sub(began))
	w.published += int64(published)
	w.consumed += int64(consumed)
	w.lastDone = now
	r.messages.Add(int64(published + consumed))

	if consumed > 0 {
		total := r.consumed.Add(int64(consumed))
		if r.consumeTarget > 0 && total >= r.consumeTarget && r.finish != nil {
			r.finish()
		}
	}
}

// recordError counts a failed operation under kind, for example "429 too_many_in_flight".
func (r *round) recordError(w *workerStats, kind string) {
	w.errors[kind]++
	r.errorCount.Add(1)
}

// roundResult is the merged outcome of one round.
type roundResult struct {
	side       side
	index      int
	published  int64
	consumed   int64
	emptyPolls int64
	elapsed    time.Duration
	latencies  []time.Duration // sorted
	errors     map[string]int64

	routerCPU  float64 // seconds, or NaN when the router process is not known
	brokerCPU  float64 // seconds, or NaN when the broker process is not known
	harnessCPU float64 // seconds of this process
	routerRSS  int64   // maximum resident set size sampled during the round in bytes, or -1
}

func (r roundResult) messages() int64 { return r.published + r.consumed }

func (r roundResult) rate() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.messages()) / r.elapsed.Seconds()
}

// merge combines the worker figures. The elapsed time runs from the round start to the
// last completed operation. So a round that drained its queue early is not charged for
// the idle tail, and operations that finished after the deadline are charged.
func (r *round) merge(deadline time.Duration) roundResult {
	res := roundResult{side: r.side, index: r.index, errors: map[string]int64{}}
	var last time.Time
	for _, w := range r.workers {
		res.latencies = append(res.latencies, w.latencies...)
		res.published += w.published
		res.consumed += w.consumed
		res.emptyPolls += w.emptyPolls
		for k, v := range w.errors {
			res.errors[k] += v
		}
		if w.lastDone.After(last) {
			last = w.lastDone
		}
	}
	slices.Sort(res.latencies)

	res.elapsed = deadline
	if !last.IsZero() {
		res.elapsed = last.Sub(r.start)
	}
	return res
}

// sideSummary is the aggregate of the measured rounds of one side.
type sideSummary struct {
	Published  int64
	Consumed   int64
	Elapsed    time.Duration
	Rate       float64 // messages per second over all rounds
	RoundRates []float64
	P50        time.Duration
	P95        time.Duration
	P99        time.Duration
	Errors     map[string]int64
	RouterCPU  float64 // NaN when unknown
	BrokerCPU  float64 // NaN when unknown
	HarnessCPU float64
	RouterRSS  int64 // -1 when unknown
}

func (s sideSummary) Messages() int64 { return s.Published + s.Consumed }

func (s sideSummary) ErrorTotal() int64 {
	var n int64
	for _, v := range s.Errors {
		n += v
	}
	return n
}

// summarize merges rounds of one side: the rate is total messages over total elapsed time,
// and the percentiles are taken over the latencies of all rounds together.
func summarize(rounds []roundResult) sideSummary {
	s := sideSummary{Errors: map[string]int64{}, RouterRSS: -1}
	var all []time.Duration
	for i, r := range rounds {
		s.Published += r.published
		s.Consumed += r.consumed
		s.Elapsed += r.elapsed
		s.RoundRates = append(s.RoundRates, r.rate())
		all = append(all, r.latencies...)
		for k, v := range r.errors {
			s.Errors[k] += v
		}
		if i == 0 {
			s.RouterCPU, s.BrokerCPU = r.routerCPU, r.brokerCPU
		} else {
			s.RouterCPU += r.routerCPU
			s.BrokerCPU += r.brokerCPU
		}
		s.HarnessCPU += r.harnessCPU
		s.RouterRSS = max(s.RouterRSS, r.routerRSS)
	}
	if len(rounds) == 0 {
		s.RouterCPU, s.BrokerCPU = math.NaN(), math.NaN()
	}

	slices.Sort(all)
	s.P50 = percentile(all, 50)
	s.P95 = percentile(all, 95)
	s.P99 = percentile(all, 99)
	if s.Elapsed > 0 {
		s.Rate = float64(s.Messages()) / s.Elapsed.Seconds()
	}
	return s
}
