package sequencer

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"moat/inspect"
	"moat/inspect/authguard"
	"moat/inspect/smtp"
)

// lockGuard locks out the users and clients it names, and records what
// the engine told it.
type lockGuard struct {
	users     map[string]bool
	all       bool
	failed    []string
	succeeded []string
}

func (g *lockGuard) Check(_ context.Context, _ netip.Addr, user string) (authguard.Decision, error) {
	return authguard.Decision{Locked: g.all || g.users[user]}, nil
}
func (g *lockGuard) Failed(_ context.Context, _ netip.Addr, user string) (authguard.Decision, authguard.Spray, error) {
	g.failed = append(g.failed, user)
	return authguard.Decision{}, authguard.Spray{}, nil
}
func (g *lockGuard) Succeeded(_ context.Context, _ netip.Addr, user string) error {
	g.succeeded = append(g.succeeded, user)
	return nil
}

// authSession starts a submission session under TLS, greeted with EHLO.
func authSession(t *testing.T, g *lockGuard, tls bool) *Sequencer {
	t.Helper()
	e, err := inspect.New(inspect.Config{Submission: inspect.SubmissionConfig{Guard: g}})
	if err != nil {
		t.Fatal(err)
	}
	sess := inspect.Session{ID: "A", Client: netip.MustParseAddrPort("192.0.2.1:1234")}
	if tls {
		sess.TLS = &inspect.TLSInfo{Version: "TLS1.3"}
	}
	q := New(context.Background(), Config{Hostname: "moat.test", MaxErrors: 10, STARTTLS: true, Submission: true}, e, sess)
	q.Greet(false)
	q.Command([]byte("EHLO client.test"), false, false)
	return q
}

func lastReply(t *testing.T, s Step) smtp.Reply {
	t.Helper()
	if len(s.Replies) == 0 {
		t.Fatalf("no reply: %+v", s)
	}
	return s.Replies[len(s.Replies)-1]
}

// An exchange: the client's lines, the upstream's replies to the lines
// that went upstream (in order), what the client hears last, and how it
// ends.
func TestAuthExchanges(t *testing.T) {
	ok := smtp.Replyf(235, "2.7.0", "Authentication successful")
	bad := smtp.Replyf(535, "5.7.8", "Error: authentication failed: authentication failure")
	user := smtp.Reply{Code: 334, Lines: []string{"VXNlcm5hbWU6"}}
	pass := smtp.Reply{Code: 334, Lines: []string{"UGFzc3dvcmQ6"}}
	empty := smtp.Reply{Code: 334, Lines: []string{""}}
	aborted := smtp.Replyf(501, "5.7.0", "Authentication aborted")
	for _, tt := range []struct {
		name     string
		lines    []string
		upstream []smtp.Reply
		sent     []string // what went upstream
		want     int      // the last reply's code
		outcome  inspect.AuthOutcome
		user     string // the session's AuthUser after
	}{
		{"PLAIN SASL-IR", []string{"AUTH PLAIN AGFsaWNlAHNlY3JldA=="}, []smtp.Reply{ok},
			[]string{"AUTH PLAIN AGFsaWNlAHNlY3JldA=="}, 235, inspect.AuthSuccess, "alice"},
		{"plain lower-case", []string{"auth plain AGFsaWNlAHNlY3JldA=="}, []smtp.Reply{ok},
			[]string{"AUTH PLAIN AGFsaWNlAHNlY3JldA=="}, 235, inspect.AuthSuccess, "alice"},
		{"PLAIN continuation", []string{"AUTH PLAIN", "AGFsaWNlAHNlY3JldA=="}, []smtp.Reply{empty, ok},
			[]string{"AUTH PLAIN", "AGFsaWNlAHNlY3JldA=="}, 235, inspect.AuthSuccess, "alice"},
		{"LOGIN", []string{"AUTH LOGIN", "YWxpY2U=", "c2VjcmV0"}, []smtp.Reply{user, pass, ok},
			[]string{"AUTH LOGIN", "YWxpY2U=", "c2VjcmV0"}, 235, inspect.AuthSuccess, "alice"},
		{"LOGIN SASL-IR", []string{"AUTH LOGIN YWxpY2U=", "c2VjcmV0"}, []smtp.Reply{pass, ok},
			[]string{"AUTH LOGIN YWxpY2U=", "c2VjcmV0"}, 235, inspect.AuthSuccess, "alice"},
		{"wrong password", []string{"AUTH LOGIN", "YWxpY2U=", "d3Jvbmc="}, []smtp.Reply{user, pass, bad},
			[]string{"AUTH LOGIN", "YWxpY2U=", "d3Jvbmc="}, 535, inspect.AuthFailure, ""},
		{"cancelled", []string{"AUTH LOGIN", "*"}, []smtp.Reply{user, aborted},
			[]string{"AUTH LOGIN", "*"}, 501, inspect.AuthAborted, ""},
		{"locked user", []string{"AUTH LOGIN", "bWFsbG9yeQ=="}, []smtp.Reply{user, aborted},
			[]string{"AUTH LOGIN", "*"}, 454, inspect.AuthLocked, ""},
		{"locked user, PLAIN continuation", []string{"AUTH PLAIN", "AG1hbGxvcnkAc2VjcmV0"}, []smtp.Reply{empty, aborted},
			[]string{"AUTH PLAIN", "*"}, 454, inspect.AuthLocked, ""},
		{"temporary", []string{"AUTH PLAIN AGFsaWNlAHNlY3JldA=="}, []smtp.Reply{smtp.Replyf(454, "4.7.0", "Temporary authentication failure")},
			[]string{"AUTH PLAIN AGFsaWNlAHNlY3JldA=="}, 454, inspect.AuthTempfail, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := &lockGuard{users: map[string]bool{"mallory": true}}
			q := authSession(t, g, true)
			var sent []string
			var s Step
			up := tt.upstream
			for _, line := range tt.lines {
				s = q.Command([]byte(line), false, false)
				for s.Op == OpAuth {
					sent = append(sent, s.Line)
					if len(up) == 0 {
						t.Fatalf("no upstream reply left for %q", s.Line)
					}
					s = q.AuthReply(up[0], false)
					up = up[1:]
				}
			}
			if strings.Join(sent, "|") != strings.Join(tt.sent, "|") {
				t.Errorf("sent upstream %q, want %q", sent, tt.sent)
			}
			if r := lastReply(t, s); r.Code != tt.want {
				t.Errorf("client got %v, want %d", r, tt.want)
			}
			if s.Authed == nil || s.Authed.Outcome != tt.outcome {
				t.Fatalf("Authed = %+v, want outcome %s", s.Authed, tt.outcome)
			}
			if q.Session.AuthUser != tt.user || q.InAuth() {
				t.Errorf("AuthUser %q (in exchange %v), want %q", q.Session.AuthUser, q.InAuth(), tt.user)
			}
			if tt.outcome == inspect.AuthFailure && (len(g.failed) != 1 || g.failed[0] != "alice") {
				t.Errorf("guard told of failures %q, want [alice]", g.failed)
			}
			if tt.outcome == inspect.AuthSuccess && len(g.succeeded) != 1 {
				t.Errorf("guard told of successes %q", g.succeeded)
			}
		})
	}
}

