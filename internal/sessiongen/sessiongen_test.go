package sessiongen

import (
	"bytes"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// testSeed is the seed of the generator tests: MOAT_SESSIONGEN_SEED, or
// the clock. Every failure names it.
func testSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("MOAT_SESSIONGEN_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("MOAT_SESSIONGEN_SEED: %v", err)
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("seed %d (rerun with MOAT_SESSIONGEN_SEED=%d)", seed, seed)
		}
	})
	return seed
}

// fullOptions turns every optional shape on.
var fullOptions = Options{
	SizeLimit:      16 << 10,
	RecipientLimit: 5,
	EarlyTalker:    true,
	BareLF:         true,
	STARTTLS:       true,
	Refuse: Refusals{
		MailReject: []string{"mail-reject@client.test"},
		MailDefer:  []string{"mail-defer@client.test"},
		RcptReject: []string{"rcpt-reject@example.net"},
		RcptDefer:  []string{"rcpt-defer@example.net"},
		DataReject: []string{"data-reject@client.test"},
		DataDefer:  []string{"data-defer@client.test"},
		EODDefer:   []string{"eod-defer@client.test"},

		EODRejectSubject: "eod-reject",
	},
}

// The same seed and session number give the same session; another
// session number gives another.
func TestGenerateDeterministic(t *testing.T) {
	seed := testSeed(t)
	same := 0
	for n := 0; n < 200; n++ {
		a, b := New(seed, n, fullOptions), New(seed, n, fullOptions)
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("session %d: two generations differ:\n%s\n%s", n, a.String(), b.String())
		}
		if c := New(seed, n+1, fullOptions); reflect.DeepEqual(a.Steps, c.Steps) {
			same++
		}
	}
	if same > 5 {
		t.Errorf("%d of 200 sessions equal the next session's: the session number hardly matters", same)
	}
}

// unstuff undoes Wire: it removes the end-of-data line and the doubled
// dots, as a server does (RFC 5321 §4.5.2).
func unstuff(w []byte) ([]byte, bool) {
	if !bytes.HasSuffix(w, []byte("\r\n.\r\n")) {
		return nil, false
	}
	w = w[:len(w)-3]
	var out []byte
	lineStart := true
	for i, c := range w {
		if lineStart && c == '.' && i+1 < len(w) && w[i+1] == '.' {
			lineStart = false
			continue
		}
		out = append(out, c)
		lineStart = c == '\n'
	}
	return out, true
}

func TestWireDotStuffing(t *testing.T) {
	m := &Message{Content: []byte(".\r\n..\r\n.a\r\nb.\r\n x\nc\n.d\r\n")}
	want := "..\r\n...\r\n..a\r\nb.\r\n x\nc\n..d\r\n.\r\n"
	if got := string(m.Wire()); got != want {
		t.Errorf("Wire:\n%q\nwant\n%q", got, want)
	}
	m = &Message{Content: []byte("no final line end")}
	if got := string(m.Wire()); got != "no final line end\r\n.\r\n" {
		t.Errorf("Wire without a final CRLF: %q", got)
	}
}

// Sessions stay within their bounds, keep the generator's promises, and
// across a few hundred sessions every shape shows up.
func TestGenerateBoundsAndCoverage(t *testing.T) {
	seed := testSeed(t)
	o := fullOptions.withDefaults()
	seen := map[string]int{}
	for n := 0; n < 400; n++ {
		s := New(seed, n, fullOptions)
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("session %d: %s\n%s", n, fmt.Sprintf(format, args...), s.String())
		}
		if s.Seed != seed || s.N != n {
			fail("identity %d/%d", s.Seed, s.N)
		}
		if len(s.Steps) > 100 {
			fail("%d steps", len(s.Steps))
		}
		if s.EarlyTalk {
			seen["early talker"]++
		}
		ids := map[string]bool{}
		txs := 0
		bad := 0
		for i, st := range s.Steps {
			switch st.Kind {
			case KindCmd:
				if len(st.Cmds) == 0 {
					fail("step %d: no commands", i)
				}
				if st.Pipelined {
					seen["pipelined"]++
				}
				for j, c := range st.Cmds {
					seen[string(c.Tag)]++
					switch c.Tag {
					case TagUnknown, TagMailSyntax, TagMailParam, TagRcptNoMail, TagDataNoRcpt:
						bad++
					case TagMail:
						txs++
						if c.Size > 0 {
							seen["SIZE declared"]++
						}
					}
					if c.Tag == TagData || c.Tag == TagDataNoRcpt {
						if j != len(st.Cmds)-1 || i+1 >= len(s.Steps) || s.Steps[i+1].Kind != KindData {
							fail("step %d: DATA not last or not followed by its message", i)
						}
					}
					if strings.ContainsAny(c.Line, "\r\n") {
						fail("step %d: line %q holds a line end", i, c.Line)
					}
				}
				rcpts := 0
				for _, c := range st.Cmds {
					if c.Tag == TagRcpt || c.Tag == TagRcptOver {
						rcpts++
					}
				}
				if rcpts > o.MaxRecipients+1 && rcpts > o.RecipientLimit+maxOverflow {
					fail("step %d: %d recipients", i, rcpts)
				}
				if rcpts > o.RecipientLimit {
					seen["over recipient limit"]++
				}
				if st.Cmds[0].Tag == TagMail {
					from := strings.TrimSuffix(strings.TrimPrefix(st.Cmds[0].Line, "MAIL FROM:<"), ">")
					if slices.Contains(o.Refuse.DataReject, from) || slices.Contains(o.Refuse.DataDefer, from) {
						// The transaction must end with RSET.
						k := i + 1
						for k < len(s.Steps) && !(s.Steps[k].Kind == KindCmd && s.Steps[k].Cmds[0].Tag == TagRset) {
							if s.Steps[k].Kind == KindCmd && s.Steps[k].Cmds[0].Tag == TagMail {
								fail("step %d: sender %s refused at DATA, next MAIL without RSET", i, from)
							}
							k++
						}
					}
				}
			case KindData, KindBDAT:
				m := st.Msg
				if m == nil {
					fail("step %d: no message", i)
				}
				if ids[m.ID] {
					fail("Message-ID %s twice", m.ID)
				}
				ids[m.ID] = true
				if !strings.HasPrefix(m.ID, fmt.Sprintf("sg.%d.%d.", seed, n)) {
					fail("Message-ID %s does not name seed and session", m.ID)
				}
				size := len(m.Content)
				switch {
				case m.Oversize:
					seen["oversize"]++
					if size < int(2*o.SizeLimit) || size > int(3*o.SizeLimit)+2000 {
						fail("oversize message of %d bytes, limit %d", size, o.SizeLimit)
					}
				case size > o.MaxBodyBytes+2000:
					fail("message of %d bytes, body bound %d", size, o.MaxBodyBytes)
				}
				if m.BareLF {
					seen["bare LF"]++
					for j := 1; j+1 < len(m.Content); j++ {
						if m.Content[j] == '\n' && m.Content[j-1] != '\r' && m.Content[j+1] == '.' {
							fail("bare LF before a dot in %s", m.ID)
						}
					}
				}
				if got, ok := unstuff(m.Wire()); !ok || !bytes.Equal(got, m.Content) {
					fail("message %s does not survive dot-stuffing", m.ID)
				}
				if bytes.Contains(m.Content, []byte("\r\n.\r\n")) {
					seen["lone dot line"]++
				}
				if st.Kind == KindBDAT {
					seen[fmt.Sprintf("BDAT %d chunks", len(st.Chunks))]++
					sum := 0
					for _, c := range st.Chunks {
						if c <= 0 {
							fail("empty chunk")
						}
						sum += c
					}
					if sum != size {
						fail("chunks %v of a %d-byte message", st.Chunks, size)
					}
				}
			case KindStartTLS:
				seen["STARTTLS"]++
			}
		}
		if txs > o.MaxTransactions+errorBudget {
			fail("%d MAIL commands", txs)
		}
		if bad > errorBudget {
			fail("%d bad commands", bad)
		}
	}
	for _, shape := range []string{"early talker", "pipelined", "SIZE declared", "over recipient limit", "oversize",
		"bare LF", "lone dot line", "BDAT 1 chunks", "BDAT 2 chunks", "STARTTLS",
		string(TagHELO), string(TagNoop), string(TagVrfy), string(TagHelp), string(TagRset), string(TagQuit),
		string(TagUnknown), string(TagMailSyntax), string(TagMailParam), string(TagRcptNoMail), string(TagDataNoRcpt), string(TagRcptOver)} {
		if seen[shape] == 0 {
			t.Errorf("no %q in 400 sessions", shape)
		}
	}
	t.Logf("shapes: %v", seen)
}

// Options that are off produce none of their shapes.
func TestGenerateOptionsOff(t *testing.T) {
	seed := testSeed(t)
	for n := 0; n < 300; n++ {
		s := New(seed, n, Options{})
		if s.EarlyTalk {
			t.Fatalf("session %d: early talker without Options.EarlyTalker", n)
		}
		for _, st := range s.Steps {
			if st.Kind == KindStartTLS {
				t.Fatalf("session %d: STARTTLS without Options.STARTTLS", n)
			}
			if st.Msg != nil && (st.Msg.BareLF || st.Msg.Oversize || bytes.Contains(bytes.ReplaceAll(st.Msg.Content, []byte("\r\n"), nil), []byte("\n"))) {
				t.Fatalf("session %d: message %s has a bare LF or is oversize", n, st.Msg.ID)
			}
			for _, c := range st.Cmds {
				if c.Tag == TagRcptOver || c.Size > 0 {
					t.Fatalf("session %d: %s without limits in Options", n, c.Line)
				}
			}
		}
	}
}
