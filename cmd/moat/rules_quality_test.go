package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// qualityRules scores the subjects of qualityCorpus's messages.
const qualityRules = `thresholds: {tag: 5, reject: 12}
rules:
  - {name: CHEAP, stage: data, when: {subject: {contains: cheap}}, score: 6}
  - {name: WATCHES, stage: data, when: {subject: {contains: watches}}, score: 7}
  - {name: PRIZE, stage: data, when: {subject: {contains: prize}}, score: 3}
`

// qualityCorpus writes labelled mail and the rules files into a temp
// dir, and returns it. With qualityRules the spam scores 13, 6, 3, 0 and
// the ham 6, 3, 0, 0, plus a ham file that is not a message. The new
// rules add WON, which lifts "you won a prize" from 3 to 13.
func qualityCorpus(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	msg := func(id, subject string) string {
		return fmt.Sprintf("From: ana@client.test\nTo: bo@example.net\nDate: Mon, 5 Jan 2026 10:00:00 +0000\nMessage-ID: <%s@client.test>\nSubject: %s\n\nHello.\n", id, subject)
	}
	write("spam/1.eml", msg("s1", "cheap watches"))                                               // 13: reject
	write("spam/2.eml", msg("s2", "cheap pills"))                                                 // 6: tag
	write("spam/3.eml", msg("s3", "you won a prize"))                                             // 3 (new: 13)
	write("more-spam.mbox", "From ana@client.test Mon Jan  5 10:00:00 2026\n"+msg("s4", "hello")) // 0
	write("ham/1.eml", msg("h1", "cheap flights for the team"))                                   // 6: tag
	write("ham/2.eml", msg("h2", "prize giving on Friday"))                                       // 3
	write("ham/3.eml", msg("h3", "minutes"))                                                      // 0
	write("ham/4.eml", msg("h4", "lunch"))                                                        // 0
	write("ham/notes.txt", "just some notes\n")                                                   // not judged
	write("old.yaml", qualityRules)
	write("new.yaml", qualityRules+"  - {name: WON, stage: data, when: {subject: {contains: won}}, score: 10}\n")
	return dir
}

// At tag 5, spam 13 and 6 are caught, ham 6 flagged; at reject 12, spam
// 13 alone. No ham at all may be flagged (1 of 4 is over 0.5 %): ham 6
// ties spam 6, so the threshold is 13. Mann–Whitney over the 16 pairs:
// 13 beats 4 ham, 6 beats 3 and ties 1 (3.5), 3 beats 2 and ties 1
// (2.5), 0 ties 2 (1): AUC 11/16, 1-ROCA% 31.25. With WON, spam scores
// 13, 13, 6, 0: 4+4+3.5+1 = 12.5, 1-ROCA% 21.875.
const (
	qualityOldTable = `QUALITY                    VALUE
spam judged                4
ham judged                 4
spam not judged            0
ham not judged             1
tag threshold              5
  spam caught              2 (50.00%)
  ham flagged              1 (25.00%)
reject threshold           12
  spam caught              1 (25.00%)
  ham flagged              0 (0.00%)
threshold for ham <= 0.1%  13
  spam caught              1 (25.00%)
  ham flagged              0 (0.00%)
threshold for ham <= 0.5%  13
  spam caught              1 (25.00%)
  ham flagged              0 (0.00%)
1-ROCA%                    31.25
`
	qualityCompareTable = `QUALITY                    OLD         NEW
spam judged                4           4
ham judged                 4           4
spam not judged            0           0
ham not judged             1           1
tag threshold              5           5
  spam caught              2 (50.00%)  3 (75.00%)
  ham flagged              1 (25.00%)  1 (25.00%)
reject threshold           12          12
  spam caught              1 (25.00%)  2 (50.00%)
  ham flagged              0 (0.00%)   0 (0.00%)
threshold for ham <= 0.1%  13          13
  spam caught              1 (25.00%)  2 (50.00%)
  ham flagged              0 (0.00%)   0 (0.00%)
threshold for ham <= 0.5%  13          13
  spam caught              1 (25.00%)  2 (50.00%)
  ham flagged              0 (0.00%)   0 (0.00%)
1-ROCA%                    31.25       21.88
`
)

