package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// cleanupTimeout bounds each cleanup step that runs after an interrupt or a failure.
const cleanupTimeout = 60 * time.Second

// shutdownGrace is how long operations in flight at the deadline may take to finish
// before the round abandons them.
const shutdownGrace = 15 * time.Second

// environment is everything a run sets up once and shares between its scenarios.
type environment struct {
	cfg     config
	runID   string
	payload []byte

	control *amqp.Connection
	topo    topology
	creds   []credential
	direct  []*amqp.Connection // one per credential
	router  *routerClient

	routerPID int // 0 when the router process is not on this machine or not found
	brokerPID int // 0 when the broker process is not on this machine or not found

	progress *progress
	machine  machineInfo

	// lastRate is the previous round's rate of each side, for sizing the next prefill.
	lastRate [2]float64
}

// roundCtx is the round and its two deadlines, as the workers see them.
type roundCtx struct {
	soft context.Context // ends at the deadline, or early when a prefilled queue is drained
	hard context.Context // ends shutdownGrace later and abandons operations still waiting
	r    *round
}

// pause waits 20 ms after a failed operation, so that a router or broker that rejects
// every request at once does not turn the worker into a busy loop. The pause counts as
// time of the round, as a client's back-off would.
func (rc *roundCtx) pause() {
	select {
	case <-rc.soft.Done():
	case <-time.After(20 * time.Millisecond):
	}
}

// run sets up the broker objects, users and router, runs every scenario and writes the
// reports to stdout, with progress and notes on stderr. Whatever it set up is removed
// before it returns, also after an error or an interrupt.
func run(ctx context.Context, cfg config, stdout, stderr io.Writer) error {
	env := &environment{cfg: cfg, runID: newRunID(), payload: makePayload(cfg.size)}
	env.progress = newProgress(stderr)

	// Cleanup steps run in reverse order of setup when run returns.
	var cleanups []func()
	defer func() {
		for _, cleanup := range slices.Backward(cleanups) {
			cleanup()
		}
	}()

	tmp, err := os.MkdirTemp("", "rmqrouter-bench-")
	if err != nil {
		return fmt.Errorf("create temporary directory: %w", err)
	}
	cleanups = append(cleanups, func() { os.RemoveAll(tmp) })

	env.control, err = dialAs(cfg.amqp, credential{cfg.amqp.Username, cfg.amqp.Password}, "rmqrouter-bench control")
	if err != nil {
		return err
	}
	cleanups = append(cleanups, func() { env.control.Close() })

	env.topo, err = declareTopology(env.control, env.runID)
	if err != nil {
		return err
	}
	env.progress.logf("declared exchange and queue %s", env.topo.queue)
	cleanups = append(cleanups, func() {
		if err := deleteTopology(env.control, env.topo); err != nil {
			env.progress.logf("cleanup failed: %v", err)
		}
	})

	if err := env.setUpUsers(ctx, &cleanups); err != nil {
		return err
	}
	env.findBroker(ctx)
	env.machine = collectMachineInfo(ctx)
	if err := env.setUpRouter(ctx, tmp, &cleanups); err != nil {
		return err
	}

	for i, cred := range env.creds {
		conn, err := dialAs(cfg.amqp, cred, "rmqrouter-bench direct "+strconv.Itoa(i+1))
		if err != nil {
			return err
		}
		cleanups = append(cleanups, func() { conn.Close() })
		env.direct = append(env.direct, conn)
	}

	return env.runAll(ctx, stdout)
}

// setUpUsers creates the -users temporary users, or uses the credentials of -amqp-url.
func (env *environment) setUpUsers(ctx context.Context, cleanups *[]func()) error {
	cfg := env.cfg
	env.creds = []credential{{cfg.amqp.Username, cfg.amqp.Password}}
	if cfg.users == 0 {
		return nil
	}

	// Look rabbitmqctl up first, so that a missing one is reported as the cause and not
	// as a failed cleanup of users that were never created.
	if _, err := exec.LookPath("rabbitmqctl"); err != nil {
		return fmt.Errorf("-users needs rabbitmqctl on the PATH, run by a user allowed to add RabbitMQ users: %w", err)
	}
	env.progress.logf("creating %d users with rabbitmqctl", cfg.users)
	creds, users, err := createUsers(ctx, env.runID, cfg.users, cfg.amqp.Vhost)
	*cleanups = append(*cleanups, func() {
		cleanupCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if err := users.deleteAll(cleanupCtx); err != nil {
			env.progress.logf("cleanup failed, delete the users named bench-%s-* by hand: %v", env.runID, err)
		}
	})
	if err != nil {
		return fmt.Errorf("create users: %w", err)
	}
	env.creds = creds
	return nil
}

