package main

import (
	"encoding/binary"
	"net"
	"os"
	"testing"
	"time"
)

func TestParseProcStatOfSelf(t *testing.T) {
	data, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Skipf("no /proc on this system: %v", err)
	}
	if _, err := parseProcStat(data); err != nil {
		t.Fatalf("parseProcStat(/proc/self/stat): %v", err)
	}

	// Burn CPU until the kernel's tick accounting moves, then check that it is seen.
	before, err := readCPUTicks(os.Getpid())
	if err != nil {
		t.Fatalf("readCPUTicks: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	x := 0
	var after cpuTicks
	for time.Now().Before(deadline) {
		for i := range 1_000_000 {
			x += i
		}
		if after, err = readCPUTicks(os.Getpid()); err != nil {
			t.Fatalf("readCPUTicks: %v", err)
		}
		if after.total() > before.total() {
			break
		}
	}
	if after.total() <= before.total() {
		t.Errorf("CPU ticks did not grow after 5 s of busy loop (%d → %d, sum %d)", before.total(), after.total(), x)
	}
}

func TestParseProcStatCommandWithParentheses(t *testing.T) {
	// Fields 14 and 15 (utime, stime) are 1234 and 56; the command name contains ") (".
	line := "4242 (evil) (name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 56 0 0 20 0 3 0 100 1000000 200 18446744073709551615\n"
	got, err := parseProcStat([]byte(line))
	if err != nil {
		t.Fatalf("parseProcStat: %v", err)
	}
	if got.user != 1234 {
		t.Errorf("utime = %d, want 1234", got.user)
	}
	if got.system != 56 {
		t.Errorf("stime = %d, want 56", got.system)
	}
	if got.total() != 1290 {
		t.Errorf("total = %d, want 1290", got.total())
	}
}

func TestParseProcStatRejectsInvalid(t *testing.T) {
	for _, line := range []string{
		"",
		"4242 no parentheses S 1",
		"4242 (short) S 1 2 3",
		"4242 (bad) S 1 4242 4242 0 -1 4194560 100 0 0 0 x 56 0",
	} {
		if _, err := parseProcStat([]byte(line)); err == nil {
			t.Errorf("parseProcStat(%q) returned no error", line)
		}
	}
}

func TestParseProcStatusOfSelf(t *testing.T) {
	usage, err := readMemoryUsage(os.Getpid())
	if err != nil {
		t.Skipf("no /proc status on this system: %v", err)
	}
	if usage.rss <= 0 {
		t.Errorf("VmRSS = %d bytes, want positive", usage.rss)
	}
	if usage.peak < usage.rss {
		t.Errorf("VmHWM = %d bytes is below VmRSS = %d", usage.peak, usage.rss)
	}
}

func TestParseProcStatusUnits(t *testing.T) {
	status := "Name:\tbench\nVmPeak:\t  9000 kB\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\nThreads:\t5\n"
	usage, err := parseProcStatus([]byte(status))
	if err != nil {
		t.Fatalf("parseProcStatus: %v", err)
	}
	if usage.rss != 1024*1024 {
		t.Errorf("rss = %d, want 1 MiB", usage.rss)
	}
	if usage.peak != 2048*1024 {
		t.Errorf("peak = %d, want 2 MiB", usage.peak)
	}

	if _, err := parseProcStatus([]byte("Name:\tkthreadd\nThreads:\t1\n")); err == nil {
		t.Errorf("parseProcStatus without VmRSS returned no error")
	}
	if _, err := parseProcStatus([]byte("VmHWM:\t1 kB\nVmRSS:\t1 MB\n")); err == nil {
		t.Errorf("parseProcStatus with an unknown unit returned no error")
	}
}

func TestParseAuxvClockTicks(t *testing.T) {
	words := []uint64{6, 4096, auxvClockTicks, 250, 0, 0}
	data := make([]byte, 8*len(words))
	for i, w := range words {
		binary.NativeEndian.PutUint64(data[8*i:], w)
	}
	hz, ok := parseAuxvClockTicks(data, 8)
	if !ok || hz != 250 {
		t.Errorf("parseAuxvClockTicks = %d, %v, want 250, true", hz, ok)
	}

	// AT_NULL ends the vector: an entry after it is not read.
	words = []uint64{0, 0, auxvClockTicks, 250}
	for i, w := range words {
		binary.NativeEndian.PutUint64(data[8*i:], w)
	}
	if _, ok := parseAuxvClockTicks(data[:32], 8); ok {
		t.Errorf("parseAuxvClockTicks read past AT_NULL")
	}

	if got := clockTicksPerSecond(); got <= 0 {
		t.Errorf("clockTicksPerSecond() = %d, want positive", got)
	}
}

func TestFindListenerPIDOfSelf(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port

	pid, err := findListenerPID(port)
	if err != nil {
		t.Fatalf("findListenerPID(%d): %v", port, err)
	}
	if pid != os.Getpid() {
		t.Errorf("findListenerPID(%d) = %d, want this process %d", port, pid, os.Getpid())
	}
}

func TestListeningSocketInodes(t *testing.T) {
	table := "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n" +
		"   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0 100 0 0 10 0\n" +
		"   1: 0100007F:1F40 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 222 1 0 100 0 0 10 0\n" +
		"   2: 0100007F:1F41 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 333 1 0 100 0 0 10 0\n"
	got := listeningSocketInodes([]byte(table), 0x1F40)
	if len(got) != 1 || got[0] != "111" {
		t.Errorf("listeningSocketInodes(port %d) = %v, want [111] (the established socket 222 is not listening)", 0x1F40, got)
	}
	if got := listeningSocketInodes([]byte(table), 9); len(got) != 0 {
		t.Errorf("listeningSocketInodes(port 9) = %v, want none", got)
	}
}
