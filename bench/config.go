package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// scenarioNames lists the scenarios in the order "all" runs them.
var scenarioNames = []string{"publish-json", "publish-raw", "publish-batch", "fetch-ack", "mixed"}

// config is the parsed command line.
type config struct {
	commandLine string // as the user typed it, for the reports

	scenarios   []string
	duration    time.Duration
	warmup      time.Duration
	concurrency int
	size        int
	users       int
	rounds      int
	format      string
	plotPath    string
	sweep       bool
	sweepLevels []int

	directOnly  bool
	directIDs   bool
	routerURL   string
	routerBin   string
	routerFlags []string
	amqpURL     string
	amqp        amqp.URI

	batchSize   int
	prefetch    int
	fetchMax    int
	fetchWait   int
	prefill     int
	prefillMax  int
	httpTimeout time.Duration
}

const usageText = `Usage: go run ./bench [flags]

Measures rmqrouter against direct amqp091-go clients on the same RabbitMQ broker.
Each round of a scenario runs once through the router and once directly, in the order
router, direct, direct, router, ... so that drift over time affects both sides.

Flags:
`

// parseConfig parses and checks args. After -h it returns flag.ErrHelp.
func parseConfig(args []string, output io.Writer) (config, error) {
	var cfg config
	var scenario, levels string

	// On a bad flag the flag package would print the error and the whole usage. Its
	// output is discarded, so main prints the error as one line and only -h prints usage.
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}

	fs.StringVar(&scenario, "scenario", "publish-json", "comma-separated scenarios to run, or all: "+strings.Join(scenarioNames, ", "))
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "length of one measured round")
	fs.DurationVar(&cfg.warmup, "warmup", 2*time.Second, "length of the unmeasured warm-up round of each side before the first measured round; 0 disables it")
	fs.IntVar(&cfg.concurrency, "concurrency", 16, "number of concurrent workers on each side")
	fs.IntVar(&cfg.size, "size", 256, "message body size in bytes")
	fs.IntVar(&cfg.users, "users", 0, "number of temporary RabbitMQ users to create with rabbitmqctl and spread the workers over; 0 uses the credentials of -amqp-url")
	fs.IntVar(&cfg.rounds, "rounds", 3, "number of measured rounds of each side")
	fs.StringVar(&cfg.format, "format", "text", "report format: text, json (one JSON object per scenario, one line each) or markdown")
	fs.StringVar(&cfg.plotPath, "plot", "", "write an SVG chart of the results to this file")
	fs.BoolVar(&cfg.sweep, "sweep", false, "run each scenario at every concurrency of -sweep-levels instead of -concurrency")
	fs.StringVar(&levels, "sweep-levels", "1,4,16,64,256", "comma-separated concurrency levels for -sweep, run in ascending order")

	fs.BoolVar(&cfg.directIDs, "direct-ids", false, "direct publishers set a new message id, correlation id and timestamp on every message, of the form the router generates by default (16 characters; a router run with --generated-ids uuid makes longer ones) when the client gives none (the broker's cost of these properties then falls on both sides)")
	fs.BoolVar(&cfg.directOnly, "direct-only", false, "measure only the direct amqp091-go side, without a router; the router figures are reported as zero or null")
	fs.StringVar(&cfg.routerURL, "router-url", "", "base URL of a running router, for example http://127.0.0.1:8000 (default: build ./cmd/rmqrouter and start it on a free loopback port)")
	fs.StringVar(&cfg.routerBin, "router-bin", "", "router binary to start instead of building ./cmd/rmqrouter; not with -router-url or -direct-only")
	fs.Func("router-flag", "extra command-line flag for the started router, for example -router-flag=--log-format=text (repeatable; not --http-addr or --amqp-url, which the harness sets)", func(v string) error {
		cfg.routerFlags = append(cfg.routerFlags, v)
		return nil
	})
	fs.StringVar(&cfg.amqpURL, "amqp-url", "amqp://guest:guest@127.0.0.1:5672/", "broker URL for the direct clients and the started router. Its user and password are also the router's Basic credentials")

	fs.IntVar(&cfg.batchSize, "batch-size", 100, "messages per request in publish-batch (the router accepts at most 1000)")
	fs.IntVar(&cfg.prefetch, "prefetch", 100, "consumer prefetch (basic.qos) of every session and direct consumer")
	fs.IntVar(&cfg.fetchMax, "fetch-max", 50, "maximum messages per fetch and per acknowledgement on both sides")
	fs.IntVar(&cfg.fetchWait, "fetch-wait", 1, "seconds a router fetch waits for its first message")
	fs.IntVar(&cfg.prefill, "prefill", 0, "messages put in the queue before each fetch-ack round; 0 sizes it from the previous round's rate")
	fs.IntVar(&cfg.prefillMax, "prefill-max", 200000, "upper bound of the automatic prefill")
	fs.DurationVar(&cfg.httpTimeout, "http-timeout", 30*time.Second, "timeout of one HTTP request to the router, on top of the fetch wait")

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(output, usageText)
			fs.SetOutput(output)
			fs.PrintDefaults()
			return config{}, err
		}
		return config{}, fmt.Errorf("%w (see -h for the flags)", err)
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected argument %q: all settings are flags, see -h", fs.Arg(0))
	}
	setFlags := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { setFlags[f.Name] = true })
	if setFlags["sweep-levels"] && !cfg.sweep {
		return config{}, errors.New("-sweep-levels has no effect without -sweep: add -sweep, or drop -sweep-levels")
	}
	if setFlags["concurrency"] && cfg.sweep {
		return config{}, errors.New("-concurrency has no effect with -sweep, which runs every level of -sweep-levels: drop one of them")
	}
	for _, name := range []string{"router-url", "router-bin", "router-flag"} {
		if setFlags[name] && cfg.directOnly {
			return config{}, fmt.Errorf("-%s has no effect with -direct-only, which starts no router: drop one of them", name)
		}
	}
	for _, name := range []string{"router-bin", "router-flag"} {
		if setFlags[name] && cfg.routerURL != "" {
			return config{}, fmt.Errorf("-%s has no effect with -router-url, which measures a router that is already running: drop one of them", name)
		}
	}

	for _, routerFlag := range cfg.routerFlags {
		if err := checkRouterFlag(routerFlag); err != nil {
			return config{}, err
		}
	}

	var err error
	if cfg.scenarios, err = parseScenarios(scenario); err != nil {
		return config{}, err
	}
	if cfg.sweepLevels, err = parseLevels(levels); err != nil {
		return config{}, err
	}
	if cfg.amqp, err = amqp.ParseURI(cfg.amqpURL); err != nil {
		return config{}, fmt.Errorf("invalid -amqp-url: %w", err)
	}
	if cfg.routerURL != "" {
		if cfg.routerURL, err = normalizeRouterURL(cfg.routerURL); err != nil {
			return config{}, err
		}
	}
	if err := cfg.validate(); err != nil {
		return config{}, err
	}
	if cfg.plotPath != "" {
		if err := checkWritable(cfg.plotPath); err != nil {
			return config{}, err
		}
	}
	return cfg, nil
}