func TestRulesTestLabels(t *testing.T) {
	dir := qualityCorpus(t)
	labels := "spam=" + filepath.Join(dir, "spam") + "," + filepath.Join(dir, "more-spam.mbox") + ",ham=" + filepath.Join(dir, "ham")

	code, out, errOut := runMoat(t, "rules", "test", "--rules", filepath.Join(dir, "old.yaml"), "--labels", labels)
	if code != 0 || out != qualityOldTable {
		t.Fatalf("exit %d, stdout:\n%s\nwant:\n%s\nstderr: %s", code, out, qualityOldTable, errOut)
	}
	if want := filepath.Join(dir, "ham/notes.txt") + ": not judged: no header fields"; !strings.Contains(errOut, want) {
		t.Errorf("stderr %q lacks %q", errOut, want)
	}

	code, out, errOut = runMoat(t, "rules", "test", "--format", "json", "--rules", filepath.Join(dir, "old.yaml"), "--labels", labels)
	if code != 0 {
		t.Fatalf("json: exit %d: %s", code, errOut)
	}
	var got qualityJSON
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("json: %v\n%s", err, out)
	}
	if got.Spam != (labelCount{4, 0}) || got.Ham != (labelCount{4, 1}) ||
		!slices.Equal(got.Thresholds, []atThresholdJSON{{"tag", 5, 2, 1, 0.5, 0.25}, {"reject", 12, 1, 0, 0.25, 0}}) ||
		len(got.AtHamRate) != 2 || got.AtHamRate[0].MaxHamRate != 0.001 || got.AtHamRate[1].MaxHamRate != 0.005 ||
		got.OneMinusROCA == nil || *got.OneMinusROCA != 31.25 {
		t.Errorf("json: %s", out)
	}
	for _, a := range got.AtHamRate {
		if a.Threshold == nil || *a.Threshold != 13 || a.SpamCaught != 1 || a.HamFlagged != 0 || a.Recall != 0.25 {
			t.Errorf("json at %v: %+v", a.MaxHamRate, a)
		}
	}

	// Ham alone: no threshold keeps the ham under 0.5 % (6 flags 1 of
	// 4), and without spam the ROC curve is undefined.
	code, out, _ = runMoat(t, "rules", "test", "--rules", filepath.Join(dir, "old.yaml"), "--labels", "ham="+filepath.Join(dir, "ham"))
	if code != 0 || !strings.Contains(out, "threshold for ham <= 0.5%  none\n") || !strings.Contains(out, "1-ROCA%                    n/a\n") {
		t.Errorf("ham only: exit %d\n%s", code, out)
	}
	code, out, _ = runMoat(t, "rules", "test", "--format", "json", "--rules", filepath.Join(dir, "old.yaml"), "--labels", "ham="+filepath.Join(dir, "ham"))
	if code != 0 || !strings.Contains(out, `"max_ham_rate":0.005,"threshold":null,`) || !strings.Contains(out, `"one_minus_roca_percent":null`) {
		t.Errorf("ham only, json: exit %d\n%s", code, out)
	}

	// Usage errors: messages next to --labels, a capture as labelled mail.
	for _, args := range [][]string{
		{"rules", "test", "--labels", labels, filepath.Join(dir, "ham/1.eml")},
		{"rules", "test", "--labels", "spam=" + sharedSMTPCapture},
		{"rules", "test", "--labels", filepath.Join(dir, "ham")},
		{"rules", "compare", "--labels", labels, filepath.Join(dir, "old.yaml")},
	} {
		if code, _, errOut := runMoat(t, args...); code != exitUsage {
			t.Errorf("%q: exit %d, want %d: %s", args, code, exitUsage, errOut)
		}
	}
}

func TestRulesCompareLabels(t *testing.T) {
	dir := qualityCorpus(t)
	labels := "spam=" + filepath.Join(dir, "spam") + "," + filepath.Join(dir, "more-spam.mbox") + ",ham=" + filepath.Join(dir, "ham")
	oldRules, newRules := filepath.Join(dir, "old.yaml"), filepath.Join(dir, "new.yaml")

	// The changed messages, then a blank line and the summaries.
	code, out, errOut := runMoat(t, "rules", "compare", "--labels", labels, oldRules, newRules)
	changes, summary, _ := strings.Cut(out, "\n\n")
	rows := strings.Split(changes, "\n")
	if code != 0 || len(rows) != 2 || !slices.Equal(strings.Fields(rows[0]), []string{"MESSAGE", "LABEL", "OLD", "NEW", "WHY"}) ||
		!slices.Equal(strings.Fields(rows[1]), []string{filepath.Join(dir, "spam/3.eml"), "spam", "accept", "3.0", "reject", "13.0", "+WON(10.0)"}) ||
		summary != qualityCompareTable {
		t.Fatalf("exit %d, stdout:\n%s\nwant the change of spam/3.eml and:\n%s\nstderr: %s", code, out, qualityCompareTable, errOut)
	}
	if !strings.Contains(errOut, "9 messages, 1 change action") || strings.Count(errOut, "notes.txt: not judged: no header fields") != 1 {
		t.Errorf("stderr: %s", errOut)
	}

	code, out, errOut = runMoat(t, "rules", "compare", "--format", "json", "--labels", labels, oldRules, newRules)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 2 {
		t.Fatalf("json: exit %d, %d lines\n%s\n%s", code, len(lines), out, errOut)
	}
	var changed struct{ Message, Label, Why string }
	var last struct {
		Quality struct{ Old, New qualityJSON }
	}
	if err := json.Unmarshal([]byte(lines[0]), &changed); err != nil || changed.Label != "spam" || changed.Why != "+WON(10.0)" {
		t.Errorf("changed message: %v %+v", err, changed)
	}
	if err := json.Unmarshal([]byte(lines[1]), &last); err != nil {
		t.Fatal(err)
	}
	if o, n := last.Quality.Old, last.Quality.New; *o.OneMinusROCA != 31.25 || *n.OneMinusROCA != 21.875 ||
		n.Thresholds[0].SpamCaught != 3 || n.Thresholds[1].SpamCaught != 2 || n.AtHamRate[0].SpamCaught != 2 {
		t.Errorf("quality: %s", lines[1])
	}
}

func TestLabelsFlag(t *testing.T) {
	for _, tc := range []struct {
		in        string
		spam, ham []string
		bad       bool
	}{
		{in: "spam=a,b,ham=c", spam: []string{"a", "b"}, ham: []string{"c"}},
		{in: "ham=c,spam=a,ham=d", spam: []string{"a"}, ham: []string{"c", "d"}},
		{in: "spam=a", spam: []string{"a"}},
		{in: "a,spam=b", bad: true},
		{in: "spam=", bad: true},
		{in: "spam=a,,b", bad: true},
	} {
		var l labels
		err := l.Set(tc.in)
		if tc.bad != (err != nil) || !tc.bad && (!slices.Equal(l.spam, tc.spam) || !slices.Equal(l.ham, tc.ham)) {
			t.Errorf("%q: %v %+v", tc.in, err, l)
		}
	}
}
