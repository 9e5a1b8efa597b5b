package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
)

// cpuTicks is a process's user and system CPU time in clock ticks, fields 14 and 15 of
// /proc/<pid>/stat (see proc(5)).
type cpuTicks struct {
	user   uint64
	system uint64
}

func (t cpuTicks) total() uint64 { return t.user + t.system }

// parseProcStat extracts utime and stime from the contents of /proc/<pid>/stat. The
// command name in field 2 is in parentheses and may itself contain spaces and
// parentheses, so the fields are counted from the last ')'.
func parseProcStat(data []byte) (cpuTicks, error) {
	end := bytes.LastIndexByte(data, ')')
	if end < 0 {
		return cpuTicks{}, errors.New("invalid /proc stat line: no ')' after the command name")
	}

	// After the command name come field 3 (state) onwards, so utime (field 14) is at
	// index 11 and stime (field 15) at index 12.
	fields := bytes.Fields(data[end+1:])
	if len(fields) < 13 {
		return cpuTicks{}, fmt.Errorf("invalid /proc stat line: %d fields after the command name, expected at least 13", len(fields))
	}
	user, err := strconv.ParseUint(string(fields[11]), 10, 64)
	if err != nil {
		return cpuTicks{}, fmt.Errorf("invalid utime in /proc stat line: %w", err)
	}
	system, err := strconv.ParseUint(string(fields[12]), 10, 64)
	if err != nil {
		return cpuTicks{}, fmt.Errorf("invalid stime in /proc stat line: %w", err)
	}
	return cpuTicks{user: user, system: system}, nil
}

// readCPUTicks reads the CPU time of process pid from /proc.
func readCPUTicks(pid int) (cpuTicks, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return cpuTicks{}, err
	}
	return parseProcStat(data)
}

// memoryUsage is the current and the peak resident set size of a process in bytes,
// the VmRSS and VmHWM lines of /proc/<pid>/status.
type memoryUsage struct {
	rss  int64
	peak int64
}

// parseProcStatus extracts VmRSS and VmHWM from the contents of /proc/<pid>/status, whose
// values are in kB (1024 bytes).
func parseProcStatus(data []byte) (memoryUsage, error) {
	var usage memoryUsage
	var foundRSS, foundPeak bool
	for line := range bytes.Lines(data) {
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		var target *int64
		switch string(name) {
		case "VmRSS":
			target, foundRSS = &usage.rss, true
		case "VmHWM":
			target, foundPeak = &usage.peak, true
		default:
			continue
		}

		fields := bytes.Fields(value)
		if len(fields) != 2 || string(fields[1]) != "kB" {
			return memoryUsage{}, fmt.Errorf("invalid %s line in /proc status: %q", name, bytes.TrimSpace(line))
		}
		kib, err := strconv.ParseInt(string(fields[0]), 10, 64)
		if err != nil {
			return memoryUsage{}, fmt.Errorf("invalid %s value in /proc status: %w", name, err)
		}
		*target = kib * 1024
	}
	if !foundRSS || !foundPeak {
		return memoryUsage{}, errors.New("no VmRSS or VmHWM line in /proc status (a kernel thread or a zombie process)")
	}
	return usage, nil
}

// readMemoryUsage reads the resident set size of process pid from /proc.
func readMemoryUsage(pid int) (memoryUsage, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memoryUsage{}, err
	}
	return parseProcStatus(data)
}

// auxvClockTicks is AT_CLKTCK from <elf.h>: the auxiliary vector entry that carries the
// kernel's USER_HZ, the unit of the CPU times in /proc/<pid>/stat.
const auxvClockTicks = 17

// parseAuxvClockTicks finds AT_CLKTCK in the contents of /proc/self/auxv, a sequence of
// (type, value) pairs of native-endian machine words, 8 bytes each on 64-bit systems.
func parseAuxvClockTicks(data []byte, wordSize int) (int64, bool) {
	pair := 2 * wordSize
	for offset := 0; offset+pair <= len(data); offset += pair {
		var kind, value uint64
		if wordSize == 8 {
			kind = binary.NativeEndian.Uint64(data[offset:])
			value = binary.NativeEndian.Uint64(data[offset+8:])
		} else {
			kind = uint64(binary.NativeEndian.Uint32(data[offset:]))
			value = uint64(binary.NativeEndian.Uint32(data[offset+4:]))
		}
		if kind == 0 { // AT_NULL ends the vector
			return 0, false
		}
		if kind == auxvClockTicks && value > 0 {
			return int64(value), true
		}
	}
	return 0, false
}

// clockTicksPerSecond returns USER_HZ for this kernel from the auxiliary vector, or 100,
// the value on every mainstream Linux architecture, when /proc/self/auxv is unreadable.
var clockTicksPerSecond = sync.OnceValue(func() int64 {
	data, err := os.ReadFile("/proc/self/auxv")
	if err != nil {
		return 100
	}
	wordSize := strconv.IntSize / 8
	if hz, ok := parseAuxvClockTicks(data, wordSize); ok {
		return hz
	}
	return 100
})

// ticksToSeconds converts a CPU time difference in clock ticks to seconds.
func ticksToSeconds(ticks uint64) float64 {
	return float64(ticks) / float64(clockTicksPerSecond())
}
