package main

import "testing"

func TestParseErlangPID(t *testing.T) {
	pid, err := parseErlangPID("\"2965\"\n")
	if err != nil || pid != 2965 {
		t.Errorf("parseErlangPID = %d, %v, want 2965", pid, err)
	}
	for _, bad := range []string{"", "\"\"", "{badrpc,nodedown}", "\"-1\""} {
		if _, err := parseErlangPID(bad); err == nil {
			t.Errorf("parseErlangPID(%q) returned no error", bad)
		}
	}
}

func TestIsLoopbackHost(t *testing.T) {
	cases := map[string]bool{
		"127.0.0.1":   true,
		"127.1.2.3":   true,
		"::1":         true,
		"[::1]":       true,
		"localhost":   true,
		"LOCALHOST":   true,
		"10.0.0.1":    false,
		"example.org": false,
		"":            false,
	}
	for host, want := range cases {
		if got := isLoopbackHost(host); got != want {
			t.Errorf("isLoopbackHost(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestPrefillCount(t *testing.T) {
	env := &environment{cfg: config{prefillMax: 50000}}
	if got := env.prefillCount(sideRouter, 10e9); got != 20000 {
		t.Errorf("first prefill of a 10 s round = %d, want 20000", got)
	}
	if got := env.prefillCount(sideRouter, 1e8); got != 1000 {
		t.Errorf("first prefill of a 0.1 s round = %d, want the minimum 1000", got)
	}
	env.lastRate[sideRouter] = 1000
	if got := env.prefillCount(sideRouter, 10e9); got != 16000 {
		t.Errorf("prefill after 1000 msg/s = %d, want 1.5 × 10 s × 1000 + 1000 = 16000", got)
	}
	env.lastRate[sideDirect] = 100000
	if got := env.prefillCount(sideDirect, 10e9); got != 50000 {
		t.Errorf("prefill = %d, want the -prefill-max 50000", got)
	}
	env.cfg.prefill = 123
	if got := env.prefillCount(sideDirect, 10e9); got != 123 {
		t.Errorf("prefill = %d, want the fixed -prefill 123", got)
	}
}

func TestMixedWorkerSplit(t *testing.T) {
	cases := []struct{ concurrency, publishers, consumers int }{
		{1, 1, 1},
		{2, 1, 1},
		{3, 2, 1},
		{16, 8, 8},
	}
	for _, c := range cases {
		if p, k := mixedPublishers(c.concurrency), mixedConsumers(c.concurrency); p != c.publishers || k != c.consumers {
			t.Errorf("concurrency %d: %d publishers, %d consumers, want %d, %d", c.concurrency, p, k, c.publishers, c.consumers)
		}
	}
	if got := (scenario{name: "mixed"}).workerCount(1); got != 2 {
		t.Errorf("mixed workers at concurrency 1 = %d, want 2", got)
	}
	if got := (scenario{name: "fetch-ack"}).workerCount(7); got != 7 {
		t.Errorf("fetch-ack workers at concurrency 7 = %d, want 7", got)
	}
}
