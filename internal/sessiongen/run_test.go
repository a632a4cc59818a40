package sessiongen

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fake is a tiny SMTP server for testing the client side: it accepts
// everything in sequence, records the messages it receives, and notices
// a client that pipelines without PIPELINING or sends BDAT without
// CHUNKING.
type fake struct {
	ln   net.Listener
	addr string
	// What the EHLO reply offers.
	pipelining, chunking, size, starttls bool
	// closeAfter, when > 0, closes the connection without a reply when
	// that many commands have been read.
	closeAfter int
	// silentAfter, when > 0, stops answering after that many commands.
	silentAfter int
	// earlyRead reads the first command before sending the greeting.
	earlyRead bool
	// malformed answers every command with a line that is no reply.
	malformed bool

	cert tls.Certificate
	wg   sync.WaitGroup

	mu         sync.Mutex
	messages   [][]byte // every message received, DATA or BDAT
	violations []string
	early      []string // commands that arrived before the greeting
}

func startFake(t *testing.T, f *fake) *fake {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.ln, f.addr = ln, ln.Addr().String()
	f.cert = selfSigned(t)
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				defer nc.Close()
				nc.SetDeadline(time.Now().Add(20 * time.Second))
				f.serve(nc)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		f.wg.Wait()
	})
	return f
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fake.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"fake.test"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func (f *fake) violate(format string, args ...any) {
	f.mu.Lock()
	f.violations = append(f.violations, fmt.Sprintf(format, args...))
	f.mu.Unlock()
}

func (f *fake) serve(nc net.Conn) {
	r := bufio.NewReader(nc)
	w := bufio.NewWriter(nc)
	say := func(s string) bool {
		w.WriteString(s + "\r\n")
		return w.Flush() == nil
	}
	readLine := func() (string, bool) {
		l, err := r.ReadString('\n')
		if err != nil {
			return "", false
		}
		return strings.TrimRight(l, "\r\n"), true
	}
	var bdat0 bool
	if f.earlyRead {
		l, ok := readLine()
		if !ok {
			return
		}
		f.mu.Lock()
		f.early = append(f.early, l)
		f.mu.Unlock()
		say("220 fake.test ESMTP")
		if !f.answer(l, &bdat0, r, say) {
			return
		}
	} else if !say("220 fake.test ESMTP") {
		return
	}
	cmds := 0
	var ehlo, bdat bool
	for {
		l, ok := readLine()
		if !ok {
			return
		}
		cmds++
		if f.closeAfter > 0 && cmds >= f.closeAfter {
			return
		}
		if f.silentAfter > 0 && cmds >= f.silentAfter {
			io.Copy(io.Discard, r) // until the client gives up
			return
		}
		// Without PIPELINING, a client must wait for each reply (RFC
		// 2920 §3.1 allows nothing else); BDAT carries its chunk, and
		// STARTTLS is checked below.
		verb := strings.ToUpper(strings.Fields(l + " x")[0])
		if !f.pipelining && ehlo && r.Buffered() > 0 && verb != "BDAT" {
			f.violate("pipelined without PIPELINING after %q", l)
		}
		if verb == "EHLO" {
			ehlo = true
		}
		if verb == "STARTTLS" {
			if !f.starttls {
				say("502 5.5.1 no")
				continue
			}
			say("220 2.0.0 go ahead")
			tc := tls.Server(nc, &tls.Config{Certificates: []tls.Certificate{f.cert}})
			if tc.Handshake() != nil {
				return
			}
			nc = tc
			r = bufio.NewReader(tc)
			w = bufio.NewWriter(tc)
			ehlo = false
			continue
		}
		if !f.answer(l, &bdat, r, say) {
			return
		}
	}
}

