package redistest

import (
	"strings"
	"testing"
)

func TestStartKillRestart(t *testing.T) {
	s := Start(t)
	if got, err := s.Do("PING"); err != nil || got != "+PONG" {
		t.Fatalf("PING = %q, %v", got, err)
	}
	if got, err := s.Do("SET", "k", "v"); err != nil || got != "+OK" {
		t.Fatalf("SET = %q, %v", got, err)
	}
	if got, err := s.Do("GET", "k"); err != nil || got != "v" {
		t.Fatalf("GET = %q, %v", got, err)
	}
	if v, err := s.Info("tcp_port"); err != nil || !strings.HasSuffix(s.Addr, ":"+v) {
		t.Fatalf("INFO tcp_port = %q, %v; Addr %s", v, err, s.Addr)
	}
	s.Kill()
	if _, err := s.Do("PING"); err == nil {
		t.Fatal("PING answered after Kill")
	}
	s.Restart()
	if got, err := s.Do("GET", "k"); err != nil || got != "" {
		// Nothing persists: a bulk nil reads as "".
		t.Fatalf("GET after restart = %q, %v; want empty", got, err)
	}
}

func TestPassword(t *testing.T) {
	s := StartPassword(t, "sekrit")
	if got, err := s.Do("PING"); err != nil || got != "+PONG" {
		t.Fatalf("PING with AUTH = %q, %v", got, err)
	}
	s.Password = ""
	if _, err := s.Do("PING"); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Fatalf("PING without AUTH: %v, want NOAUTH", err)
	}
}
