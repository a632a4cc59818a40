package sequencer

import (
	"context"
	"testing"

	"moat/inspect"
	"moat/inspect/smtp"
)

// closeJudge answers 421 at one stage, as a rate limit with action close.
type closeJudge struct{ at inspect.Stage }

func (closeJudge) Needs(inspect.Stage) inspect.Needs { return inspect.Needs{} }
func (j closeJudge) Evaluate(stage inspect.Stage, _ *inspect.Facts) inspect.Verdict {
	if stage != j.at {
		return inspect.Verdict{}
	}
	r := smtp.Replyf(421, "4.7.0", "Rate limit exceeded, closing connection")
	return inspect.Verdict{Action: inspect.Tempfail, WouldBe: inspect.Tempfail, Reply: r, Reason: "rate_limited"}
}

// A verdict's 421 ends the session at every stage (RFC 5321 §3.8);
// a 451 does not.
func TestVerdict421Closes(t *testing.T) {
	for _, at := range []inspect.Stage{inspect.StageHelo, inspect.StageMail, inspect.StageRcpt} {
		e, err := inspect.New(inspect.Config{Judge: closeJudge{at}})
		if err != nil {
			t.Fatal(err)
		}
		q := New(context.Background(), Config{Hostname: "moat.test", MaxErrors: 10}, e, inspect.Session{ID: "C"})
		q.SetUpstream(Upstream{})
		q.Greet(false)
		var s Step
		for _, line := range []string{"EHLO client.test", "MAIL FROM:<a@s.test>", "RCPT TO:<b@r.test>"} {
			s = q.Command([]byte(line), false, false)
			if s.Op == OpMail || s.Op == OpRcpt {
				s = q.UpstreamReply(smtp.Replyf(250, "2.1.0", "ok"), false)
			}
			if s.Op == OpClose {
				break
			}
		}
		if n := len(s.Replies); s.Op != OpClose || n == 0 || s.Replies[n-1].Code != 421 {
			t.Errorf("421 at %s: op %v, replies %v; want the 421 and close", at, s.Op, s.Replies)
		}
	}
}
