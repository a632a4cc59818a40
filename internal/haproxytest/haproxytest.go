// Package haproxytest runs a throwaway HAProxy — the TCP load balancer
// several moat instances sit behind (Debian package haproxy) — for tests:
// a config written into a temp dir, a frontend on a free loopback port
// balancing round-robin over the given backends with a PROXY v2 header
// (so each moat sees the real client), health checks, and the process
// stopped when the test ends.
package haproxytest

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"moat/internal/syncbuf"
)

// Binary is the haproxy executable.
var Binary = "/usr/sbin/haproxy"

// Server is a running HAProxy.
type Server struct {
	// Addr is the frontend's "127.0.0.1:PORT": clients connect here.
	Addr string
	// Stats is the address of its statistics page (HTTP).
	Stats string
}

// Start balances a frontend over backends ("127.0.0.1:PORT" each),
// round-robin, sending a PROXY v2 header on every connection and health
// check, and redispatching a connection whose server refuses it.
func Start(t testing.TB, backends []string) *Server {
	t.Helper()
	if _, err := os.Stat(Binary); err != nil {
		t.Fatalf("haproxy not installed (%v): run scripts/install-test-deps.sh (make test does)", err)
	}
	dir := t.TempDir()
	s := &Server{Addr: freeAddr(t), Stats: freeAddr(t)}
	var servers strings.Builder
	for i, b := range backends {
		// check-send-proxy: the health check speaks the same PROXY v2 as
		// the traffic, which moat requires from a trusted balancer.
		fmt.Fprintf(&servers, "\tserver m%d %s send-proxy-v2 check check-send-proxy inter 300ms fall 1 rise 1\n", i, b)
	}
	cfg := fmt.Sprintf(`global
	maxconn 2000
defaults
	mode tcp
	timeout connect 2s
	timeout client 60s
	timeout server 60s
	retries 3
	option redispatch
frontend smtp
	bind %s
	default_backend moats
backend moats
	balance roundrobin
%sfrontend stats
	mode http
	bind %s
	stats enable
	stats uri /stats
`, s.Addr, servers.String(), s.Stats)
	file := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(Binary, "-db", "-f", file) // -db: foreground, no daemon
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("haproxy output:\n%s", out.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := s.stats(); err == nil {
			return s
		}
		select {
		case <-exited:
			t.Fatalf("haproxy exited:\n%s", out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("haproxy did not come up within 10 s:\n%s", out.String())
		}
	}
}

// Sessions returns how many sessions each backend server has taken in
// all ("m0", "m1", ...), from HAProxy's statistics.
func (s *Server) Sessions(t testing.TB) map[string]int {
	t.Helper()
	rows, err := s.stats()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, r := range rows {
		if r["pxname"] == "moats" && strings.HasPrefix(r["svname"], "m") {
			n, _ := strconv.Atoi(r["stot"])
			out[r["svname"]] = n
		}
	}
	return out
}

// Up returns the backend servers HAProxy's health checks find up.
func (s *Server) Up(t testing.TB) map[string]bool {
	t.Helper()
	rows, err := s.stats()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, r := range rows {
		if r["pxname"] == "moats" && strings.HasPrefix(r["svname"], "m") {
			out[r["svname"]] = strings.HasPrefix(r["status"], "UP")
		}
	}
	return out
}

func (s *Server) stats() ([]map[string]string, error) {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + s.Stats + "/stats;csv")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	r := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(body, []byte("# "))))
	r.FieldsPerRecord = -1
	recs, err := r.ReadAll()
	if err != nil || len(recs) == 0 {
		return nil, fmt.Errorf("stats: %v", err)
	}
	var out []map[string]string
	for _, rec := range recs[1:] {
		m := map[string]string{}
		for i, k := range recs[0] {
			if i < len(rec) {
				m[k] = rec[i]
			}
		}
		out = append(out, m)
	}
	return out, nil
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// lockedBuffer collects a child process's output.
type lockedBuffer = syncbuf.Buffer
