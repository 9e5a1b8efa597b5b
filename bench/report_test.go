package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func sampleResult(concurrency int, routerRate, directRate float64) scenarioResult {
	return scenarioResult{
		Scenario:    "publish-json",
		Concurrency: concurrency,
		Workers:     concurrency,
		Size:        1024,
		Rounds:      2,
		Duration:    10 * time.Second,
		Users:       1,
		Router: sideSummary{
			Published: int64(routerRate * 20), Elapsed: 20 * time.Second, Rate: routerRate, RoundRates: []float64{routerRate, routerRate},
			P50: 2 * time.Millisecond, P95: 5 * time.Millisecond, P99: 9 * time.Millisecond,
			Errors:    map[string]int64{"429 too_many_in_flight": 3},
			RouterCPU: 7.5, BrokerCPU: 9.25, HarnessCPU: 3, RouterRSS: 50 << 20,
		},
		Direct: sideSummary{
			Published: int64(directRate * 20), Elapsed: 20 * time.Second, Rate: directRate, RoundRates: []float64{directRate, directRate},
			P50: time.Millisecond, P95: 2 * time.Millisecond, P99: 4 * time.Millisecond,
			Errors:    map[string]int64{},
			RouterCPU: math.NaN(), BrokerCPU: 12, HarnessCPU: 2, RouterRSS: -1,
		},
	}
}

var requiredJSONKeys = []string{
	"scenario", "concurrency", "router_msgs_per_sec", "direct_msgs_per_sec", "ratio",
	"router_p50_ms", "router_p95_ms", "router_p99_ms", "router_cpu_seconds", "broker_cpu_seconds", "router_rss_bytes",
}

// lastLineObject decodes the last line of out as one JSON object.
func lastLineObject(t *testing.T, out string) map[string]any {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	last := lines[len(lines)-1]
	var obj map[string]any
	if err := json.Unmarshal([]byte(last), &obj); err != nil {
		t.Fatalf("last output line is not a JSON object: %v\n%s", err, last)
	}
	return obj
}

func TestJSONReportLastLineKeys(t *testing.T) {
	var out bytes.Buffer
	cfg := config{format: "json", commandLine: "go run ./bench -format json"}
	rep := newReporter(&out, cfg, machineInfo{CPUs: 2})
	first := sampleResult(16, 1000, 4000)
	first.Scenario = "publish-raw"
	if err := rep.level(first); err != nil {
		t.Fatalf("level: %v", err)
	}
	if err := rep.level(sampleResult(16, 1500, 5000)); err != nil {
		t.Fatalf("level: %v", err)
	}
	if err := rep.finish(); err != nil {
		t.Fatalf("finish: %v", err)
	}

	if n := strings.Count(out.String(), "\n"); n != 2 {
		t.Errorf("json output has %d lines, want one per scenario (2)", n)
	}
	obj := lastLineObject(t, out.String())
	for _, key := range requiredJSONKeys {
		if _, ok := obj[key]; !ok {
			t.Errorf("last JSON line has no %q key", key)
		}
	}
	if obj["scenario"] != "publish-json" {
		t.Errorf("scenario = %v, want the last scenario publish-json", obj["scenario"])
	}
	if obj["concurrency"] != 16.0 {
		t.Errorf("concurrency = %v, want 16", obj["concurrency"])
	}
	if obj["router_msgs_per_sec"] != 1500.0 || obj["direct_msgs_per_sec"] != 5000.0 {
		t.Errorf("rates = %v, %v, want 1500, 5000", obj["router_msgs_per_sec"], obj["direct_msgs_per_sec"])
	}
	if obj["ratio"] != 0.3 {
		t.Errorf("ratio = %v, want 0.3", obj["ratio"])
	}
	if obj["router_p95_ms"] != 5.0 {
		t.Errorf("router_p95_ms = %v, want 5", obj["router_p95_ms"])
	}
	if obj["router_cpu_seconds"] != 7.5 || obj["broker_cpu_seconds"] != 9.25 {
		t.Errorf("CPU = %v, %v, want 7.5, 9.25", obj["router_cpu_seconds"], obj["broker_cpu_seconds"])
	}
	if obj["router_rss_bytes"] != float64(50<<20) {
		t.Errorf("router_rss_bytes = %v, want %d", obj["router_rss_bytes"], 50<<20)
	}
	errs, _ := obj["router_errors"].(map[string]any)
	if errs["429 too_many_in_flight"] != 3.0 {
		t.Errorf("router_errors = %v, want 429 too_many_in_flight: 3", obj["router_errors"])
	}
}

func TestJSONReportUnknownValuesAreNull(t *testing.T) {
	res := sampleResult(4, 100, 0)
	res.Router.RouterCPU, res.Router.BrokerCPU, res.Router.RouterRSS = math.NaN(), math.NaN(), -1

	var out bytes.Buffer
	if err := writeJSONLine(&out, newJSONReport(res)); err != nil {
		t.Fatalf("writeJSONLine: %v", err)
	}
	obj := lastLineObject(t, out.String())
	for _, key := range []string{"ratio", "router_cpu_seconds", "broker_cpu_seconds", "router_rss_bytes"} {
		value, ok := obj[key]
		if !ok {
			t.Errorf("key %q missing, want it present with null", key)
			continue
		}
		if value != nil {
			t.Errorf("%s = %v, want null", key, value)
		}
	}
}

