// Package redistest runs a throwaway redis-server for tests: its own temp
// directory, a free loopback port, no persistence, and the process
// stopped when the test ends. The state store's tests run against it, so
// that the Lua scripts, TIME and expiry are Redis's own, not a fake's.
// Kill and Restart let a test take the server away and bring it back on
// the same address, as an operator's restart would.
package redistest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Binary is the redis-server executable, looked up on PATH when not
// absolute.
var Binary = "redis-server"

// Server is a running redis-server.
type Server struct {
	// Addr is "127.0.0.1:PORT".
	Addr string
	// Password is the requirepass set by StartPassword, or "".
	Password string

	t    testing.TB
	bin  string
	dir  string
	port int

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// Start starts redis-server on a free loopback port. It fails the test
// when redis-server is not installed (scripts/install-test-deps.sh
// installs it) and stops the server in t.Cleanup, printing its log when
// the test failed.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartPassword(t, "")
}

// StartPassword is Start with requirepass set to password.
func StartPassword(t testing.TB, password string) *Server {
	t.Helper()
	bin, err := exec.LookPath(Binary)
	if err != nil {
		t.Fatalf("redis-server not installed (%v): run scripts/install-test-deps.sh (make test does)", err)
	}
	s := &Server{t: t, bin: bin, dir: t.TempDir(), Password: password}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		s.port = port
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if lastErr = s.start(); lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		t.Fatalf("redis-server did not start: %v\n%s", lastErr, s.Log())
	}
	t.Cleanup(func() {
		s.stop(syscall.SIGTERM)
		if t.Failed() {
			t.Logf("redis-server log (%s):\n%s", s.dir, s.Log())
		}
	})
	return s
}

// start runs redis-server on s.port and waits until it answers PING.
func (s *Server) start() error {
	args := []string{
		"--bind", "127.0.0.1",
		"--port", strconv.Itoa(s.port),
		"--dir", s.dir,
		"--logfile", filepath.Join(s.dir, "redis.log"),
		// No persistence: a restart starts empty, as a lost Redis would.
		"--save", "",
		"--appendonly", "no",
		"--daemonize", "no",
		"--databases", "4",
	}
	if s.Password != "" {
		args = append(args, "--requirepass", s.Password)
	}
	cmd := exec.Command(s.bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	if err := waitReady(s.Addr, exited); err != nil {
		cmd.Process.Kill()
		<-exited
		return fmt.Errorf("%v\n%s", err, out.String())
	}
	s.mu.Lock()
	s.cmd, s.exited = cmd, exited
	s.mu.Unlock()
	return nil
}

// waitReady sends PING until redis-server answers (+PONG, or NOAUTH when
// it wants a password: it is up either way), exits, or 10 s pass.
func waitReady(addr string, exited <-chan struct{}) error {
	deadline := time.Now().Add(10 * time.Second)
	var lastErr error
	for time.Now().Before(deadline) {
		if lastErr = ping(addr); lastErr == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("redis-server exited: %v", lastErr)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("redis-server did not answer PING in 10s: %v", lastErr)
}

func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.HasPrefix(line, "+PONG") || strings.HasPrefix(line, "-NOAUTH") {
		return nil
	}
	return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
}

// Kill ends redis-server with SIGKILL, as a crash would, and waits for it
// to be gone. Its data is lost.
func (s *Server) Kill() {
	s.t.Helper()
	s.stop(syscall.SIGKILL)
}

// Restart starts redis-server again on the same address after Kill. It
// fails the test if the server does not come up in time.
func (s *Server) Restart() {
	s.t.Helper()
	s.stop(syscall.SIGTERM)
	var err error
	// The port was ours a moment ago; TIME_WAIT does not stop a listener,
	// but retry briefly should something else grab it in between.
	for attempt := 0; attempt < 5; attempt++ {
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("redis-server did not restart on %s: %v\n%s", s.Addr, err, s.Log())
}

// Pause stops redis-server with SIGSTOP, so that it holds its
// connections and answers nothing (a hung server), until Resume.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a paused redis-server.
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		s.cmd.Process.Signal(sig)
	}
}

func (s *Server) stop(sig syscall.Signal) {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGCONT) // a paused server cannot act on SIGTERM
	cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		<-exited
	}
}

// Log is redis-server's log file so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
	return string(b)
}

// Do sends one command to the server on a fresh connection (AUTH first
// when a password is set) and returns the first line of its reply, for
// tests that inspect or poke the server (INFO, SCRIPT FLUSH) without a
// client library.
func (s *Server) Do(args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	if s.Password != "" {
		if _, err := c.Write(encode("AUTH", s.Password)); err != nil {
			return "", err
		}
		if line, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "+OK") {
			return "", fmt.Errorf("AUTH: %q %v", line, err)
		}
	}
	if _, err := c.Write(encode(args...)); err != nil {
		return "", err
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if strings.HasPrefix(line, "$") { // a bulk string: return its body
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", err
		}
		body := make([]byte, n+2)
		if _, err := io.ReadFull(r, body); err != nil {
			return "", err
		}
		return string(body[:n]), nil
	}
	if strings.HasPrefix(line, "-") {
		return "", fmt.Errorf("redis: %s", line[1:])
	}
	return line, nil
}

func encode(args ...string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	return b.Bytes()
}

// Info returns one field of INFO (e.g. "total_commands_processed").
func (s *Server) Info(field string) (string, error) {
	out, err := s.Do("INFO", "all")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(out, "\r\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return v, nil
		}
	}
	return "", fmt.Errorf("INFO has no %s", field)
}

// freePort finds a free loopback TCP port.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
