package capture

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"moat/inspect"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// testJudge is a small rule set in Go, so that the golden files also pin
// the verdict fields without depending on package rules: HELO with an
// address literal scores 1, a null sender 1, a Subject with "Girls" is
// rejected, a message with bare LF tagged. It records the order of the
// stages per session.
type testJudge struct {
	mu    sync.Mutex
	calls map[string][]inspect.Stage
}

func (j *testJudge) Needs(st inspect.Stage) inspect.Needs {
	if st == inspect.StageData {
		return inspect.Needs{Depth: inspect.DepthHeaders}
	}
	return inspect.Needs{}
}

func (j *testJudge) Evaluate(st inspect.Stage, f *inspect.Facts) inspect.Verdict {
	j.mu.Lock()
	if j.calls == nil {
		j.calls = map[string][]inspect.Stage{}
	}
	j.calls[f.Session.ID] = append(j.calls[f.Session.ID], st)
	j.mu.Unlock()
	before := inspect.Before(st, f.Session, f.Tx)
	v := inspect.Verdict{Action: inspect.Accept, Score: before.Score}
	hit := func(rule string, score float64) {
		v.Rules = append(v.Rules, rule)
		v.Score += score
		v.Result.Rules = append(v.Result.Rules, rule)
		v.Result.Score += score
	}
	switch st {
	case inspect.StageHelo:
		if strings.HasPrefix(f.Session.Helo, "[") {
			hit("HELO_LITERAL", 1)
		}
	case inspect.StageMail:
		if f.Tx.From.IsNull() {
			hit("NULL_SENDER", 1)
		}
	case inspect.StageData:
		if f.Content != nil && strings.Contains(f.Content.Subject, "Girls") {
			hit("SUBJECT_GIRLS", 10)
			v.Action, v.Reason = inspect.Reject, "rule"
		}
		if f.Message.BareLF {
			hit("BARE_LF", 5)
			if v.Action == inspect.Accept {
				v.Action, v.Reason = inspect.Tag, "score"
			}
		}
	}
	v.WouldBe = v.Action
	v.Rules = append(before.Rules, v.Rules...)
	return v
}

// TestGolden pins moat's whole output for every shared capture, judged by
// testJudge. Run with -update to rewrite testdata/golden after a change
// that is meant to alter it, and read the diff.
func TestGolden(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(testdata, "pcap/*/*.pcap*"))
	if len(files) == 0 {
		t.Fatal("no captures")
	}
	for _, name := range files {
		if strings.HasSuffix(name, ".out") {
			continue
		}
		golden := filepath.Join("testdata/golden", filepath.Base(filepath.Dir(name))+"-"+filepath.Base(name)+".jsonl")
		t.Run(filepath.Base(name), func(t *testing.T) {
			judge := &testJudge{}
			engine, err := inspect.New(inspect.Config{Judge: judge})
			if err != nil {
				t.Fatal(err)
			}
			sessions, _ := analyzeFile(t, name, Config{}, Deps{Engine: engine})
			var buf bytes.Buffer
			w, _ := NewWriter(&buf, "jsonl")
			for _, s := range sessions {
				w.Write(s)
				checkStageOrder(t, judge.calls[s.UID])
			}
			w.Flush()
			if *update {
				os.MkdirAll(filepath.Dir(golden), 0o755)
				if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(buf.Bytes(), want) {
				t.Errorf("output differs from %s (run with -update and read the diff):\n%s", golden, firstDiff(buf.String(), string(want)))
			}
		})
	}
}

// checkStageOrder asserts the proxy's order: connect first and once, then
// helo before any transaction, each transaction's mail before its rcpt
// and data stages.
func checkStageOrder(t *testing.T, calls []inspect.Stage) {
	t.Helper()
	if len(calls) == 0 {
		return
	}
	if calls[0] != inspect.StageConnect {
		t.Errorf("first stage %v, want connect: %v", calls[0], calls)
	}
	helo, mail := false, false
	for i, st := range calls {
		switch st {
		case inspect.StageConnect:
			if i > 0 {
				t.Errorf("connect judged twice: %v", calls)
			}
		case inspect.StageHelo:
			helo, mail = true, false
		case inspect.StageMail:
			if !helo {
				t.Errorf("mail before helo: %v", calls)
			}
			mail = true
		case inspect.StageRcpt, inspect.StageData:
			if !mail {
				t.Errorf("%v without mail: %v", st, calls)
			}
			if st == inspect.StageData {
				mail = false
			}
		}
	}
}

func firstDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := 0; i < len(g) || i < len(w); i++ {
		var a, b string
		if i < len(g) {
			a = g[i]
		}
		if i < len(w) {
			b = w[i]
		}
		if a != b {
			return "line " + itoa(i+1) + ":\n got  " + clip(a, 400) + "\n want " + clip(b, 400)
		}
	}
	return ""
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }
