package sequencer

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"moat/inspect"
	"moat/inspect/smtp"
)

// pointJudge gives every stage one point and names a rule after it, and
// refuses where the envelope asks it to: a HELO of reject.test, a sender
// or recipient whose local part is "reject" or "defer", a message whose
// size is 13. So every judged message must score exactly 4 (connect,
// helo, mail, data), however many times the client said EHLO.
type pointJudge struct{ readsRcpts bool }

func (j pointJudge) Needs(st inspect.Stage) inspect.Needs {
	return inspect.Needs{Recipients: j.readsRcpts && st == inspect.StageRcpt}
}

func (pointJudge) Evaluate(st inspect.Stage, f *inspect.Facts) inspect.Verdict {
	before := inspect.Before(st, f.Session, f.Tx)
	rule := "S_" + strings.ToUpper(st.String())
	v := inspect.Verdict{Score: before.Score + 1, Rules: append(before.Rules, rule),
		Result: inspect.StageResult{Score: 1, Rules: []string{rule}}}
	refuse := func(local string) {
		switch local {
		case "reject":
			v.Action = inspect.Reject
		case "defer":
			v.Action = inspect.Tempfail
		}
	}
	switch st {
	case inspect.StageHelo:
		if f.Session.Helo == "reject.test" {
			v.Action = inspect.Reject
		}
	case inspect.StageMail:
		refuse(f.Tx.From.Local)
	case inspect.StageRcpt:
		refuse(f.Rcpt.Path.Local)
	case inspect.StageData:
		if f.Message.Size == 13 {
			v.Action = inspect.Reject
		}
	}
	v.WouldBe = v.Action
	return v
}

// driver is a front end that plays a session from fuzz input: it picks
// client lines, upstream replies and message shapes from the bytes, and
// checks the sequencer's properties as it goes.
type driver struct {
	t       *testing.T
	q       *Sequencer
	in      []byte
	closed  bool
	pending int // RCPTs sent upstream whose replies the driver holds back
	// owed counts client commands still owed their final reply.
	owed    int
	replies []smtp.Reply
	trace   []string
	// upstreamOK: the upstream said 235 to an AUTH; sawSecret: a line
	// with credentials went upstream (it must go nowhere else).
	upstreamOK, sawSecret bool
}

// authReply picks an upstream reply to an AUTH line.
func (d *driver) authReply() (smtp.Reply, bool) {
	switch d.byte() % 6 {
	case 0:
		return smtp.Replyf(235, "2.7.0", "Authentication successful"), false
	case 1:
		return smtp.Replyf(535, "5.7.8", "Authentication failed"), false
	case 2:
		return smtp.Replyf(454, "4.7.0", "Temporary authentication failure"), false
	case 3:
		return smtp.Reply{}, true
	case 4:
		return smtp.Replyf(501, "5.7.0", "Authentication aborted"), false
	}
	return smtp.Reply{Code: 334, Lines: []string{"VXNlcm5hbWU6"}}, false
}

func (d *driver) byte() byte {
	if len(d.in) == 0 {
		return 0
	}
	b := d.in[0]
	d.in = d.in[1:]
	return b
}

func (d *driver) failf(format string, args ...any) {
	d.t.Helper()
	d.t.Fatalf(format+"\ntrace:\n%s", append(args, strings.Join(d.trace, "\n"))...)
}

var fuzzLines = []string{
	"EHLO client.test", "HELO client.test", "EHLO reject.test", "EHLO", "MAIL FROM:<a@client.test>",
	"MAIL FROM:<reject@client.test>", "MAIL FROM:<defer@client.test>", "MAIL FROM:<a@client.test> SIZE=10",
	"MAIL FROM:<a@client.test> FOO=1", "MAIL FROM:bad", "RCPT TO:<b@example.net>", "RCPT TO:<reject@example.net>",
	"RCPT TO:<defer@example.net>", "RCPT TO:<c@example.net> NOTIFY=NEVER", "DATA", "DATA x", "BDAT 13 LAST",
	"BDAT 5", "BDAT 20 LAST", "BDAT x", "RSET", "NOOP", "VRFY b", "HELP", "STARTTLS", "AUTH PLAIN", "QUIT",
	"FOO", "", "\x01bad", "MAIL FROM:<>",
	// AUTH: PLAIN with SASL-IR (alice, password "secret"), LOGIN's two
	// responses, a cancel, an unknown mechanism.
	"AUTH PLAIN AGFsaWNlAHNlY3JldA==", "AUTH LOGIN", "YWxpY2U=", "c2VjcmV0", "*", "AUTH CRAM-MD5", "AUTH PLAIN =",
}