// moat's own policy: where AUTH is offered, and what it refuses itself.
func TestAuthPolicy(t *testing.T) {
	g := &lockGuard{}
	// Before TLS: not offered, and 530.
	q := authSession(t, g, false)
	if q.Offered().AUTH {
		t.Error("AUTH offered before TLS")
	}
	if r := lastReply(t, q.Command([]byte("AUTH PLAIN AGFsaWNlAHNlY3JldA=="), false, false)); r.Code != 530 || r.Enhanced != "5.7.0" {
		t.Errorf("AUTH before TLS: %v, want 530 5.7.0", r)
	}
	// Under TLS: offered in the EHLO reply.
	q = authSession(t, g, true)
	ehlo := q.Command([]byte("EHLO client.test"), false, false)
	if r := lastReply(t, ehlo); !strings.Contains(strings.Join(r.Lines, "\n"), "\nAUTH PLAIN LOGIN\n") {
		t.Errorf("EHLO under TLS: %q, want AUTH PLAIN LOGIN", r.Lines)
	}
	if r := lastReply(t, q.Command([]byte("AUTH CRAM-MD5"), false, false)); r.Code != 504 {
		t.Errorf("AUTH CRAM-MD5: %v, want 504", r)
	}
	// Success, then a second AUTH: 503.
	s := q.Command([]byte("AUTH PLAIN AGFsaWNlAHNlY3JldA=="), false, false)
	s = q.AuthReply(smtp.Replyf(235, "2.7.0", "ok"), false)
	if r := lastReply(t, q.Command([]byte("AUTH PLAIN AGFsaWNlAHNlY3JldA=="), false, false)); r.Code != 503 {
		t.Errorf("second AUTH: %v, want 503", r)
	}
	// A MAIL parameter AUTH= is accepted once AUTH is offered (RFC 4954 §5).
	if s = q.Command([]byte("MAIL FROM:<alice@example.net> AUTH=<>"), false, false); s.Op != OpMail {
		t.Errorf("MAIL with AUTH=<>: %+v, want it sent upstream", s)
	}
	q.UpstreamReply(smtp.Replyf(250, "2.1.0", "ok"), false)
	if r := lastReply(t, q.Command([]byte("AUTH PLAIN AGFsaWNlAHNlY3JldA=="), false, false)); r.Code != 503 {
		t.Errorf("AUTH in a transaction: %v, want 503", r)
	}

	// Not a submission listener: 502, as before.
	e, _ := inspect.New(inspect.Config{})
	q = New(context.Background(), Config{Hostname: "moat.test", MaxErrors: 10}, e,
		inspect.Session{ID: "B", TLS: &inspect.TLSInfo{Version: "TLS1.3"}})
	q.Greet(false)
	q.Command([]byte("EHLO client.test"), false, false)
	if r := lastReply(t, q.Command([]byte("AUTH PLAIN AGFsaWNlAHNlY3JldA=="), false, false)); r.Code != 502 {
		t.Errorf("AUTH on port 25: %v, want 502", r)
	}

	// A client locked out is refused before anything goes upstream.
	q = authSession(t, &lockGuard{all: true}, true)
	s = q.Command([]byte("AUTH PLAIN AGFsaWNlAHNlY3JldA=="), false, false)
	if s.Op == OpAuth || lastReply(t, s).Code != 454 || s.Authed == nil || s.Authed.Outcome != inspect.AuthLocked {
		t.Errorf("locked-out client: %+v, want 454 without asking the upstream", s)
	}

	// The upstream gone: 454, never 235.
	q = authSession(t, g, true)
	q.Command([]byte("AUTH PLAIN AGFsaWNlAHNlY3JldA=="), false, false)
	s = q.AuthReply(smtp.Replyf(451, "4.4.1", "Upstream mail server unavailable"), true)
	if r := lastReply(t, s); r.Code != 454 || q.Session.AuthUser != "" || s.Authed.Outcome != inspect.AuthError {
		t.Errorf("upstream failed: %v, user %q, outcome %s; want 454 and no user", r, q.Session.AuthUser, s.Authed.Outcome)
	}
}
