package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// routerProcess is a router the harness built and started for the run.
type routerProcess struct {
	cmd     *exec.Cmd
	url     string
	logPath string
	exited  chan struct{}
	waitErr error
}

// buildRouter compiles ./cmd/rmqrouter of the module that contains the working directory
// into dir and returns the binary's path.
func buildRouter(ctx context.Context, dir string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("find the module root with go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("the working directory is not inside the rmqrouter module: run the harness from the repository, or pass -router-url or -router-bin")
	}

	bin := filepath.Join(dir, "rmqrouter")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/rmqrouter")
	build.Dir = filepath.Dir(gomod)
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/rmqrouter failed: %w\n%s", err, bytes.TrimSpace(out))
	}
	return bin, nil
}

// freeLoopbackPort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port on 127.0.0.1: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	return port, l.Close()
}

// startRouter starts bin on a free loopback port with its log in dir/router.log and waits
// until its readiness probe returns 200.
func startRouter(ctx context.Context, bin, amqpURL string, extraFlags []string, dir string, readyTimeout time.Duration) (*routerProcess, error) {
	port, err := freeLoopbackPort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))

	logPath := filepath.Join(dir, "router.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create router log: %w", err)
	}
	defer logFile.Close() // the child keeps its own descriptor

	args := append([]string{"--amqp-url", amqpURL, "--http-addr", addr, "--log-level", "warn"}, extraFlags...)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// A process group of its own keeps a Ctrl-C on the terminal from reaching the router,
	// which the harness stops itself after the last round. Pdeathsig sends it SIGTERM if
	// the harness dies without running its cleanup.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start router %s: %w", bin, err)
	}

	p := &routerProcess{cmd: cmd, url: "http://" + addr, logPath: logPath, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()

	if err := p.waitReady(ctx, readyTimeout); err != nil {
		_ = p.stop(5 * time.Second)
		// The log is in the run's temporary directory, which is removed when run returns,
		// so its last lines go into the error instead of its path.
		return nil, fmt.Errorf("%w\nlast lines of the router's log:\n%s", err, tailFile(logPath, 20))
	}
	return p, nil
}

func (p *routerProcess) pid() int { return p.cmd.Process.Pid }

// waitReady polls the started router until it is ready (see the function waitReady).
func (p *routerProcess) waitReady(ctx context.Context, timeout time.Duration) error {
	if err := waitReady(ctx, p.url, timeout, p.exited); err != nil {
		if errors.Is(err, errExited) {
			return fmt.Errorf("router exited before it was ready: %v", p.waitErr)
		}
		return err
	}
	return nil
}

// errExited is returned by waitReady when the router process ended.
var errExited = errors.New("router exited")

// waitReady polls GET /health/ready of the router at baseURL, and /ready if that is not
// found, every 100 ms until it responds 200 or timeout passes. exited, when not nil, ends
// the wait with errExited once it is closed.
func waitReady(ctx context.Context, baseURL string, timeout time.Duration, exited <-chan struct{}) error {
	deadline := time.Now().Add(timeout)
	lastProblem := "no answer yet"
	for {
		for _, path := range []string{"/health/ready", "/ready"} {
			status, err := probe(baseURL + path)
			if err == nil && status == fasthttp.StatusOK {
				return nil
			}
			if err != nil {
				lastProblem = err.Error()
			} else {
				lastProblem = fmt.Sprintf("GET %s returned %d", path, status)
			}
			if status != fasthttp.StatusNotFound {
				break
			}
		}

		select {
		case <-exited:
			return errExited
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("router not ready at %s after %s: %s", baseURL, timeout, lastProblem)
		}
	}
}

// probeClient checks readiness. Unlike fasthttp's default client it dials IPv6 addresses
// too, so a router on [::1] or behind a host name that resolves to ::1 is found.
var probeClient = &fasthttp.Client{DialDualStack: true}

func probe(url string) (int, error) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(url)
	if err := probeClient.DoTimeout(req, resp, time.Second); err != nil {
		return 0, err
	}
	return resp.StatusCode(), nil
}

// stop sends SIGTERM, and SIGKILL if the router has not exited after timeout.
func (p *routerProcess) stop(timeout time.Duration) error {
	select {
	case <-p.exited:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return nil
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("router did not exit within %s of SIGTERM and was killed", timeout)
	}
}

func tailFile(path string, lines int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "(unreadable: " + err.Error() + ")"
	}
	all := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// listeningSocketInodes returns the inodes of the sockets in LISTEN state on port in the
// contents of /proc/net/tcp or /proc/net/tcp6 (see proc(5)).
func listeningSocketInodes(table []byte, port int) []string {
	const stateListen = "0A"
	var inodes []string
	scanner := bufio.NewScanner(bytes.NewReader(table))
	for scanner.Scan() {
		fields := strings.Fields(scanner.Text())
		// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
		if len(fields) < 10 || fields[3] != stateListen {
			continue
		}
		_, hexPort, ok := strings.Cut(fields[1], ":")
		if !ok {
			continue
		}
		p, err := strconv.ParseUint(hexPort, 16, 16)
		if err != nil || int(p) != port {
			continue
		}
		inodes = append(inodes, fields[9])
	}
	return inodes
}

// findListenerPID returns the id of the process that listens on TCP port, by matching the
// socket inodes of /proc/net/tcp{,6} against the descriptors in /proc/<pid>/fd. It finds
// only processes whose descriptors this user may read.
func findListenerPID(port int) (int, error) {
	targets := map[string]bool{}
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(table)
		if err != nil {
			continue
		}
		for _, inode := range listeningSocketInodes(data, port) {
			targets["socket:["+inode+"]"] = true
		}
	}
	if len(targets) == 0 {
		return 0, fmt.Errorf("no socket listens on port %d in /proc/net/tcp", port)
	}

	procs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, proc := range procs {
		pid, err := strconv.Atoi(proc.Name())
		if err != nil {
			continue
		}
		fdDir := filepath.Join("/proc", proc.Name(), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			link, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
			if err == nil && targets[link] {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("no readable process owns the socket listening on port %d", port)
}
