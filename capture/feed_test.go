package capture

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"moat/inspect"
	"moat/inspect/sequencer"
	"moat/internal/pcaptest"
)

// How the conversation feeds the sequencer, held against what the proxy
// logs for the same session: each record of a transaction carries the
// judgement the live "transaction" line carries. Both cases were found
// by cmd/moat's TestLiveEqualsOffline.

// analyzeExchanges analyzes one session of exchanges (client bytes, then
// the server's answer) after the greeting, judged by testJudge under the
// session policy pol.
func analyzeExchanges(t *testing.T, pol sequencer.Config, greeting string, steps [][2]string) *Session {
	t.Helper()
	return analyzeExchangesWith(t, &testJudge{}, pol, greeting, steps)
}

// analyzeExchangesWith is analyzeExchanges judged by j.
func analyzeExchangesWith(t *testing.T, j inspect.Judge, pol sequencer.Config, greeting string, steps [][2]string) *Session {
	t.Helper()
	g := &pcaptest.Conn{Client: netip.MustParseAddrPort("192.0.2.7:40001"), Server: netip.MustParseAddrPort("192.0.2.25:25"),
		ClientSeq: 1000, ServerSeq: 5000, TS: time.Unix(1736157600, 0)}
	var pkts []pcaptest.Packet
	g.Handshake(&pkts)
	g.Send(&pkts, false, []byte(greeting))
	for _, st := range steps {
		g.Send(&pkts, true, []byte(st[0]))
		g.Send(&pkts, false, []byte(st[1]))
	}
	g.Fin(&pkts)
	path := filepath.Join(t.TempDir(), "s.pcap")
	if err := os.WriteFile(path, pcaptest.Write(t, pkts), 0o644); err != nil {
		t.Fatal(err)
	}
	engine, err := inspect.New(inspect.Config{Judge: j})
	if err != nil {
		t.Fatal(err)
	}
	sessions, _ := analyzeFile(t, path, Config{}, Deps{Engine: engine, Session: pol})
	if len(sessions) != 1 {
		t.Fatalf("%d sessions", len(sessions))
	}
	return sessions[0]
}

type wantJudgement struct {
	verdict, stage string
	score          float64
	rules          []string
}

func checkRecords(t *testing.T, s *Session, want []wantJudgement) {
	t.Helper()
	if len(s.Records) != len(want) {
		t.Fatalf("%d records, want %d: %+v", len(s.Records), len(want), s.Records)
	}
	for i, w := range want {
		r := s.Records[i]
		if r.Verdict != w.verdict || r.Stage != w.stage || r.Score != w.score || !slices.Equal(r.Rules, w.rules) {
			t.Errorf("record %d: verdict %q stage %q score %v rules %q (reason %q), want %q %q %v %q",
				i+1, r.Verdict, r.Stage, r.Score, r.Rules, r.Reason, w.verdict, w.stage, w.score, w.rules)
		}
	}
}

// The error budget runs out inside a transaction: the proxy closes the
// session and ends the transaction then, judged by its mail stage. The
// recorded client went on (RSET, QUIT) with nobody listening; that does
// not make the transaction's record "session_closed".
func TestFeedCloseEndsTransaction(t *testing.T) {
	s := analyzeExchanges(t, sequencer.Config{MaxErrors: 2}, "220 mx.example.net ESMTP\r\n", [][2]string{
		{"EHLO client.example.org\r\n", "250-mx.example.net\r\n250 PIPELINING\r\n"},
		{"MAIL FROM:<>\r\n", "250 2.1.0 Ok\r\n"},
		{"FOOB\r\n", "500 5.5.2 Syntax error, command unrecognized\r\n"},
		{"FOOB\r\n", "500 5.5.2 Syntax error, command unrecognized\r\n421 4.7.0 mx.example.net Too many errors, closing connection\r\n"},
		{"RSET\r\nQUIT\r\n", ""},
	})
	checkRecords(t, s, []wantJudgement{{"accept", "mail", 1, []string{"NULL_SENDER"}}})
}

// A refused BDAT chunk ends its record, while the transaction stays
// open until the RSET that follows. The RSET ends that transaction, not
// the next one, whose record must carry its own judgement.
func TestFeedLateEndStaysWithItsTransaction(t *testing.T) {
	s := analyzeExchanges(t, sequencer.Config{}, "220 mx.example.net ESMTP\r\n", [][2]string{
		{"EHLO client.example.org\r\n", "250-mx.example.net\r\n250-PIPELINING\r\n250 CHUNKING\r\n"},
		{"MAIL FROM:<a@example.org>\r\n", "250 2.1.0 Ok\r\n"},
		{"RCPT TO:<nobody@example.net>\r\n", "550 5.1.1 No such user\r\n"},
		{"BDAT 12 LAST\r\nSubject: x\r\n", "554 5.5.1 Error: no valid recipients\r\n"},
		{"RSET\r\n", "250 2.0.0 Ok\r\n"},
		{"MAIL FROM:<>\r\n", "250 2.1.0 Ok\r\n"},
		{"RCPT TO:<b@example.net>\r\n", "250 2.1.5 Ok\r\n"},
		{"DATA\r\n", "354 End data with <CR><LF>.<CR><LF>\r\n"},
		{"Subject: hello\r\n\r\nbody\r\n.\r\n", "250 2.0.0 Ok: queued\r\n"},
		{"QUIT\r\n", "221 2.0.0 Bye\r\n"},
	})
	checkRecords(t, s, []wantJudgement{
		{"reject", "data", 0, nil}, // no_valid_recipients
		{"accept", "data", 1, []string{"NULL_SENDER"}},
	})
}