// findBroker sets the broker's process id when the broker runs on this machine.
func (env *environment) findBroker(ctx context.Context) {
	host := env.cfg.amqp.Host
	if !isLoopbackHost(host) {
		env.progress.logf("broker CPU is not reported: the broker %s is not on this machine", host)
		return
	}
	pid, err := findBrokerPID(ctx)
	if err != nil {
		env.progress.logf("broker CPU is not reported: %v", err)
		return
	}
	env.brokerPID = pid
}

// setUpRouter starts the harness's own router unless -router-url or -direct-only is given,
// and creates the HTTP client for it.
func (env *environment) setUpRouter(ctx context.Context, tmp string, cleanups *[]func()) error {
	cfg := env.cfg
	routerURL := cfg.routerURL
	switch {
	case cfg.directOnly:
		return nil
	case routerURL == "":
		proc, err := env.startOwnRouter(ctx, tmp)
		if err != nil {
			return err
		}
		*cleanups = append(*cleanups, func() {
			if err := proc.stop(30 * time.Second); err != nil {
				env.progress.logf("router stop: %v", err)
			}
		})
		routerURL, env.routerPID = proc.url, proc.pid()
	default:
		if err := waitReady(ctx, routerURL, 5*time.Second, nil); err != nil {
			return fmt.Errorf("%w (start the router first, or correct -router-url)", err)
		}
		env.routerPID = locateRouter(routerURL, env.progress.logf)
	}

	maxWorkers := cfg.concurrency
	if cfg.sweep {
		maxWorkers = slices.Max(cfg.sweepLevels)
	}
	vhostHeader := ""
	if cfg.amqp.Vhost != "/" {
		vhostHeader = cfg.amqp.Vhost
	}
	client, err := newRouterClient(routerURL, maxWorkers+16, cfg.httpTimeout, vhostHeader)
	if err != nil {
		return err
	}
	*cleanups = append(*cleanups, client.close)
	env.router = client
	return nil
}

func (env *environment) startOwnRouter(ctx context.Context, tmp string) (*routerProcess, error) {
	bin := env.cfg.routerBin
	if bin == "" {
		env.progress.logf("building ./cmd/rmqrouter")
		var err error
		if bin, err = buildRouter(ctx, tmp); err != nil {
			return nil, err
		}
	}
	proc, err := startRouter(ctx, bin, env.cfg.amqpURL, env.cfg.routerFlags, tmp, 60*time.Second)
	if err != nil {
		return nil, err
	}
	env.progress.logf("router started at %s, pid %d", proc.url, proc.pid())
	return proc, nil
}

// locateRouter returns the process id of the router at routerURL, so its CPU and memory
// can be reported. It returns 0 when the router is not on this machine or not found.
func locateRouter(routerURL string, logf func(string, ...any)) int {
	host, port, err := splitHostPort(routerURL)
	if err != nil || !isLoopbackHost(host) {
		logf("router CPU and memory are not reported: %s is not on this machine", routerURL)
		return 0
	}
	pid, err := findListenerPID(port)
	if err != nil {
		logf("router CPU and memory are not reported: %v", err)
		return 0
	}
	return pid
}

// runAll runs every scenario at every concurrency level and writes the reports.
func (env *environment) runAll(ctx context.Context, stdout io.Writer) (err error) {
	cfg := env.cfg
	levels := []int{cfg.concurrency}
	if cfg.sweep {
		levels = cfg.sweepLevels
	}

	var all [][]scenarioResult
	rep := newReporter(stdout, cfg, env.machine)
	defer func() {
		if cfg.plotPath != "" && len(all) > 0 {
			if perr := writePlotFile(cfg.plotPath, cfg.sweep, cfg.directOnly, all); perr != nil {
				env.progress.logf("plot not written: %v", perr)
				if err == nil {
					err = fmt.Errorf("write plot: %w", perr)
				}
			} else {
				env.progress.logf("plot written to %s", cfg.plotPath)
			}
		}
	}()

	var failed []string
	for _, name := range cfg.scenarios {
		s, err := scenarioByName(name)
		if err != nil {
			return err
		}
		var results []scenarioResult
		for _, concurrency := range levels {
			res, err := env.runScenario(ctx, s, concurrency)
			if ctx.Err() != nil {
				return errInterrupted
			}
			if err != nil {
				// A scenario the router cannot serve, for example an endpoint it lacks,
				// is reported and the run goes on with the next scenario.
				env.progress.logf("scenario %s at concurrency %d failed: %v", name, concurrency, err)
				failed = append(failed, fmt.Sprintf("%s c=%d", name, concurrency))
				break
			}
			results = append(results, res)
			if err := rep.level(res); err != nil {
				return err
			}
		}
		if len(results) == 0 {
			continue
		}
		all = append(all, results)
		if err := rep.scenario(results); err != nil {
			return err
		}
	}
	if err := rep.finish(); err != nil {
		return err
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d scenario run(s) failed: %s", len(failed), strings.Join(failed, ", "))
	}
	return nil
}