// answer answers one command; false ends the session.
func (f *fake) answer(l string, bdat *bool, r *bufio.Reader, say func(string) bool) bool {
	if f.malformed {
		return say("hello there")
	}
	fields := strings.Fields(l)
	verb := ""
	if len(fields) > 0 {
		verb = strings.ToUpper(fields[0])
	}
	switch verb {
	case "EHLO":
		lines := []string{"250-fake.test"}
		if f.pipelining {
			lines = append(lines, "250-PIPELINING")
		}
		if f.chunking {
			lines = append(lines, "250-CHUNKING")
		}
		if f.size {
			lines = append(lines, "250-SIZE 100000")
		}
		if f.starttls {
			lines = append(lines, "250-STARTTLS")
		}
		lines = append(lines, "250 ENHANCEDSTATUSCODES")
		return say(strings.Join(lines, "\r\n"))
	case "MAIL", "RCPT":
		if strings.Contains(l, "refuse-me") {
			return say("550 5.7.1 refused")
		}
		fallthrough
	case "HELO", "RSET", "NOOP":
		if verb == "MAIL" && strings.Contains(l, "SIZE=") && !f.size {
			f.violate("SIZE without SIZE: %q", l)
		}
		return say("250 2.0.0 Ok")
	case "QUIT":
		say("221 2.0.0 Bye")
		return false
	case "DATA":
		say("354 go")
		var msg []byte
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				return false
			}
			if string(line) == ".\r\n" {
				break
			}
			if bytes.HasPrefix(line, []byte(".")) {
				line = line[1:]
			}
			msg = append(msg, line...)
		}
		f.mu.Lock()
		f.messages = append(f.messages, msg)
		f.mu.Unlock()
		return say("250 2.0.0 queued")
	case "BDAT":
		if !f.chunking {
			f.violate("BDAT without CHUNKING: %q", l)
			return say("502 5.5.1 no")
		}
		n, _ := strconv.Atoi(fields[1])
		buf := make([]byte, n)
		if _, err := io.ReadFull(r, buf); err != nil {
			return false
		}
		f.mu.Lock()
		if !*bdat {
			f.messages = append(f.messages, nil) // a first chunk
		}
		f.messages[len(f.messages)-1] = append(f.messages[len(f.messages)-1], buf...)
		*bdat = !strings.HasSuffix(l, " LAST")
		f.mu.Unlock()
		return say("250 2.0.0 chunk")
	}
	return say("500 5.5.2 what")
}

var insecure = &tls.Config{InsecureSkipVerify: true}

func ctx(t *testing.T, d time.Duration) context.Context {
	c, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return c
}

// Against a server that accepts everything, every message arrives as
// generated, pipelined steps go in one write, and each command gets its
// reply.
func TestRunDeliversEveryMessage(t *testing.T) {
	seed := testSeed(t)
	for _, caps := range []struct {
		name                                 string
		pipelining, chunking, size, starttls bool
	}{{"all", true, true, true, true}, {"none", false, false, false, false}} {
		t.Run(caps.name, func(t *testing.T) {
			o := fullOptions
			o.Refuse = Refusals{} // the fake refuses nothing anyway
			for n := 0; n < 40; n++ {
				f := startFake(t, &fake{pipelining: caps.pipelining, chunking: caps.chunking, size: caps.size, starttls: caps.starttls})
				s := New(seed, n, o)
				s.EarlyTalk = false // the fake greets first
				tr, err := Run(ctx(t, 20*time.Second), f.addr, s, insecure)
				if err != nil {
					t.Fatalf("session %d: %v\n%s\n%s", n, err, s.String(), tr.String())
				}
				f.ln.Close()
				f.wg.Wait()
				var want [][]byte
				for i, st := range s.Steps {
					res := tr.Steps[i]
					switch st.Kind {
					case KindCmd:
						if len(res.Replies) != len(st.Cmds) {
							t.Fatalf("session %d step %d: %d replies to %d commands\n%s", n, i, len(res.Replies), len(st.Cmds), tr.String())
						}
						if res.Pipelined != (st.Pipelined && len(st.Cmds) > 1 && caps.pipelining) {
							t.Fatalf("session %d step %d: pipelined %v", n, i, res.Pipelined)
						}
					case KindData, KindBDAT:
						if res.Skipped != "" {
							t.Fatalf("session %d step %d skipped: %s\n%s", n, i, res.Skipped, tr.String())
						}
						if res.AsData == caps.chunking && st.Kind == KindBDAT {
							t.Fatalf("session %d step %d: BDAT as DATA %v with CHUNKING %v", n, i, res.AsData, caps.chunking)
						}
						// The fake reads DATA by LF-terminated lines:
						// a bare LF is a line end to it, which is
						// what the client sent.
						want = append(want, st.Msg.Content)
					case KindStartTLS:
						if caps.starttls != (res.Skipped == "") {
							t.Fatalf("session %d step %d: STARTTLS skipped %q with STARTTLS offered %v", n, i, res.Skipped, caps.starttls)
						}
					}
				}
				f.mu.Lock()
				got, violations := f.messages, f.violations
				f.mu.Unlock()
				if len(violations) > 0 {
					t.Fatalf("session %d: %v\n%s", n, violations, tr.String())
				}
				if len(got) != len(want) {
					t.Fatalf("session %d: the server got %d messages, want %d\n%s", n, len(got), len(want), tr.String())
				}
				for i := range want {
					if !bytes.Equal(got[i], want[i]) {
						t.Fatalf("session %d: message %d arrived as\n%q\nwant\n%q", n, i, got[i], want[i])
					}
				}
				if last := s.Steps[len(s.Steps)-1]; isQuit(last) && !tr.Closed {
					t.Errorf("session %d: the close after QUIT not seen", n)
				}
			}
		})
	}
}

