// Command bench is the load harness of rmqrouter. In one run it measures the router and
// direct amqp091-go clients on the same RabbitMQ broker, with the same message size,
// persistence and concurrency. It reports throughput, latency percentiles, the CPU time of
// the router and the broker, and the router's memory.
//
// Run it from the repository root with go run ./bench. The flags are listed by -h.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
)

func main() {
	cfg, err := parseConfig(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	cfg.commandLine = strings.TrimSpace(commandName(os.Args[0]) + " " + strings.Join(os.Args[1:], " "))

	// The first interrupt stops the rounds and starts the cleanup. The handler is then
	// removed, so a second interrupt ends the process at once, cleanup or not.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop()
	}()

	err = run(ctx, cfg, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// commandName returns how the report names the harness: go run ./bench when the go tool
// built it into its temporary or cache directory, else the path it was started by.
func commandName(arg0 string) string {
	path := filepath.ToSlash(arg0)
	if strings.Contains(path, "/go-build") {
		return "go run ./bench"
	}
	if cache := os.Getenv("GOCACHE"); cache != "" && strings.HasPrefix(path, filepath.ToSlash(cache)+"/") {
		return "go run ./bench"
	}
	return arg0
}