// errInterrupted is returned after SIGINT or SIGTERM stopped the run.
var errInterrupted = errors.New("interrupted")

// runScenario runs an unmeasured warm-up round of each side and then cfg.rounds measured
// rounds of each side in the order router, direct, direct, router, router, direct, ... so
// that a slow drift of the machine's speed affects both sides alike.
func (env *environment) runScenario(ctx context.Context, s scenario, concurrency int) (scenarioResult, error) {
	cfg := env.cfg
	env.lastRate = [2]float64{}

	sides := []side{sideRouter, sideDirect}
	if cfg.directOnly {
		sides = []side{sideDirect}
	}
	if cfg.warmup > 0 {
		for _, sd := range sides {
			if _, err := env.runRound(ctx, s, sd, 0, concurrency, cfg.warmup); err != nil {
				return scenarioResult{}, err
			}
		}
	}

	var measured [2][]roundResult
	for i := 1; i <= cfg.rounds; i++ {
		order := slices.Clone(sides)
		if i%2 == 0 {
			slices.Reverse(order)
		}
		for _, sd := range order {
			res, err := env.runRound(ctx, s, sd, i, concurrency, cfg.duration)
			if err != nil {
				return scenarioResult{}, err
			}
			measured[sd] = append(measured[sd], res)
		}
	}

	return scenarioResult{
		Scenario:    s.name,
		Concurrency: concurrency,
		Workers:     s.workerCount(concurrency),
		Size:        cfg.size,
		Rounds:      cfg.rounds,
		Duration:    cfg.duration,
		Users:       len(env.creds),
		Router:      summarize(measured[sideRouter]),
		Direct:      summarize(measured[sideDirect]),
	}, nil
}

// prefillCount sizes the queue for a fetch-ack round. It is -prefill if set, else 1.5
// times the previous round's rate of the same side times the round length plus 1000, so
// the queue normally lasts the whole round. Without a previous round it is 2000 per
// second of the round. A round that drains its queue early ends early.
func (env *environment) prefillCount(sd side, duration time.Duration) int {
	cfg := env.cfg
	if cfg.prefill > 0 {
		return cfg.prefill
	}

	n := int(math.Ceil(2000 * duration.Seconds()))
	if rate := env.lastRate[sd]; rate > 0 {
		n = int(math.Ceil(1.5*rate*duration.Seconds())) + 1000
	}
	return max(1, min(max(n, 1000), cfg.prefillMax))
}

// runRound runs one round of s on side sd. Index 0 is a warm-up round.
func (env *environment) runRound(ctx context.Context, s scenario, sd side, index, concurrency int, duration time.Duration) (roundResult, error) {
	workerCount := s.workerCount(concurrency)
	r := newRound(sd, index, workerCount)
	label := roundLabel{scenario: s.name, concurrency: concurrency, side: sd, index: index, rounds: env.cfg.rounds, duration: duration}

	if err := purgeQueue(env.control, env.topo); err != nil {
		return roundResult{}, err
	}
	if s.prefill {
		n := env.prefillCount(sd, duration)
		env.progress.status(label.String() + fmt.Sprintf(": putting %d messages in the queue", n))
		if err := prefillQueue(ctx, env.control, env.topo, env.message("text/plain"), n); err != nil {
			return roundResult{}, err
		}
		r.consumeTarget = int64(n)
	}

	var returned atomic.Int64 // messages the broker returned to direct publishers
	workers := make([]worker, 0, workerCount)
	closeWorkers := func() {
		for _, w := range workers {
			w.close()
		}
	}
	for i := range workerCount {
		w, err := env.newWorker(s, sd, i, concurrency, &returned)
		if err != nil {
			closeWorkers()
			return roundResult{}, fmt.Errorf("%s: set up worker %d: %w", label, i+1, err)
		}
		workers = append(workers, w)
	}

	before := env.sampleCPU()
	r.start = time.Now()
	soft, cancelSoft := context.WithDeadline(ctx, r.start.Add(duration))
	hard, cancelHard := context.WithDeadline(ctx, r.start.Add(duration+shutdownGrace))
	r.finish = cancelSoft
	rc := &roundCtx{soft: soft, hard: hard, r: r}

	stopMonitor := env.monitor(r, label, duration)
	var wg sync.WaitGroup
	for i, w := range workers {
		wg.Go(func() {
			st := r.workers[i]
			for soft.Err() == nil {
				w.step(rc, st)
			}
		})
	}
	wg.Wait()
	rssMax := stopMonitor()
	after := env.sampleCPU()
	cancelSoft()
	cancelHard()

	closeWorkers()
	res := r.merge(duration)
	if n := returned.Load(); n > 0 {
		res.published -= n
		res.errors["amqp returned (unroutable)"] += n
	}
	env.applyCPU(&res, before, after)
	res.routerRSS = rssMax
	env.lastRate[sd] = res.rate()

	if ctx.Err() != nil {
		env.progress.done(label.String() + ": interrupted, cleaning up")
		return roundResult{}, errInterrupted
	}
	env.progress.done(label.String() + ": " + res.line())
	if err := purgeQueue(env.control, env.topo); err != nil {
		return roundResult{}, err
	}
	return res, nil
}