// plausible are the commands a client would send next in each state.
var plausible = map[State][]string{
	StateGreeted: {"EHLO client.test", "EHLO client.test", "HELO client.test"},
	StateHelo:    {"MAIL FROM:<a@client.test>", "MAIL FROM:<a@client.test> SIZE=10", "EHLO client.test", "AUTH PLAIN AGFsaWNlAHNlY3JldA=="},
	StateMail:    {"RCPT TO:<b@example.net>", "RCPT TO:<c@example.net>", "DATA"},
	StateRcpt:    {"DATA", "DATA", "RCPT TO:<d@example.net>", "BDAT 5", "BDAT 13 LAST", "RSET", "EHLO client.test"},
	StateRefused: {"QUIT"},
}

// upstreamReply picks an upstream reply: mostly 250, sometimes a
// refusal or a failure.
func (d *driver) upstreamReply() (smtp.Reply, bool) {
	switch d.byte() % 8 {
	case 0:
		return smtp.Replyf(450, "4.7.1", "later"), false
	case 1:
		return smtp.Replyf(550, "", "no"), false
	case 2:
		return smtp.Replyf(451, "4.4.1", "upstream down"), true
	case 3:
		return smtp.Reply{Code: 250, Lines: []string{"OK"}}, false // no enhanced code
	}
	return smtp.Replyf(250, "2.0.0", "Ok"), false
}

// apply carries out s like a front end and checks it.
func (d *driver) apply(s Step) {
	d.t.Helper()
	for {
		if s.Authed != nil && s.Authed.Outcome == inspect.AuthSuccess && !d.upstreamOK {
			d.failf("authenticated without the upstream's 235")
		}
		if d.q.Session.AuthUser != "" && !d.upstreamOK {
			d.failf("session user %q without the upstream's 235", d.q.Session.AuthUser)
		}
		for i, r := range s.Replies {
			for _, l := range r.Lines {
				if strings.Contains(l, "secret") || strings.Contains(l, "c2VjcmV0") {
					d.failf("a reply carries the password: %q", l)
				}
			}
			d.trace = append(d.trace, "<- "+r.Summary())
			d.replies = append(d.replies, r)
			// 354 is intermediate; a 421 after a reply closes the
			// session on top of it. Anything else is a final reply.
			if r.Code != 354 && !(r.Code == 421 && i > 0) {
				d.owed--
			}
		}
		if s.Ended != nil && s.Ended.Judgement.Stage == inspect.StageData && s.Ended.Judgement.Reason == "" &&
			s.Ended.Judgement.Verdict.Score != 4 {
			d.failf("a judged message scored %v, want 4 (each stage once): %+v", s.Ended.Judgement.Verdict.Score, s.Ended.Judgement)
		}
		switch s.Op {
		case OpClose:
			d.closed = true
			return
		case OpMail:
			r, failed := d.upstreamReply()
			d.trace = append(d.trace, "   upstream MAIL: "+r.Summary())
			s = d.q.UpstreamReply(r, failed)
			continue
		case OpRcpt:
			d.pending++
			if d.byte()%2 == 0 {
				return // pipelined: the reply comes later
			}
			s = d.resolve()
			continue
		case OpData, OpChunk:
			if s.Op == OpChunk && !s.Last {
				s = d.q.Chunk(s.Size, false, Received{})
				continue
			}
			b := d.byte()
			size := int64(b % 16)
			m := Received{Message: &inspect.Message{Size: size, Body: strings.NewReader(strings.Repeat("x", int(size))),
				BareLF: b&0x10 != 0}, Over: b&0x20 != 0, HeaderOver: b&0x40 != 0}
			d.trace = append(d.trace, fmt.Sprintf("   message size %d bareLF %v over %v", size, m.Message.BareLF, m.Over))
			s = d.q.Message(m)
			for _, r := range s.Replies {
				if r.Class() == 2 {
					d.failf("a 2xx for a message before the upstream was asked: %s", r.Summary())
				}
			}
			continue
		case OpRelay:
			r, failed := d.upstreamReply()
			d.trace = append(d.trace, "   upstream DATA: "+r.Summary())
			s = d.q.Relayed(r, failed)
			for _, out := range s.Replies {
				if out.Class() == 2 && (failed || r.Class() != 2) {
					d.failf("250 at end of data for an upstream reply %s (failed %v)", r.Summary(), failed)
				}
			}
			continue
		case OpStartTLS:
			d.q.TLSStarted(&inspect.TLSInfo{Version: "TLS1.3"}, d.byte()%4 == 0)
		case OpAuth:
			if strings.Contains(s.Line, "c2VjcmV0") || strings.Contains(s.Line, "AGFsaWNl") {
				d.sawSecret = true
			}
			r, failed := d.authReply()
			d.trace = append(d.trace, "   upstream AUTH: "+r.Summary())
			if r.Code == 235 && !failed {
				d.upstreamOK = true
			}
			s = d.q.AuthReply(r, failed)
			continue
		case OpDrain:
		}
		return
	}
}

