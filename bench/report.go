package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// scenarioResult is the outcome of one scenario at one concurrency.
type scenarioResult struct {
	Scenario    string
	Concurrency int
	Workers     int
	Size        int
	Rounds      int
	Duration    time.Duration
	Users       int
	Router      sideSummary
	Direct      sideSummary
}

// ratio returns router throughput over direct throughput, or NaN when either side has no
// measured rounds or the direct side moved no messages.
func (r scenarioResult) ratio() float64 {
	if r.Direct.Rate == 0 || r.Router.Elapsed == 0 {
		return math.NaN()
	}
	return r.Router.Rate / r.Direct.Rate
}

// machineInfo describes where the figures were measured.
type machineInfo struct {
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model"`
	Kernel    string `json:"kernel"`
	GoVersion string `json:"go_version"`
	RabbitMQ  string `json:"rabbitmq_version"`
}

func collectMachineInfo(ctx context.Context) machineInfo {
	info := machineInfo{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), RabbitMQ: brokerVersion(ctx), CPUModel: "unknown", Kernel: "unknown"}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(data)) {
			if name, value, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(name) == "model name" {
				info.CPUModel = strings.TrimSpace(value)
				break
			}
		}
	}
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		info.Kernel = strings.TrimSpace(string(data))
	}
	return info
}

func (m machineInfo) String() string {
	return fmt.Sprintf("%d CPUs (%s), Linux %s, %s, RabbitMQ %s", m.CPUs, m.CPUModel, m.Kernel, m.GoVersion, m.RabbitMQ)
}

// jsonReport is the object written per scenario with -format json. Values that could not
// be measured are null.
type jsonReport struct {
	Scenario     string  `json:"scenario"`
	Concurrency  int     `json:"concurrency"`
	Workers      int     `json:"workers"`
	SizeBytes    int     `json:"size_bytes"`
	Persistent   bool    `json:"persistent"`
	Rounds       int     `json:"rounds"`
	RoundSeconds float64 `json:"round_seconds"`
	Users        int     `json:"users"`

	RouterMsgsPerSec float64  `json:"router_msgs_per_sec"`
	DirectMsgsPerSec float64  `json:"direct_msgs_per_sec"`
	Ratio            *float64 `json:"ratio"`

	RouterP50Ms float64 `json:"router_p50_ms"`
	RouterP95Ms float64 `json:"router_p95_ms"`
	RouterP99Ms float64 `json:"router_p99_ms"`
	DirectP50Ms float64 `json:"direct_p50_ms"`
	DirectP95Ms float64 `json:"direct_p95_ms"`
	DirectP99Ms float64 `json:"direct_p99_ms"`

	RouterCPUSeconds        *float64 `json:"router_cpu_seconds"`
	BrokerCPUSeconds        *float64 `json:"broker_cpu_seconds"`
	DirectBrokerCPUSeconds  *float64 `json:"direct_broker_cpu_seconds"`
	RouterHarnessCPUSeconds float64  `json:"router_harness_cpu_seconds"`
	DirectHarnessCPUSeconds float64  `json:"direct_harness_cpu_seconds"`
	RouterRSSBytes          *int64   `json:"router_rss_bytes"`

	RouterPublished       int64            `json:"router_published"`
	RouterConsumed        int64            `json:"router_consumed"`
	DirectPublished       int64            `json:"direct_published"`
	DirectConsumed        int64            `json:"direct_consumed"`
	RouterMeasuredSeconds float64          `json:"router_measured_seconds"`
	DirectMeasuredSeconds float64          `json:"direct_measured_seconds"`
	RouterRoundMsgsPerSec []float64        `json:"router_round_msgs_per_sec"`
	DirectRoundMsgsPerSec []float64        `json:"direct_round_msgs_per_sec"`
	RouterErrors          map[string]int64 `json:"router_errors"`
	DirectErrors          map[string]int64 `json:"direct_errors"`

	Machine *machineInfo `json:"machine,omitempty"`
	Command string       `json:"command,omitempty"`
	Levels  []jsonReport `json:"levels,omitempty"`
}