// cpuSample is the CPU ticks of the router, the broker and this process at one moment.
// An ok field is false for a process that could not be read.
type cpuSample struct {
	router, broker, harness       cpuTicks
	routerOK, brokerOK, harnessOK bool
}

func (env *environment) sampleCPU() cpuSample {
	var s cpuSample
	var err error
	if env.routerPID > 0 {
		s.router, err = readCPUTicks(env.routerPID)
		s.routerOK = err == nil
	}
	if env.brokerPID > 0 {
		s.broker, err = readCPUTicks(env.brokerPID)
		s.brokerOK = err == nil
	}
	s.harness, err = readCPUTicks(os.Getpid())
	s.harnessOK = err == nil
	return s
}

// applyCPU stores the CPU seconds used between before and after. Router CPU is recorded
// for router rounds only, since in direct rounds the router is idle.
func (env *environment) applyCPU(res *roundResult, before, after cpuSample) {
	res.routerCPU, res.brokerCPU = math.NaN(), math.NaN()
	if res.side == sideRouter && before.routerOK && after.routerOK {
		res.routerCPU = ticksToSeconds(after.router.total() - before.router.total())
	}
	if before.brokerOK && after.brokerOK {
		res.brokerCPU = ticksToSeconds(after.broker.total() - before.broker.total())
	}
	if before.harnessOK && after.harnessOK {
		res.harnessCPU = ticksToSeconds(after.harness.total() - before.harness.total())
	}
}

// monitor starts the goroutine that updates the progress line every second and samples
// the router's resident set size every 250 ms. The returned function stops it and returns
// the largest sample, or -1 if none could be read.
func (env *environment) monitor(r *round, label roundLabel, duration time.Duration) func() int64 {
	stop := make(chan struct{})
	result := make(chan int64, 1)
	samplePID := 0
	if r.side == sideRouter {
		samplePID = env.routerPID
	}

	go func() {
		rssMax := int64(-1)
		sample := func() {
			if samplePID == 0 {
				return
			}
			if usage, err := readMemoryUsage(samplePID); err == nil {
				rssMax = max(rssMax, usage.rss)
			}
		}
		ticker := time.NewTicker(250 * time.Millisecond)
		defer ticker.Stop()
		for tick := 1; ; tick++ {
			select {
			case <-stop:
				sample()
				result <- rssMax
				return
			case <-ticker.C:
				sample()
				if tick%4 == 0 {
					elapsed := time.Since(r.start)
					rate := float64(r.messages.Load()) / elapsed.Seconds()
					env.progress.status(fmt.Sprintf("%s: %.0f/%.0f s, %d msgs, %.0f msg/s, %d errors",
						label, elapsed.Seconds(), duration.Seconds(), r.messages.Load(), rate, r.errorCount.Load()))
				}
			}
		}
	}()

	return func() int64 {
		close(stop)
		return <-result
	}
}

// makePayload returns size bytes of printable ASCII, so the same bytes are a valid JSON
// string payload for the router and a raw body for the direct side.
func makePayload(size int) []byte {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	b := make([]byte, size)
	for i := range b {
		b[i] = alphabet[(i*7+i/len(alphabet))%len(alphabet)]
	}
	return b
}
