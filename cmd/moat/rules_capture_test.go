package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestIsCapture(t *testing.T) {
	dir := t.TempDir()
	gz := func(b []byte) []byte {
		var buf bytes.Buffer
		w := gzip.NewWriter(&buf)
		w.Write(b)
		w.Close()
		return buf.Bytes()
	}
	pcapLE := []byte{0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0}
	for _, tc := range []struct {
		name string
		data []byte
		want bool
	}{
		{"le.pcap", pcapLE, true},
		{"be.pcap", []byte{0xa1, 0xb2, 0xc3, 0xd4, 0, 2, 0, 4}, true},
		{"ns-le.pcap", []byte{0x4d, 0x3c, 0xb2, 0xa1, 2, 0}, true},
		{"ns-be.pcap", []byte{0xa1, 0xb2, 0x3c, 0x4d, 0, 2}, true},
		{"x.pcapng", []byte{0x0a, 0x0d, 0x0d, 0x0a, 0x1c, 0, 0, 0}, true},
		{"x.pcap.gz", gz(pcapLE), true},
		{"no-extension", pcapLE, true},
		{"message.eml", []byte("Subject: hi\r\n\r\nbody\r\n"), false},
		{"mail.gz", gz([]byte("Subject: hi\r\n\r\nbody\r\n")), false},
		{"broken.gz", []byte{0x1f, 0x8b, 0, 0}, false},
		{"short", []byte{0xd4, 0xc3}, false},
		{"empty", nil, false},
	} {
		p := filepath.Join(dir, tc.name)
		if err := os.WriteFile(p, tc.data, 0o644); err != nil {
			t.Fatal(err)
		}
		if got := isCapture(p); got != tc.want {
			t.Errorf("%s: isCapture %v, want %v", tc.name, got, tc.want)
		}
	}
	if isCapture(dir) || isCapture(filepath.Join(dir, "missing")) {
		t.Error("a directory or a missing file taken for a capture")
	}
	if !isCapture(sharedSMTPCapture) {
		t.Error("the shared capture not recognised")
	}
}

// captureRules writes two rule files: the new one rejects the subject of
// the shared capture's first message and scores the second's into a tag.
func captureRules(t *testing.T) (oldFile, newFile string) {
	t.Helper()
	dir := t.TempDir()
	base := `thresholds: {tag: 5, reject: 10}
rules:
  - name: HELO_TWO_LETTERS
    stage: helo
    when: {helo: {matches: '^[A-Z]{2}$'}}
    score: 1
`
	oldFile, newFile = filepath.Join(dir, "old.yaml"), filepath.Join(dir, "new.yaml")
	os.WriteFile(oldFile, []byte(base), 0o644)
	os.WriteFile(newFile, []byte(base+`  - name: SUBJECT_SMTP
    stage: data
    when: {subject: {matches: '^SMTP$'}}
    action: reject
  - name: CC_HEADER_TALK
    stage: data
    when: {subject: {matches: 'CC Header'}}
    score: 6
`), 0o644)
	return oldFile, newFile
}

func TestRulesCompareCapture(t *testing.T) {
	oldFile, newFile := captureRules(t)

	var out, errb bytes.Buffer
	if code := run([]string{"rules", "compare", oldFile, newFile, sharedSMTPCapture}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{
		"gurpartap@patriots.in", "accept 1.0", "reject 1.0 @data (rule:SUBJECT_SMTP)", "+SUBJECT_SMTP",
		"Re: Bro SMTP CC Header", "tag 6.0 @data (score)", "+CC_HEADER_TALK",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	for _, want := range []string{"2 transactions in 1 capture, 2 change action", "reject         0      1      +1", "tag            0      1      +1", "accept         2      0      -2"} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("totals lack %q:\n%s", want, errb.String())
		}
	}

	out.Reset()
	errb.Reset()
	if code := run([]string{"rules", "compare", "--format", "json", oldFile, newFile, sharedSMTPCapture}, &out, &errb); code != 0 {
		t.Fatalf("json: exit %d: %s", code, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("json: %d lines, want 2 changes and the totals:\n%s", len(lines), out.String())
	}
	var change struct {
		Transaction struct {
			ID      string `json:"id"`
			Subject string `json:"subject"`
		} `json:"transaction"`
		Old, New struct {
			Verdict string   `json:"verdict"`
			Rules   []string `json:"rules"`
		}
		Why string `json:"why"`
	}
	if err := json.Unmarshal([]byte(lines[0]), &change); err != nil {
		t.Fatal(err)
	}
	if change.Transaction.Subject != "SMTP" || change.Old.Verdict != "accept" || change.New.Verdict != "reject" || change.Why != "+SUBJECT_SMTP" {
		t.Errorf("first change: %+v", change)
	}
	var totals struct {
		Totals compareTotals `json:"totals"`
	}
	if err := json.Unmarshal([]byte(lines[2]), &totals); err != nil {
		t.Fatal(err)
	}
	if tt := totals.Totals; tt.Transactions != 2 || tt.Changed != 2 || tt.Delta["reject"] != 1 || tt.Delta["tag"] != 1 || tt.Delta["tempfail"] != 0 {
		t.Errorf("totals: %+v", tt)
	}

	// The same rules twice: nothing changes.
	out.Reset()
	errb.Reset()
	if code := run([]string{"rules", "compare", newFile, newFile, sharedSMTPCapture}, &out, &errb); code != 0 {
		t.Fatalf("same rules: exit %d: %s", code, errb.String())
	}
	if !strings.Contains(errb.String(), "0 change action") || strings.Contains(out.String(), "#1") {
		t.Errorf("same rules:\n%s%s", out.String(), errb.String())
	}
}

// TestRulesTestCaptureAndMessages runs a message and a capture in one
// call: both are judged, the capture's transactions stage by stage.
func TestRulesTestCaptureAndMessages(t *testing.T) {
	_, newFile := captureRules(t)
	msg := filepath.Join(t.TempDir(), "m.eml")
	os.WriteFile(msg, []byte("From: a@example.org\r\nSubject: SMTP\r\n\r\nhello\r\n"), 0o644)
	var out, errb bytes.Buffer
	if code := run([]string{"rules", "test", "--format", "json", "--rules", newFile, msg, sharedSMTPCapture}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines, want 1 message and 2 transactions:\n%s", len(lines), out.String())
	}
	var m struct {
		Message string `json:"message"`
		Action  string `json:"action"`
	}
	json.Unmarshal([]byte(lines[0]), &m)
	if m.Message != msg || m.Action != "reject" {
		t.Errorf("message: %s", lines[0])
	}
	var tx struct {
		Transaction struct {
			Helo     string `json:"helo"`
			MailFrom string `json:"mailfrom"`
		} `json:"transaction"`
		Verdict string   `json:"verdict"`
		Stage   string   `json:"stage"`
		Rules   []string `json:"rules"`
	}
	json.Unmarshal([]byte(lines[1]), &tx)
	// HELO_TWO_LETTERS is a helo-stage rule: only a capture has a HELO.
	if tx.Transaction.Helo != "GP" || tx.Transaction.MailFrom != "gurpartap@patriots.in" || tx.Verdict != "reject" || tx.Stage != "data" ||
		strings.Join(tx.Rules, ",") != "HELO_TWO_LETTERS,SUBJECT_SMTP" {
		t.Errorf("transaction: %s", lines[1])
	}
}
