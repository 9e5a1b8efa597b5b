package main

import (
	"errors"
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestConfigDefaults(t *testing.T) {
	c, err := loadConfig(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != "127.0.0.1:8000" {
		t.Errorf("http addr = %q", c.HTTPAddr)
	}
	if c.broker.Endpoint.String() != "amqp://127.0.0.1:5672" || c.broker.User != "guest" || c.broker.Vhost != "/" {
		t.Errorf("broker = %+v", c.broker.Endpoint)
	}
	if c.PublishTimeout != 10*time.Second || c.SessionIdleTimeout != 5*time.Minute || c.MaxBodyBytes != 1<<20 {
		t.Errorf("defaults: publish %v, session idle %v, body %d", c.PublishTimeout, c.SessionIdleTimeout, c.MaxBodyBytes)
	}
	if c.GeneratedIDs != "compact" {
		t.Errorf("generated ids = %q, want compact", c.GeneratedIDs)
	}
}

func TestConfigPrecedence(t *testing.T) {
	vars := map[string]string{
		"RMQROUTER_PUBLISH_TIMEOUT": "3s",
		"PUBLISH_TIMEOUT":           "7",
		"RABBITMQ_PREFETCH_COUNT":   "25",
		"RABBITMQ_URL":              "amqp://u:p@broker.invalid:5673/vh",
		"LOG_LEVEL":                 "debug",
	}
	c, err := loadConfig([]string{"--http-addr", "127.0.0.1:9"}, env(vars), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != "127.0.0.1:9" {
		t.Errorf("flag lost: %q", c.HTTPAddr)
	}
	if c.PublishTimeout != 3*time.Second {
		t.Errorf("RMQROUTER_ should win over the alias: %v", c.PublishTimeout)
	}
	if c.Prefetch != 25 {
		t.Errorf("alias RABBITMQ_PREFETCH_COUNT ignored: %d", c.Prefetch)
	}
	if c.broker.Vhost != "vh" || c.broker.Endpoint.Port != 5673 {
		t.Errorf("alias RABBITMQ_URL ignored: %+v", c.broker)
	}
	if c.LogLevel != "debug" {
		t.Errorf("alias LOG_LEVEL ignored: %q", c.LogLevel)
	}

	c, err = loadConfig([]string{"--publish-timeout", "250ms"}, env(vars), io.Discard)
	if err != nil || c.PublishTimeout != 250*time.Millisecond {
		t.Errorf("flag should win over the environment: %v %v", c, err)
	}
	c, err = loadConfig(nil, env(map[string]string{"PUBLISH_TIMEOUT": "2.5"}), io.Discard)
	if err != nil || c.PublishTimeout != 2500*time.Millisecond {
		t.Errorf("seconds as a number: %v %v", c, err)
	}
}

func TestConfigInvalidNamesSetting(t *testing.T) {
	cases := []struct {
		args []string
		vars map[string]string
		want string
	}{
		{[]string{"--publish-timeout", "soon"}, nil, "--publish-timeout"},
		{[]string{"--publish-timeout", "0s"}, nil, "--publish-timeout"},
		{nil, map[string]string{"RMQROUTER_PREFETCH": "many"}, "RMQROUTER_PREFETCH"},
		{nil, map[string]string{"RABBITMQ_PREFETCH_COUNT": "0"}, "invalid RABBITMQ_PREFETCH_COUNT: 0 is outside"},
		{[]string{"--prefetch", "0"}, map[string]string{"RABBITMQ_PREFETCH_COUNT": "5"}, "invalid --prefetch: 0 is outside"},
		{nil, map[string]string{"RMQROUTER_GENERATED_IDS": "short"}, `invalid RMQROUTER_GENERATED_IDS "short"`},
		{nil, map[string]string{"LOG_FORMAT": "xml"}, `invalid LOG_FORMAT "xml"`},
		{nil, map[string]string{"RMQROUTER_RETRY_MAX_DELAY": "1ms"}, "invalid RMQROUTER_RETRY_MAX_DELAY: 1ms is less than --retry-base-delay (1s)"},
		{nil, map[string]string{"RMQROUTER_RETRY_BASE_DELAY": "1m"}, "invalid --retry-max-delay: 30s is less than RMQROUTER_RETRY_BASE_DELAY (1m0s)"},
		{nil, map[string]string{"RMQROUTER_PREFETCH": "0", "RABBITMQ_PREFETCH_COUNT": "5"}, "invalid RMQROUTER_PREFETCH: 0 is outside"},
		{[]string{"--http-addr", "8000"}, nil, "--http-addr"},
		{[]string{"--log-format", "xml"}, nil, "--log-format"},
		{[]string{"--generated-ids", "short"}, nil, "--generated-ids"},
		{[]string{"--amqp-url", "http://x"}, nil, "--amqp-url"},
		{[]string{"--retry-base-delay", "1m", "--retry-max-delay", "1s"}, nil, "--retry-max-delay"},
	}
	for _, c := range cases {
		_, err := loadConfig(c.args, env(c.vars), io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v %v: error %v, want one naming %s", c.args, c.vars, err, c.want)
		}
	}
}

func TestConfigErrorHidesPassword(t *testing.T) {
	const url = "amqp://user:s3cr3t-pw@host:notaport/"
	cases := []struct {
		args []string
		vars map[string]string
	}{
		{[]string{"--amqp-url", url}, nil},
		{nil, map[string]string{"RABBITMQ_URL": url}},
		{nil, map[string]string{"AMQP_URL": url}},
		{nil, map[string]string{"RABBITMQ_ENDPOINTS": url}},
		{nil, map[string]string{"RMQROUTER_HTTP_ADDR": url}},
	}
	for _, c := range cases {
		_, err := loadConfig(c.args, env(c.vars), io.Discard)
		if err == nil {
			t.Errorf("%v %v: invalid URL accepted", c.args, c.vars)
			continue
		}
		if strings.Contains(err.Error(), "s3cr3t-pw") {
			t.Errorf("%v %v: error reveals the password: %v", c.args, c.vars, err)
		}
	}
}

func TestGeneratedIDsReachServer(t *testing.T) {
	for _, format := range []string{"compact", "uuid"} {
		c, err := loadConfig([]string{"--generated-ids", format}, env(nil), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.server().IDFormat; got != format {
			t.Errorf("--generated-ids %s: server id format %q, want %s", format, got, format)
		}
	}
}

// TestInvalidConfigExitsTwo runs the built binary: invalid configuration
// exits with status 2 and one line on stderr.
func TestInvalidConfigExitsTwo(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "rmqrouter")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "--publish-timeout", "never")
	cmd.Env = append(os.Environ(), "RMQROUTER_HTTP_ADDR=127.0.0.1:0")
	out, err := cmd.CombinedOutput()
	exitErr, ok := err.(*exec.ExitError)
	if !ok || exitErr.ExitCode() != 2 {
		t.Fatalf("exit = %v, want status 2; output %q", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], "--publish-timeout") {
		t.Fatalf("output %q, want one line naming --publish-timeout", out)
	}
}

func TestConfigHelpNamesTypes(t *testing.T) {
	var out strings.Builder
	_, err := loadConfig([]string{"-h"}, env(nil), &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h returned %v, want flag.ErrHelp", err)
	}
	for _, want := range []string{
		"--http-addr string",
		"--publish-channels int",
		"--publish-timeout duration",
		"variable RMQROUTER_PUBLISH_TIMEOUT or PUBLISH_TIMEOUT; default \"10s\"",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, out.String())
		}
	}
}

func TestConfigUnknownFlagOneLine(t *testing.T) {
	var out strings.Builder
	_, err := loadConfig([]string{"--bogus"}, env(nil), &out)
	if err == nil {
		t.Fatal("an unknown flag was accepted")
	}
	if !strings.Contains(err.Error(), "-bogus") {
		t.Errorf("error %q does not name the flag", err)
	}
	if !strings.Contains(err.Error(), "rmqrouter -h") {
		t.Errorf("error %q does not point to the help", err)
	}
	if out.Len() != 0 {
		t.Errorf("usage printed for an unknown flag:\n%s", out.String())
	}
}