func TestJSONSweepLastLineHasLevels(t *testing.T) {
	var out bytes.Buffer
	cfg := config{format: "json", sweep: true}
	rep := newReporter(&out, cfg, machineInfo{})
	levels := []scenarioResult{sampleResult(1, 100, 200), sampleResult(4, 300, 600)}
	for _, res := range levels {
		if err := rep.level(res); err != nil {
			t.Fatalf("level: %v", err)
		}
	}
	if out.Len() != 0 {
		t.Errorf("sweep wrote %q before the scenario ended, want one line at the end", out.String())
	}
	if err := rep.scenario(levels); err != nil {
		t.Fatalf("scenario: %v", err)
	}

	obj := lastLineObject(t, out.String())
	for _, key := range requiredJSONKeys {
		if _, ok := obj[key]; !ok {
			t.Errorf("sweep line has no %q key", key)
		}
	}
	if obj["concurrency"] != 4.0 {
		t.Errorf("top-level concurrency = %v, want the last level 4", obj["concurrency"])
	}
	got, _ := obj["levels"].([]any)
	if len(got) != 2 {
		t.Fatalf("levels = %v, want 2 entries", obj["levels"])
	}
	if first, _ := got[0].(map[string]any); first["concurrency"] != 1.0 {
		t.Errorf("levels[0].concurrency = %v, want 1", first["concurrency"])
	}
}

func TestTextReportContents(t *testing.T) {
	var out bytes.Buffer
	if err := writeTextReport(&out, sampleResult(16, 1000, 4000)); err != nil {
		t.Fatalf("writeTextReport: %v", err)
	}
	text := out.String()
	for _, want := range []string{
		"publish-json: concurrency 16",
		"ratio router/direct  0.250",
		"429 too_many_in_flight: 3",
		"direct errors: none",
		"50.0 MiB",
		"12.00",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("text report does not contain %q:\n%s", want, text)
		}
	}
}

func TestMarkdownRowMatchesHeader(t *testing.T) {
	var out bytes.Buffer
	writeMarkdownHeader(&out, "go run ./bench", machineInfo{CPUs: 2})
	res := sampleResult(16, 1000, 4000)
	res.Router.Errors = map[string]int64{"odd|key": 1}
	if err := writeMarkdownRow(&out, res); err != nil {
		t.Fatalf("writeMarkdownRow: %v", err)
	}

	var table []string
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(line, "|") {
			table = append(table, line)
		}
	}
	if len(table) != 3 {
		t.Fatalf("got %d table lines, want header, separator and one row:\n%s", len(table), out.String())
	}
	cells := func(line string) int { return strings.Count(strings.ReplaceAll(line, `\|`, ""), "|") }
	for _, line := range table[1:] {
		if cells(line) != cells(table[0]) {
			t.Errorf("line %q has %d separators, header has %d", line, cells(line), cells(table[0]))
		}
	}
}

func TestFormatErrorsLargestFirst(t *testing.T) {
	got := formatErrors(map[string]int64{"b": 1, "a": 1, "c": 5})
	if want := "c: 5, a: 1, b: 1"; got != want {
		t.Errorf("formatErrors = %q, want %q", got, want)
	}
	if got := formatErrors(nil); got != "none" {
		t.Errorf("formatErrors(nil) = %q, want none", got)
	}
}

func TestTextReportOneWorker(t *testing.T) {
	var out bytes.Buffer
	if err := writeTextReport(&out, sampleResult(1, 1000, 4000)); err != nil {
		t.Fatalf("writeTextReport: %v", err)
	}
	if !strings.Contains(out.String(), "concurrency 1 (1 worker)") {
		t.Errorf("text report header = %q, want concurrency 1 (1 worker)", strings.SplitN(out.String(), "\n", 2)[0])
	}
}

func TestPlotDirectOnlyHasNoRouter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "plot.svg")
	all := [][]scenarioResult{{sampleResult(1, 0, 200), sampleResult(4, 0, 600)}}
	for _, sweep := range []bool{false, true} {
		if err := writePlotFile(path, sweep, true, all); err != nil {
			t.Fatalf("writePlotFile: %v", err)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(data), "router") {
			t.Errorf("direct-only plot (sweep %v) mentions the router", sweep)
		}
		if !strings.Contains(string(data), "direct") {
			t.Errorf("direct-only plot (sweep %v) has no direct series", sweep)
		}
	}
}

func TestBuildPanelsSweep(t *testing.T) {
	all := [][]scenarioResult{{sampleResult(1, 100, 200), sampleResult(4, 300, 600)}}
	panels := buildPanels(true, true, all)
	if len(panels) != 2 {
		t.Fatalf("got %d panels, want throughput and latency", len(panels))
	}
	if got := strings.Join(panels[0].categories, ","); got != "1,4" {
		t.Errorf("categories = %s, want 1,4", got)
	}
	if len(panels[0].series) != 2 || panels[0].series[0].values[1] != 300 || panels[0].series[1].values[1] != 600 {
		t.Errorf("throughput series = %+v, want router [100 300] and direct [200 600]", panels[0].series)
	}
	if !panels[0].series[1].dashed {
		t.Errorf("direct series is not dashed")
	}
	if panels[1].series[0].values[0] != 5 {
		t.Errorf("router p95 = %v ms, want 5", panels[1].series[0].values[0])
	}
}