// connectTempfailJudge tempfails every session at connect.
type connectTempfailJudge struct{}

func (*connectTempfailJudge) Needs(inspect.Stage) inspect.Needs { return inspect.Needs{} }

func (*connectTempfailJudge) Evaluate(st inspect.Stage, f *inspect.Facts) inspect.Verdict {
	if st == inspect.StageConnect {
		return inspect.Verdict{Action: inspect.Tempfail, WouldBe: inspect.Tempfail, Reason: "test"}
	}
	return inspect.Verdict{}
}

// A session tempfailed at connect gets 421 and is closed; what the
// recorded client went on to send (to a server that let it) is judged by
// that tempfail, not by what a closed session would have answered.
func TestConnectTempfailClosesOffline(t *testing.T) {
	s := analyzeExchangesWith(t, &connectTempfailJudge{}, sequencer.Config{}, "220 mx.example.net ESMTP\r\n", [][2]string{
		{"EHLO client.example.org\r\n", "250 mx.example.net\r\n"},
		{"MAIL FROM:<a@example.org>\r\n", "250 2.1.0 Ok\r\n"},
		{"RCPT TO:<b@example.net>\r\n", "250 2.1.5 Ok\r\n"},
		{"QUIT\r\n", "221 2.0.0 Bye\r\n"},
	})
	if len(s.Records) != 1 {
		t.Fatalf("records %+v", s.Records)
	}
	r := s.Records[0]
	if r.Verdict != "tempfail" || r.Stage != "connect" {
		t.Fatalf("record after a connect tempfail: verdict %q stage %q reason %q, want tempfail at connect", r.Verdict, r.Stage, r.Reason)
	}
}

// authJudge rejects at mail whatever the rules would see as an
// authenticated session of alice, and records the user it saw.
type authJudge struct{ users []string }

func (*authJudge) Needs(inspect.Stage) inspect.Needs { return inspect.Needs{} }

func (j *authJudge) Evaluate(st inspect.Stage, f *inspect.Facts) inspect.Verdict {
	if st != inspect.StageMail {
		return inspect.Verdict{}
	}
	j.users = append(j.users, f.Session.AuthUser)
	if f.Session.AuthUser == "alice" {
		return inspect.Verdict{Action: inspect.Reject, WouldBe: inspect.Reject, Reason: "rule:ALICE", Rules: []string{"ALICE"}}
	}
	return inspect.Verdict{}
}

// A recorded AUTH goes through the sequencer as the proxy relays it
// live: the session is authenticated, for the rules, exactly when the
// recorded server said 235 — with SASL-IR, with LOGIN's challenges, and
// not after a 535. The record keeps mechanism and user, never the
// password.
func TestFeedAuthenticatedSession(t *testing.T) {
	for _, tt := range []struct {
		name  string
		steps [][2]string
		user  string // what the rules saw at MAIL
		auth  bool
	}{
		{"PLAIN SASL-IR", [][2]string{
			{"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n", "235 2.7.0 Authentication successful\r\n"},
		}, "alice", true},
		{"LOGIN", [][2]string{
			{"AUTH LOGIN\r\n", "334 VXNlcm5hbWU6\r\n"},
			{"YWxpY2U=\r\n", "334 UGFzc3dvcmQ6\r\n"},
			{"c2VjcmV0\r\n", "235 2.7.0 Authentication successful\r\n"},
		}, "alice", true},
		{"wrong password", [][2]string{
			{"AUTH LOGIN\r\n", "334 VXNlcm5hbWU6\r\n"},
			{"YWxpY2U=\r\n", "334 UGFzc3dvcmQ6\r\n"},
			{"d3Jvbmc=\r\n", "535 5.7.8 Error: authentication failed\r\n"},
		}, "", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			j := &authJudge{}
			steps := append([][2]string{{"EHLO client.example.org\r\n", "250-mx.example.net\r\n250 AUTH PLAIN LOGIN\r\n"}}, tt.steps...)
			steps = append(steps, [][2]string{
				{"MAIL FROM:<alice@example.net>\r\n", "250 2.1.0 Ok\r\n"},
				{"QUIT\r\n", "221 2.0.0 Bye\r\n"},
			}...)
			s := analyzeExchangesWith(t, j, sequencer.Config{}, "220 mx.example.net ESMTP\r\n", steps)
			if len(j.users) != 1 || j.users[0] != tt.user {
				t.Fatalf("the rules saw users %q at mail, want [%q]", j.users, tt.user)
			}
			if s.AuthUser != "alice" || s.AuthMech == "" || s.Authenticated != tt.auth {
				t.Errorf("session: user %q mech %q authenticated %v", s.AuthUser, s.AuthMech, s.Authenticated)
			}
			if len(s.Records) != 1 || (s.Records[0].Verdict == "reject") != tt.auth {
				t.Errorf("records %+v: want a reject exactly when authenticated", s.Records)
			}
			if b, _ := json.Marshal(s); strings.Contains(string(b), "secret") || strings.Contains(string(b), "c2VjcmV0") {
				t.Errorf("the session record carries the password: %s", b)
			}
		})
	}
}