// An early talker's EHLO reaches the server before its greeting.
func TestRunEarlyTalker(t *testing.T) {
	f := startFake(t, &fake{earlyRead: true, pipelining: true})
	s := Session{EarlyTalk: true, Helo: "early.test", Steps: []Step{
		{Kind: KindCmd, Cmds: []Command{{Line: "EHLO early.test", Tag: TagEHLO}}},
		{Kind: KindCmd, Cmds: []Command{{Line: "QUIT", Tag: TagQuit}}},
	}}
	from := netip.MustParseAddr("127.0.0.3")
	tr, err := RunFrom(ctx(t, 10*time.Second), from, f.addr, s, nil)
	if err != nil {
		t.Fatalf("%v\n%s", err, tr.String())
	}
	if tr.Greeting.Code != 220 || tr.Steps[0].Replies[0].Code != 250 || tr.Steps[1].Replies[0].Code != 221 {
		t.Fatalf("transcript:\n%s", tr.String())
	}
	if len(f.early) != 1 || f.early[0] != "EHLO early.test" {
		t.Errorf("commands before the greeting: %q", f.early)
	}
	if ap, err := netip.ParseAddrPort(tr.Local); err != nil || ap.Addr() != from || ap.Port() == 0 {
		t.Errorf("Local %q is not the client's address %s and a port (%v)", tr.Local, from, err)
	}
}

// A server that closes the connection at any point ends the transcript
// there, with no error and the rest of the steps skipped.
func TestRunServerCloses(t *testing.T) {
	seed := testSeed(t)
	o := fullOptions
	o.EarlyTalker = false
	for closeAfter := 1; closeAfter <= 12; closeAfter++ {
		f := startFake(t, &fake{pipelining: true, chunking: true, closeAfter: closeAfter})
		// A session long enough to reach the close.
		var s Session
		for n := closeAfter; ; n += 100 {
			s = New(seed, n, o)
			lines := 0
			for _, st := range s.Steps {
				lines += len(st.Cmds)
			}
			if lines > closeAfter {
				break
			}
		}
		tr, err := Run(ctx(t, 10*time.Second), f.addr, s, insecure)
		if err != nil {
			t.Fatalf("close after %d: %v\n%s", closeAfter, err, tr.String())
		}
		if !tr.Closed {
			t.Fatalf("close after %d: closing not recorded\n%s", closeAfter, tr.String())
		}
		at := -1
		for i, st := range tr.Steps {
			switch {
			case st.Closed && at < 0:
				at = i
			case at >= 0 && st.Skipped != "connection closed":
				t.Fatalf("close after %d: step %d after the close at step %d not skipped\n%s", closeAfter, i, at, tr.String())
			}
		}
		if at < 0 {
			t.Fatalf("close after %d: no step saw the close\n%s", closeAfter, tr.String())
		}
	}
}

// A server that stops answering makes Run fail when the context ends, not
// hang.
func TestRunSilentServerBounded(t *testing.T) {
	f := startFake(t, &fake{silentAfter: 2})
	s := New(1, 1, Options{})
	start := time.Now()
	tr, err := Run(ctx(t, 300*time.Millisecond), f.addr, s, nil)
	if err == nil {
		t.Fatalf("no error from a silent server\n%s", tr.String())
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v, want the context's deadline", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Run took %v", d)
	}
}

// A reply that is not SMTP is an error of the run.
func TestRunMalformedReply(t *testing.T) {
	f := startFake(t, &fake{malformed: true})
	s := New(1, 1, Options{})
	s.EarlyTalk = false
	_, err := Run(ctx(t, 10*time.Second), f.addr, s, nil)
	if err == nil || !strings.Contains(err.Error(), "malformed reply") {
		t.Fatalf("error %v, want a malformed reply", err)
	}
}