func (cfg config) validate() error {
	checks := []struct {
		ok      bool
		message string
	}{
		{cfg.duration > 0, fmt.Sprintf("invalid -duration %s: must be positive", cfg.duration)},
		{cfg.warmup >= 0, fmt.Sprintf("invalid -warmup %s: must not be negative", cfg.warmup)},
		{cfg.concurrency >= 1 && cfg.concurrency <= 4096, fmt.Sprintf("invalid -concurrency %d: must be 1..4096", cfg.concurrency)},
		{cfg.size >= 1 && cfg.size <= 64<<20, fmt.Sprintf("invalid -size %d: must be 1..%d bytes", cfg.size, 64<<20)},
		{cfg.users >= 0 && cfg.users <= 1000, fmt.Sprintf("invalid -users %d: must be 0..1000", cfg.users)},
		{cfg.rounds >= 1, fmt.Sprintf("invalid -rounds %d: must be at least 1", cfg.rounds)},
		{slices.Contains([]string{"text", "json", "markdown"}, cfg.format), fmt.Sprintf("invalid -format %q: must be text, json or markdown", cfg.format)},
		{cfg.batchSize >= 1 && cfg.batchSize <= 1000, fmt.Sprintf("invalid -batch-size %d: must be 1..1000", cfg.batchSize)},
		{cfg.prefetch >= 1 && cfg.prefetch <= 65535, fmt.Sprintf("invalid -prefetch %d: must be 1..65535", cfg.prefetch)},
		{cfg.fetchMax >= 1, fmt.Sprintf("invalid -fetch-max %d: must be at least 1", cfg.fetchMax)},
		{cfg.fetchWait >= 0 && cfg.fetchWait <= 300, fmt.Sprintf("invalid -fetch-wait %d: must be 0..300 seconds", cfg.fetchWait)},
		{cfg.prefill >= 0, fmt.Sprintf("invalid -prefill %d: must not be negative", cfg.prefill)},
		{cfg.prefillMax >= 1, fmt.Sprintf("invalid -prefill-max %d: must be at least 1", cfg.prefillMax)},
		{cfg.httpTimeout > 0, fmt.Sprintf("invalid -http-timeout %s: must be positive", cfg.httpTimeout)},
	}
	for _, c := range checks {
		if !c.ok {
			return errors.New(c.message)
		}
	}
	return nil
}

