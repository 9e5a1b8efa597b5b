package main

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseConfigDefaults(t *testing.T) {
	cfg, err := parseConfig(nil, io.Discard)
	if err != nil {
		t.Fatalf("parseConfig: %v", err)
	}
	if !slices.Equal(cfg.scenarios, []string{"publish-json"}) {
		t.Errorf("scenarios = %v, want [publish-json]", cfg.scenarios)
	}
	if cfg.duration != 10*time.Second {
		t.Errorf("duration = %s, want 10s", cfg.duration)
	}
	if cfg.concurrency != 16 {
		t.Errorf("concurrency = %d, want 16", cfg.concurrency)
	}
	if cfg.size != 256 {
		t.Errorf("size = %d, want 256", cfg.size)
	}
	if cfg.rounds != 3 {
		t.Errorf("rounds = %d, want 3", cfg.rounds)
	}
	if !slices.Equal(cfg.sweepLevels, []int{1, 4, 16, 64, 256}) {
		t.Errorf("sweep levels = %v, want 1,4,16,64,256", cfg.sweepLevels)
	}
	if cfg.amqp.Host != "127.0.0.1" {
		t.Errorf("amqp host = %q, want 127.0.0.1", cfg.amqp.Host)
	}
	if cfg.amqp.Username != "guest" {
		t.Errorf("amqp user = %q, want guest", cfg.amqp.Username)
	}
	if cfg.amqp.Vhost != "/" {
		t.Errorf("amqp vhost = %q, want /", cfg.amqp.Vhost)
	}
}

func TestParseConfigScenarios(t *testing.T) {
	cfg, err := parseConfig([]string{"-scenario", "all"}, io.Discard)
	if err != nil {
		t.Fatalf("parseConfig: %v", err)
	}
	if !slices.Equal(cfg.scenarios, scenarioNames) {
		t.Errorf("all = %v, want %v", cfg.scenarios, scenarioNames)
	}

	cfg, err = parseConfig([]string{"-scenario", "fetch-ack, mixed"}, io.Discard)
	if err != nil {
		t.Fatalf("parseConfig: %v", err)
	}
	if !slices.Equal(cfg.scenarios, []string{"fetch-ack", "mixed"}) {
		t.Errorf("list = %v, want [fetch-ack mixed]", cfg.scenarios)
	}
}

func TestParseConfigSortsSweepLevels(t *testing.T) {
	cfg, err := parseConfig([]string{"-sweep", "-sweep-levels", "64, 1,16"}, io.Discard)
	if err != nil {
		t.Fatalf("parseConfig: %v", err)
	}
	// The JSON report of a sweep puts the last level's figures at the top, which must
	// be the highest level's.
	if !slices.Equal(cfg.sweepLevels, []int{1, 16, 64}) {
		t.Errorf("sweep levels = %v, want [1 16 64]", cfg.sweepLevels)
	}
}

func TestParseConfigErrorMessages(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"-scenario", "all,publish-json"}, "cannot be combined"},
		{[]string{"-scenario", "mixed,fetch-ack,mixed"}, "mixed is listed twice"},
		{[]string{"-sweep", "-sweep-levels", "4,1,4"}, "4 is listed twice"},
		{[]string{"-router-flag=--http-addr=127.0.0.1:18199"}, "the harness sets --http-addr"},
		{[]string{"-router-flag", "-http-addr"}, "the harness sets --http-addr"},
		{[]string{"-router-flag=--amqp-url=amqp://guest:guest@127.0.0.1:5672/"}, "the harness sets --amqp-url"},
		{[]string{"-plot", "/nonexistent-dir-of-bench-test/plot.svg"}, "cannot create a file in /nonexistent-dir-of-bench-test: no such file or directory"},
	}
	for _, c := range cases {
		_, err := parseConfig(c.args, io.Discard)
		if err == nil {
			t.Errorf("parseConfig(%q) returned no error", c.args)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("parseConfig(%q) error = %q, want it to contain %q", c.args, err, c.want)
		}
		if strings.Contains(err.Error(), ".bench-plot-") {
			t.Errorf("parseConfig(%q) error = %q names the probe file", c.args, err)
		}
	}
}

func TestParseConfigKeepsOtherRouterFlags(t *testing.T) {
	cfg, err := parseConfig([]string{"-router-flag=--max-body-bytes=2000000", "-router-flag=--http-addr-note"}, io.Discard)
	if err != nil {
		t.Fatalf("parseConfig: %v", err)
	}
	if want := []string{"--max-body-bytes=2000000", "--http-addr-note"}; !slices.Equal(cfg.routerFlags, want) {
		t.Errorf("router flags = %q, want %q", cfg.routerFlags, want)
	}
}