func TestReplyParsing(t *testing.T) {
	for _, c := range []struct {
		wire     string
		enhanced string
		text     []string
	}{
		{"250 2.1.0 Ok\r\n", "2.1.0", []string{"Ok"}},
		{"250 OK\r\n", "", []string{"OK"}},
		{"550-5.7.1 first\r\n550 5.7.1 second\r\n", "5.7.1", []string{"first", "second"}},
		{"550 4.7.1 wrong class\r\n", "", []string{"4.7.1 wrong class"}},
		{"250 2.0.0\r\n", "2.0.0", []string{""}},
		{"221\r\n", "", []string{""}},
	} {
		p := &player{r: bufio.NewReader(strings.NewReader(c.wire))}
		r, err := p.read()
		if err != nil {
			t.Errorf("%q: %v", c.wire, err)
			continue
		}
		if r.Enhanced != c.enhanced || strings.Join(r.Text, "|") != strings.Join(c.text, "|") {
			t.Errorf("%q: enhanced %q text %q, want %q %q", c.wire, r.Enhanced, r.Text, c.enhanced, c.text)
		}
	}
	for _, bad := range []string{"25 x\r\n", "250x\r\n", "250-a\r\n251 b\r\n", "hello\r\n", "150 x\r\n"} {
		p := &player{r: bufio.NewReader(strings.NewReader(bad))}
		if _, err := p.read(); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// A transaction whose MAIL was refused is given up; one whose recipients
// were all refused sends no message, unless DATA was pipelined.
func TestRunGivesUpFailedTransactions(t *testing.T) {
	f := startFake(t, &fake{pipelining: true, chunking: true})
	cmd := func(tx int, tag Tag, line string) Step {
		return Step{Kind: KindCmd, Tx: tx, Cmds: []Command{{Line: line, Tag: tag}}}
	}
	msg := &Message{ID: "m@test", Content: []byte("Subject: x\r\n\r\nbody\r\n")}
	s := Session{Steps: []Step{
		cmd(0, TagEHLO, "EHLO c.test"),
		cmd(1, TagMail, "MAIL FROM:<refuse-me@c.test>"),
		cmd(1, TagRcpt, "RCPT TO:<a@example.net>"),
		cmd(1, TagData, "DATA"),
		{Kind: KindData, Tx: 1, Msg: msg},
		cmd(0, TagRset, "RSET"),
		cmd(2, TagMail, "MAIL FROM:<ok@c.test>"),
		cmd(2, TagRcpt, "RCPT TO:<refuse-me@example.net>"),
		{Kind: KindBDAT, Tx: 2, Msg: msg, Chunks: []int{len(msg.Content)}},
		cmd(3, TagMail, "MAIL FROM:<ok@c.test>"),
		cmd(3, TagRcpt, "RCPT TO:<refuse-me@example.net>"),
		cmd(3, TagData, "DATA"),
		{Kind: KindData, Tx: 3, Msg: msg},
		cmd(0, TagRset, "RSET"),
		{Kind: KindCmd, Tx: 4, Pipelined: true, Cmds: []Command{{Line: "MAIL FROM:<refuse-me@c.test>", Tag: TagMail}, {Line: "RCPT TO:<b@example.net>", Tag: TagRcpt}, {Line: "DATA", Tag: TagData}}},
		{Kind: KindData, Tx: 4, Msg: msg},
		cmd(0, TagRset, "RSET"),
		{Kind: KindCmd, Tx: 5, Pipelined: true, Cmds: []Command{{Line: "MAIL FROM:<refuse-me@c.test>", Tag: TagMail}, {Line: "RCPT TO:<b@example.net>", Tag: TagRcpt}}},
		{Kind: KindBDAT, Tx: 5, Msg: msg, Chunks: []int{len(msg.Content)}},
		cmd(0, TagQuit, "QUIT"),
	}}
	tr, err := Run(ctx(t, 10*time.Second), f.addr, s, nil)
	if err != nil {
		t.Fatalf("%v\n%s", err, tr.String())
	}
	want := map[int]string{2: "MAIL refused", 3: "MAIL refused", 4: "MAIL refused", 8: "no recipient accepted", 11: "no recipient accepted", 12: "no 354", 18: "MAIL refused"}
	for i, st := range tr.Steps {
		if st.Skipped != want[i] {
			t.Errorf("step %d (%s) skipped %q, want %q\n%s", i, s.Steps[i], st.Skipped, want[i], tr.String())
		}
	}
	// The pipelined batch went whole: the fake accepts the RCPT and DATA
	// after the refused MAIL, and the message must follow the 354; but
	// no BDAT follows a refused MAIL, pipelined or not.
	if got := len(tr.Steps[14].Replies); got != 3 {
		t.Errorf("pipelined batch after a refused MAIL: %d replies, want 3", got)
	}
}
