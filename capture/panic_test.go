package capture

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"moat/inspect"

	"moat/internal/pcaptest"
)

// panicJudge panics at the mail stage of one session: a stand-in for a bug
// that only one session's input triggers.
type panicJudge struct{ helo string }

func (panicJudge) Needs(inspect.Stage) inspect.Needs { return inspect.Needs{} }

func (j panicJudge) Evaluate(st inspect.Stage, f *inspect.Facts) inspect.Verdict {
	if st == inspect.StageMail && f.Session.Helo == j.helo {
		panic("test: judge bug")
	}
	return inspect.Verdict{Action: inspect.Accept, WouldBe: inspect.Accept}
}

// A panic while analysing one session becomes a problem record for that
// session, logged with its stack; every other session is analysed as
// usual and the run goes on.
func TestPanicInOneSessionIsAProblemRecord(t *testing.T) {
	const n = 6
	data := pcaptest.Write(t, pcaptest.Capture(n, 3, 7))
	src, err := NewReader(bytes.NewReader(data), "gen", nil)
	if err != nil {
		t.Fatal(err)
	}
	engine, err := inspect.New(inspect.Config{Judge: panicJudge{helo: "client3.example.org"}})
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	a, err := New(Config{Shards: 1}, Deps{Engine: engine, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	var out []*Session
	if _, err := a.Run(context.Background(), src, func(s *Session) error { out = append(out, s); return nil }); err != nil {
		t.Fatalf("run: %v", err)
	}
	// This panic is the test's own: keep TestMain's check for real ones.
	panicsRecovered.Add(-a.Panics())
	if a.Panics() != 1 {
		t.Fatalf("%d panics recovered, want 1", a.Panics())
	}
	if len(out) != n {
		t.Fatalf("%d sessions, want %d", len(out), n)
	}
	for _, s := range out {
		if len(s.Records) == 0 {
			t.Fatalf("session %s (helo %s) has no record", s.UID, s.Helo)
		}
		bad := s.Helo == "client3.example.org"
		last := s.Records[len(s.Records)-1]
		hasProblem := strings.Contains(strings.Join(last.Problems, ","), "internal_error")
		if bad != hasProblem {
			t.Errorf("session helo %s: record problems %v", s.Helo, last.Problems)
		}
		if !bad && last.Verdict != "accept" {
			t.Errorf("session helo %s: verdict %q, want accept", s.Helo, last.Verdict)
		}
		if bad && last.MailFrom != "sender3@example.org" {
			t.Errorf("problem record lost the transaction: mailfrom %q", last.MailFrom)
		}
	}
	l := logs.String()
	if !strings.Contains(l, "session panic") || !strings.Contains(l, "goroutine") || !strings.Contains(l, "test: judge bug") {
		t.Errorf("panic not logged with its stack:\n%s", l)
	}
}
