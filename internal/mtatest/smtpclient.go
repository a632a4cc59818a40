package mtatest

import (
	"fmt"
	"net"
	"net/textproto"
	"testing"
	"time"
)

// This file is for the harnesses' own tests: a raw SMTP client that checks
// every reply code and fails the test otherwise.

// Session is one raw SMTP connection of a test. The embedded textproto.Conn
// is there for what the helpers do not cover (DotWriter, writing raw bytes
// through W).
type Session struct {
	*textproto.Conn
	t testing.TB
}

// Dial connects to addr, with a 30s deadline on the whole session, and
// reads the 220 greeting; it returns the session and the greeting's text.
// The connection is closed when the test ends.
func Dial(t testing.TB, addr string) (*Session, string) {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return NewSession(t, nc)
}

// NewSession makes a Session of a connection the test opened itself (and,
// say, sent a PROXY header on), and reads the 220 greeting.
func NewSession(t testing.TB, nc net.Conn) (*Session, string) {
	t.Helper()
	t.Cleanup(func() { nc.Close() })
	if err := nc.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	s := &Session{Conn: textproto.NewConn(nc), t: t}
	return s, s.Expect(220)
}

// Expect reads one reply and fails the test unless its code is want; it
// returns the reply's text, its lines joined by "\n".
func (s *Session) Expect(want int) string {
	s.t.Helper()
	code, msg, err := s.ReadResponse(want)
	if err != nil {
		s.t.Fatalf("want %d, got %d %q: %v", want, code, msg, err)
	}
	return msg
}

// Do sends one command line (format and args as for fmt.Sprintf) and
// expects a reply with code want; it returns the reply's text.
func (s *Session) Do(want int, format string, args ...any) string {
	s.t.Helper()
	if err := s.PrintfLine(format, args...); err != nil {
		s.t.Fatal(err)
	}
	return s.Expect(want)
}

// Send runs one transaction that every server accepts: MAIL FROM:<from>,
// RCPT TO each of to, DATA, and data (a header and body with CRLF line
// endings, dot-stuffed by Send), each answered with 250 (354 for DATA).
func (s *Session) Send(from string, to []string, data string) {
	s.t.Helper()
	s.Do(250, "MAIL FROM:<%s>", from)
	for _, rcpt := range to {
		s.Do(250, "RCPT TO:<%s>", rcpt)
	}
	s.Do(354, "DATA")
	w := s.DotWriter()
	if _, err := fmt.Fprint(w, data); err != nil {
		s.t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		s.t.Fatal(err)
	}
	s.Expect(250)
}