// resolve feeds the replies of every pending RCPT, in order.
func (d *driver) resolve() Step {
	var out Step
	for d.pending > 0 {
		d.pending--
		r, failed := d.upstreamReply()
		d.trace = append(d.trace, "   upstream RCPT: "+r.Summary())
		s := d.q.UpstreamReply(r, failed)
		out.Replies = append(out.Replies, s.Replies...)
	}
	return out
}

func (d *driver) run() {
	d.t.Helper()
	s := d.q.Greet(d.byte()%8 == 0)
	d.owed = 1
	d.apply(s)
	for n := 0; len(d.in) > 0 && !d.closed && n < 200; n++ {
		b := d.byte()
		line := fuzzLines[int(b)%len(fuzzLines)]
		if b&0x80 == 0 {
			// Mostly what a client would send next, so that sessions
			// reach the end of data.
			line = plausible[d.q.State()][int(b)%len(plausible[d.q.State()])]
		}
		if d.byte()%16 == 0 {
			line = strings.Repeat("x", 600)
		}
		d.trace = append(d.trace, "-> "+line)
		d.owed++
		s := d.q.Command([]byte(line), false, false)
		if s.Op == OpResolve {
			if d.pending != d.q.Pending() {
				d.failf("driver holds %d RCPTs, sequencer %d", d.pending, d.q.Pending())
			}
			d.apply(d.resolve())
			s = d.q.Command([]byte(line), false, false)
			if s.Op == OpResolve {
				d.failf("OpResolve again after every reply was fed")
			}
		}
		d.apply(s)
		if d.pending == 0 && !d.closed && d.owed != 0 {
			d.failf("%d replies owed after %q with nothing pending: replies out of step with commands", d.owed, line)
		}
	}
	if !d.closed {
		d.apply(d.resolve())
		d.apply(d.q.End())
	}
	h := d.q.Session.HeloResult
	if d.q.Session.Helo != "" && (h.Score != 1 || len(h.Rules) != 1) {
		d.failf("the session holds helo result %+v, want exactly one stage's", h)
	}
}

// FuzzSequencer drives the sequencer with arbitrary interleavings of
// client commands, upstream replies, messages and TLS. Properties: no
// panic; never a 2xx at the end of data without the upstream's 2xx;
// every command gets its reply, in command order (pipelined RCPTs
// included); each stage's result counted once (a judged message scores
// exactly one point per stage, however often EHLO came).
func FuzzSequencer(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{1, 0, 0, 4, 0, 4, 0, 10, 0, 1, 14, 0, 3, 4})
	f.Add([]byte("\x00\x00\x01\x04\x00\x0a\x00\x00\x0a\x00\x00\x0e\x00\x05\x00\x14\x00\x00\x19\x00"))
	f.Fuzz(func(t *testing.T, in []byte) {
		runDriver(t, in, len(in)%3 == 0)
	})
}

func runDriver(t *testing.T, in []byte, readsRcpts bool) {
	t.Helper()
	e, err := inspect.New(inspect.Config{Judge: pointJudge{readsRcpts: readsRcpts}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Hostname: "moat.test", MaxLineLength: 512, MaxCommands: 150, MaxErrors: 12, MaxRecipients: 3,
		MaxMessageSize: 1 << 20, EarlyTalker: "reject", BareLF: "reject", STARTTLS: true, Submission: len(in)%2 == 0}
	q := New(context.Background(), cfg, e, inspect.Session{ID: "FUZZ"})
	q.SetUpstream(Upstream{DSN: true})
	d := &driver{t: t, q: q, in: in}
	d.run()
}

// TestSequencerGenerated runs the fuzz properties over seeded random
// inputs in every test run, not only under -fuzz.
func TestSequencerGenerated(t *testing.T) {
	seed := rand.Uint64()
	r := rand.New(rand.NewPCG(seed, 7))
	for i := 0; i < 3000; i++ {
		in := make([]byte, r.IntN(300))
		for j := range in {
			in[j] = byte(r.Uint32())
		}
		t.Run("", func(t *testing.T) {
			defer func() {
				if t.Failed() {
					t.Logf("seed %d, input %d: %q", seed, i, in)
				}
			}()
			runDriver(t, in, i%3 == 0)
		})
		if t.Failed() {
			return
		}
	}
}