func parseScenarios(value string) ([]string, error) {
	if strings.TrimSpace(value) == "all" {
		return slices.Clone(scenarioNames), nil
	}
	var names []string
	for name := range strings.SplitSeq(value, ",") {
		name = strings.TrimSpace(name)
		switch {
		case name == "all":
			return nil, fmt.Errorf("invalid -scenario %q: all runs every scenario and cannot be combined with other names", value)
		case !slices.Contains(scenarioNames, name):
			return nil, fmt.Errorf("invalid -scenario %q: must be all or a comma-separated list of %s", name, strings.Join(scenarioNames, ", "))
		case slices.Contains(names, name):
			return nil, fmt.Errorf("invalid -scenario %q: %s is listed twice", value, name)
		}
		names = append(names, name)
	}
	return names, nil
}

// parseLevels parses the -sweep-levels list and returns the levels in ascending order,
// which is the order a sweep runs and plots them.
func parseLevels(value string) ([]int, error) {
	var levels []int
	for field := range strings.SplitSeq(value, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(field))
		if err != nil || n < 1 || n > 4096 {
			return nil, fmt.Errorf("invalid -sweep-levels entry %q: must be an integer 1..4096", field)
		}
		if slices.Contains(levels, n) {
			return nil, fmt.Errorf("invalid -sweep-levels %q: %d is listed twice", value, n)
		}
		levels = append(levels, n)
	}
	slices.Sort(levels)
	return levels, nil
}

// harnessRouterFlags lists the flags that the harness sets on the router it starts, so
// -router-flag must not set them again.
var harnessRouterFlags = []string{"http-addr", "amqp-url"}

// checkRouterFlag returns an error when routerFlag sets one of harnessRouterFlags.
func checkRouterFlag(routerFlag string) error {
	name := strings.TrimLeft(routerFlag, "-")
	name, _, _ = strings.Cut(name, "=")
	if slices.Contains(harnessRouterFlags, name) {
		return fmt.Errorf("invalid -router-flag %q: the harness sets --%s of the router it starts (use -amqp-url for the broker, or -router-url for a router you started yourself)", routerFlag, name)
	}
	return nil
}

// checkWritable returns an error unless a file can be created at path. It leaves no
// file there, so a plot that cannot be written fails the run before it measures
// anything.
func checkWritable(path string) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".bench-plot-*")
	if err != nil {
		// Report the directory, because the probe file's name means nothing to the user.
		var pathErr *os.PathError
		if errors.As(err, &pathErr) {
			err = pathErr.Err
		}
		return fmt.Errorf("invalid -plot %q: cannot create a file in %s: %w", path, dir, err)
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

// normalizeRouterURL checks that raw is an http or https URL with a host and no path, and
// returns it without a trailing slash.
func normalizeRouterURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("invalid -router-url %q: %w", raw, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("invalid -router-url %q: must be http://HOST:PORT or https://HOST:PORT", raw)
	}
	if strings.Trim(u.Path, "/") != "" || u.RawQuery != "" {
		return "", fmt.Errorf("invalid -router-url %q: must have no path or query", raw)
	}
	return u.Scheme + "://" + u.Host, nil
}