func TestParseConfigRejectsInvalid(t *testing.T) {
	cases := map[string][]string{
		"unknown scenario":        {"-scenario", "publish"},
		"zero duration":           {"-duration", "0s"},
		"zero concurrency":        {"-concurrency", "0"},
		"zero size":               {"-size", "0"},
		"negative users":          {"-users", "-1"},
		"unknown format":          {"-format", "yaml"},
		"bad sweep level":         {"-sweep-levels", "1,x"},
		"batch too large":         {"-batch-size", "1001"},
		"router url path":         {"-router-url", "http://127.0.0.1:8000/v1"},
		"router url scheme":       {"-router-url", "ftp://127.0.0.1"},
		"bad amqp url":            {"-amqp-url", "http://x"},
		"positional argument":     {"extra"},
		"unknown flag":            {"-nope"},
		"levels without sweep":    {"-sweep-levels", "1,4"},
		"concurrency with sweep":  {"-sweep", "-concurrency", "8"},
		"router url direct only":  {"-direct-only", "-router-url", "http://127.0.0.1:8000"},
		"router bin direct only":  {"-direct-only", "-router-bin", "bin/rmqrouter"},
		"router flag direct only": {"-direct-only", "-router-flag=--log-level=debug"},
		"router bin with url":     {"-router-url", "http://127.0.0.1:8000", "-router-bin", "bin/rmqrouter"},
		"router flag with url":    {"-router-url", "http://127.0.0.1:8000", "-router-flag=--log-level=debug"},
	}
	for name, args := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := parseConfig(args, io.Discard); err == nil {
				t.Errorf("parseConfig(%q) returned no error", args)
			}
		})
	}
}

func TestParseConfigHelp(t *testing.T) {
	var out strings.Builder
	_, err := parseConfig([]string{"-h"}, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("parseConfig(-h) error = %v, want flag.ErrHelp", err)
	}
	for _, want := range []string{"Usage: go run ./bench", "-router-url", "-sweep"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("help does not mention %q", want)
		}
	}
}

// TestParseConfigBadFlagQuiet checks that a bad flag yields one error naming it
// and no usage text, which main prints as one line.
func TestParseConfigBadFlagQuiet(t *testing.T) {
	var out strings.Builder
	_, err := parseConfig([]string{"-duraton", "5s"}, &out)
	if err == nil {
		t.Fatal("parseConfig(-duraton) returned no error")
	}
	if !strings.Contains(err.Error(), "-duraton") {
		t.Errorf("error %q does not name the flag -duraton", err)
	}
	if !strings.Contains(err.Error(), "see -h") {
		t.Errorf("error %q does not point to -h", err)
	}
	if out.Len() != 0 {
		t.Errorf("parseConfig wrote %q, want nothing", out.String())
	}
}

func TestCommandName(t *testing.T) {
	cases := map[string]string{
		"/tmp/go-build1234/b001/exe/bench":      "go run ./bench",
		"/root/.cache/go-build/c0/c0a8-d/bench": "go run ./bench",
		"./bin/bench":                           "./bin/bench",
		"/usr/local/bin/rmqrouter-bench":        "/usr/local/bin/rmqrouter-bench",
	}
	for arg0, want := range cases {
		if got := commandName(arg0); got != want {
			t.Errorf("commandName(%q) = %q, want %q", arg0, got, want)
		}
	}
}

func TestNormalizeRouterURL(t *testing.T) {
	got, err := normalizeRouterURL("http://127.0.0.1:8000/")
	if err != nil || got != "http://127.0.0.1:8000" {
		t.Errorf("normalizeRouterURL = %q, %v, want http://127.0.0.1:8000", got, err)
	}
}

func TestParseConfigChecksPlotPath(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "no-such-dir", "plot.svg")
	_, err := parseConfig([]string{"-plot", missing, "-direct-only"}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "-plot") {
		t.Fatalf("parseConfig = %v, want an error about -plot", err)
	}
	if _, err := parseConfig([]string{"-plot", filepath.Join(dir, "plot.svg"), "-direct-only"}, io.Discard); err != nil {
		t.Errorf("parseConfig with a writable -plot: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("the check left %d files in the plot's directory", len(entries))
	}
}