func optionalFloat(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

func roundTo(v float64, digits int) float64 {
	scale := math.Pow(10, float64(digits))
	return math.Round(v*scale) / scale
}

func roundAll(values []float64, digits int) []float64 {
	out := make([]float64, len(values))
	for i, v := range values {
		out[i] = roundTo(v, digits)
	}
	return out
}

func newJSONReport(r scenarioResult) jsonReport {
	rep := jsonReport{
		Scenario:     r.Scenario,
		Concurrency:  r.Concurrency,
		Workers:      r.Workers,
		SizeBytes:    r.Size,
		Persistent:   true,
		Rounds:       r.Rounds,
		RoundSeconds: r.Duration.Seconds(),
		Users:        r.Users,

		RouterMsgsPerSec: roundTo(r.Router.Rate, 1),
		DirectMsgsPerSec: roundTo(r.Direct.Rate, 1),
		Ratio:            optionalFloat(roundTo(r.ratio(), 4)),

		RouterP50Ms: roundTo(milliseconds(r.Router.P50), 3),
		RouterP95Ms: roundTo(milliseconds(r.Router.P95), 3),
		RouterP99Ms: roundTo(milliseconds(r.Router.P99), 3),
		DirectP50Ms: roundTo(milliseconds(r.Direct.P50), 3),
		DirectP95Ms: roundTo(milliseconds(r.Direct.P95), 3),
		DirectP99Ms: roundTo(milliseconds(r.Direct.P99), 3),

		RouterCPUSeconds:        optionalFloat(r.Router.RouterCPU),
		BrokerCPUSeconds:        optionalFloat(r.Router.BrokerCPU),
		DirectBrokerCPUSeconds:  optionalFloat(r.Direct.BrokerCPU),
		RouterHarnessCPUSeconds: roundTo(r.Router.HarnessCPU, 2),
		DirectHarnessCPUSeconds: roundTo(r.Direct.HarnessCPU, 2),

		RouterPublished:       r.Router.Published,
		RouterConsumed:        r.Router.Consumed,
		DirectPublished:       r.Direct.Published,
		DirectConsumed:        r.Direct.Consumed,
		RouterMeasuredSeconds: roundTo(r.Router.Elapsed.Seconds(), 3),
		DirectMeasuredSeconds: roundTo(r.Direct.Elapsed.Seconds(), 3),
		RouterRoundMsgsPerSec: roundAll(r.Router.RoundRates, 1),
		DirectRoundMsgsPerSec: roundAll(r.Direct.RoundRates, 1),
		RouterErrors:          r.Router.Errors,
		DirectErrors:          r.Direct.Errors,
	}
	if r.Router.RouterRSS >= 0 {
		rss := r.Router.RouterRSS
		rep.RouterRSSBytes = &rss
	}
	return rep
}

// reporter writes results in the chosen format as they become available. With json, each
// scenario is one line. With -sweep that line has the highest level's figures at the top
// and every level under "levels".
type reporter struct {
	out        io.Writer
	cfg        config
	machine    machineInfo
	headerDone bool
}

func newReporter(out io.Writer, cfg config, machine machineInfo) *reporter {
	return &reporter{out: out, cfg: cfg, machine: machine}
}

// level reports one scenario at one concurrency.
func (rp *reporter) level(res scenarioResult) error {
	switch rp.cfg.format {
	case "text":
		if !rp.headerDone {
			fmt.Fprintf(rp.out, "command: %s\nmachine: %s\n\n", rp.cfg.commandLine, rp.machine)
			rp.headerDone = true
		}
		return writeTextReport(rp.out, res)
	case "markdown":
		if !rp.headerDone {
			writeMarkdownHeader(rp.out, rp.cfg.commandLine, rp.machine)
			rp.headerDone = true
		}
		return writeMarkdownRow(rp.out, res)
	default:
		if rp.cfg.sweep {
			return nil
		}
		rep := newJSONReport(res)
		rep.Machine, rep.Command = &rp.machine, rp.cfg.commandLine
		return writeJSONLine(rp.out, rep)
	}
}

// scenario reports the end of a scenario's levels: the sweep table in text, the sweep
// object in json.
func (rp *reporter) scenario(results []scenarioResult) error {
	if !rp.cfg.sweep || len(results) == 0 {
		return nil
	}
	switch rp.cfg.format {
	case "text":
		return writeSweepTable(rp.out, results)
	case "json":
		rep := newJSONReport(results[len(results)-1])
		rep.Machine, rep.Command = &rp.machine, rp.cfg.commandLine
		for _, res := range results {
			rep.Levels = append(rep.Levels, newJSONReport(res))
		}
		return writeJSONLine(rp.out, rep)
	}
	return nil
}

func (rp *reporter) finish() error { return nil }

// writeJSONLine writes rep as one line, because encoding/json escapes newlines in strings.
func writeJSONLine(out io.Writer, rep jsonReport) error {
	data, err := json.Marshal(rep)
	if err != nil {
		return fmt.Errorf("encode JSON report: %w", err)
	}
	_, err = fmt.Fprintf(out, "%s\n", data)
	return err
}

func formatCPU(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

func formatRSS(bytes int64) string {
	if bytes < 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f MiB", float64(bytes)/(1<<20))
}

func formatRatio(v float64) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	return strconv.FormatFloat(v, 'f', 3, 64)
}

func formatRates(rates []float64) string {
	parts := make([]string, len(rates))
	for i, r := range rates {
		parts[i] = strconv.FormatFloat(r, 'f', 0, 64)
	}
	return strings.Join(parts, " ")
}

// formatErrors lists error counts by key, largest first, for example
// "429 too_many_in_flight: 12, http timeout: 1", or "none".
func formatErrors(errs map[string]int64) string {
	if len(errs) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(errs))
	for k := range errs {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if errs[a] != errs[b] {
			return int(errs[b] - errs[a])
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s: %d", k, errs[k])
	}
	return strings.Join(parts, ", ")
}

// countNoun returns n and noun, with an s for any n but 1: "1 worker", "64 workers".
func countNoun(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

func writeTextReport(out io.Writer, r scenarioResult) error {
	fmt.Fprintf(out, "%s: concurrency %d (%s), %d-byte persistent messages, %d × %s rounds per side, users %d\n",
		r.Scenario, r.Concurrency, countNoun(r.Workers, "worker"), r.Size, r.Rounds, r.Duration, r.Users)

	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	row := func(name, router, direct string) { fmt.Fprintf(tw, "  %s\t%s\t%s\t\n", name, router, direct) }
	ms := func(d time.Duration) string { return strconv.FormatFloat(milliseconds(d), 'f', 2, 64) }

	row("", "router", "direct")
	row("msg/s", strconv.FormatFloat(r.Router.Rate, 'f', 0, 64), strconv.FormatFloat(r.Direct.Rate, 'f', 0, 64))
	row("ratio router/direct", formatRatio(r.ratio()), "")
	row("p50 ms", ms(r.Router.P50), ms(r.Direct.P50))
	row("p95 ms", ms(r.Router.P95), ms(r.Direct.P95))
	row("p99 ms", ms(r.Router.P99), ms(r.Direct.P99))
	row("published", strconv.FormatInt(r.Router.Published, 10), strconv.FormatInt(r.Direct.Published, 10))
	row("consumed", strconv.FormatInt(r.Router.Consumed, 10), strconv.FormatInt(r.Direct.Consumed, 10))
	row("measured s", strconv.FormatFloat(r.Router.Elapsed.Seconds(), 'f', 1, 64), strconv.FormatFloat(r.Direct.Elapsed.Seconds(), 'f', 1, 64))
	row("msg/s per round", formatRates(r.Router.RoundRates), formatRates(r.Direct.RoundRates))
	row("router CPU s", formatCPU(r.Router.RouterCPU), "")
	row("broker CPU s", formatCPU(r.Router.BrokerCPU), formatCPU(r.Direct.BrokerCPU))
	row("harness CPU s", formatCPU(r.Router.HarnessCPU), formatCPU(r.Direct.HarnessCPU))
	row("router RSS max", formatRSS(r.Router.RouterRSS), "")
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(out, "  router errors: %s\n  direct errors: %s\n\n", formatErrors(r.Router.Errors), formatErrors(r.Direct.Errors))
	return err
}

func writeSweepTable(out io.Writer, results []scenarioResult) error {
	fmt.Fprintf(out, "%s sweep\n", results[0].Scenario)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "concurrency\trouter msg/s\tdirect msg/s\tratio\trouter p95 ms\tdirect p95 ms\terrors\t\n")
	for _, r := range results {
		fmt.Fprintf(tw, "%d\t%.0f\t%.0f\t%s\t%.2f\t%.2f\t%d\t\n", r.Concurrency, r.Router.Rate, r.Direct.Rate, formatRatio(r.ratio()),
			milliseconds(r.Router.P95), milliseconds(r.Direct.P95), r.Router.ErrorTotal()+r.Direct.ErrorTotal())
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintln(out)
	return err
}

func writeMarkdownHeader(out io.Writer, command string, machine machineInfo) {
	fmt.Fprintf(out, "Command: `%s`\n\nMachine: %s\n\n", command, machine)
	fmt.Fprintln(out, "| scenario | concurrency | router msg/s | direct msg/s | ratio | router p50 / p95 / p99 ms | direct p50 / p95 / p99 ms | router CPU s | broker CPU s (router / direct rounds) | router RSS max | errors (router / direct) |")
	fmt.Fprintln(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
}

func writeMarkdownRow(out io.Writer, r scenarioResult) error {
	ms := func(s sideSummary) string {
		return fmt.Sprintf("%.2f / %.2f / %.2f", milliseconds(s.P50), milliseconds(s.P95), milliseconds(s.P99))
	}
	_, err := fmt.Fprintf(out, "| %s | %d | %.0f | %.0f | %s | %s | %s | %s | %s / %s | %s | %s / %s |\n",
		r.Scenario, r.Concurrency, r.Router.Rate, r.Direct.Rate, formatRatio(r.ratio()), ms(r.Router), ms(r.Direct),
		formatCPU(r.Router.RouterCPU), formatCPU(r.Router.BrokerCPU), formatCPU(r.Direct.BrokerCPU), formatRSS(r.Router.RouterRSS),
		markdownCell(formatErrors(r.Router.Errors)), markdownCell(formatErrors(r.Direct.Errors)))
	return err
}

func markdownCell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// buildPanels turns results into a throughput panel and a p95 latency panel. A sweep gets
// lines over concurrency, a solid router line and a dashed direct line per scenario.
// Otherwise each scenario is a pair of bars. Without withRouter, for a -direct-only run,
// only the direct series are drawn.
func buildPanels(sweep, withRouter bool, all [][]scenarioResult) []chartPanel {
	throughput := chartPanel{title: "Throughput", yLabel: "messages per second"}
	latency := chartPanel{title: "p95 latency", yLabel: "milliseconds"}

	if !sweep {
		throughput.bars, latency.bars = true, true
		router := chartSeries{name: "router", color: seriesColors[0]}
		direct := chartSeries{name: "direct amqp091-go", color: seriesColors[1]}
		routerLatency, directLatency := router, direct
		for _, results := range all {
			for _, r := range results {
				label := fmt.Sprintf("%s c=%d", r.Scenario, r.Concurrency)
				throughput.categories = append(throughput.categories, label)
				router.values = append(router.values, r.Router.Rate)
				direct.values = append(direct.values, r.Direct.Rate)
				routerLatency.values = append(routerLatency.values, milliseconds(r.Router.P95))
				directLatency.values = append(directLatency.values, milliseconds(r.Direct.P95))
			}
		}
		latency.categories = throughput.categories
		throughput.series = []chartSeries{direct}
		latency.series = []chartSeries{directLatency}
		if withRouter {
			throughput.series = []chartSeries{router, direct}
			latency.series = []chartSeries{routerLatency, directLatency}
		}
		return []chartPanel{throughput, latency}
	}

	for i, results := range all {
		color := seriesColors[i%len(seriesColors)]
		series := map[string]*chartSeries{}
		for _, kind := range []string{"router", "direct", "router p95", "direct p95"} {
			series[kind] = &chartSeries{color: color, dashed: strings.HasPrefix(kind, "direct")}
		}
		for _, r := range results {
			label := strconv.Itoa(r.Concurrency)
			if !slices.Contains(throughput.categories, label) {
				throughput.categories = append(throughput.categories, label)
			}
		}
		for _, label := range throughput.categories {
			idx := slices.IndexFunc(results, func(r scenarioResult) bool { return strconv.Itoa(r.Concurrency) == label })
			if idx < 0 {
				for _, s := range series {
					s.values = append(s.values, math.NaN())
				}
				continue
			}
			r := results[idx]
			series["router"].values = append(series["router"].values, r.Router.Rate)
			series["direct"].values = append(series["direct"].values, r.Direct.Rate)
			series["router p95"].values = append(series["router p95"].values, milliseconds(r.Router.P95))
			series["direct p95"].values = append(series["direct p95"].values, milliseconds(r.Direct.P95))
		}
		name := results[0].Scenario
		series["router"].name, series["router p95"].name = name+" router", name+" router"
		series["direct"].name, series["direct p95"].name = name+" direct", name+" direct"
		if withRouter {
			throughput.series = append(throughput.series, *series["router"])
			latency.series = append(latency.series, *series["router p95"])
		}
		throughput.series = append(throughput.series, *series["direct"])
		latency.series = append(latency.series, *series["direct p95"])
	}
	throughput.title, latency.title = "Throughput by concurrency", "p95 latency by concurrency"
	throughput.xLabel, latency.xLabel = "concurrency (workers per side)", "concurrency (workers per side)"
	latency.categories = throughput.categories
	return []chartPanel{throughput, latency}
}

// writePlotFile writes the SVG chart of all results to path.
func writePlotFile(path string, sweep, directOnly bool, all [][]scenarioResult) error {
	title := "rmqrouter vs direct amqp091-go"
	if directOnly {
		title = "direct amqp091-go"
	}
	panels := buildPanels(sweep, !directOnly, all)
	var buf bytes.Buffer
	if err := writeSVG(&buf, title, panels); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// splitHostPort returns the host and port of an http or https URL, with the scheme's
// default port when the URL has none.
func splitHostPort(rawURL string) (string, int, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", 0, err
	}
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		return "", 0, fmt.Errorf("invalid port in %q", rawURL)
	}
	return u.Hostname(), n, nil
}
