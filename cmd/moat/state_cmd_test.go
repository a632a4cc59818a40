package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"moat/internal/postfixtest"
)

// moat state: an operator lists the greylist entries of a running moat
// (embedded store, which only that moat may open) and deletes them; the
// sender's next attempt is then a first attempt again.
func TestStateCommand(t *testing.T) {
	pf := postfixtest.Start(t, postfixtest.Options{})
	dir := t.TempDir()
	rulesPath := filepath.Join(dir, "rules.yaml")
	os.WriteFile(rulesPath, []byte("rules:\n  - {name: GREYLIST_ALL, stage: rcpt, when: {rcpt: {ends_with: \"@example.net\"}}, action: greylist}\n"), 0o644)
	cfg := configFor(t, pf.Addr, fmt.Sprintf("rules:\n  file: %q\nstate:\n  dir: %q\ngreylist:\n  delay: 1h\n",
		rulesPath, filepath.Join(dir, "state")))
	m := startMoat(t, "--config", cfg)
	if out, err := swaks(t, m.smtp, "--to", "bo@example.net"); err == nil || !strings.Contains(out, "<** 451 4.7.1") {
		t.Fatalf("first attempt not greylisted: %v\n%s", err, out)
	}

	code, out, errOut := runMoat(t, "state", "get", "grey:*", "--http", m.http)
	if code != 0 || !strings.Contains(out, "ana@client.test") || !strings.Contains(out, "bo@example.net") {
		t.Fatalf("state get: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = runMoat(t, "state", "get", "grey:*", "--http", m.http, "--format", "json")
	if code != 0 || !strings.Contains(out, `"entries":[{`) {
		t.Fatalf("state get --format json: exit %d\n%s", code, out)
	}
	// Un-greylist: delete the triplet (and anything else of greylisting).
	code, out, errOut = runMoat(t, "state", "del", "grey:*", "--http", m.http)
	if code != 0 || !strings.HasPrefix(out, "deleted ") || strings.HasPrefix(out, "deleted 0 ") {
		t.Fatalf("state del: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, _ := runMoat(t, "state", "get", "grey:*", "--http", m.http); code != 0 || !strings.Contains(out, "0 entries") {
		t.Errorf("after del: exit %d\n%s", code, out)
	}
	// Deleted, the triplet is a first attempt again: greylisted, not
	// delivered — the entry really was the store's.
	if out, err := swaks(t, m.smtp, "--to", "bo@example.net"); err == nil || !strings.Contains(out, "<** 451 4.7.1") {
		t.Errorf("after del, a new first attempt: %v\n%s", err, out)
	}

	// Errors: no moat there; no store configured; a usage error.
	if code, _, errOut := runMoat(t, "state", "get", "grey:*", "--http", "127.0.0.1:9"); code != 1 || !strings.Contains(errOut, "is moat serve running") {
		t.Errorf("no moat: exit %d: %s", code, errOut)
	}
	plain := startMoat(t, "--config", configFor(t, pf.Addr, ""))
	if code, _, errOut := runMoat(t, "state", "get", "grey:*", "--http", plain.http); code != 1 || !strings.Contains(errOut, "no state store configured") {
		t.Errorf("no store: exit %d: %s", code, errOut)
	}
	if code, _, _ := runMoat(t, "state", "get"); code != 2 {
		t.Errorf("no pattern: exit %d, want 2", code)
	}
}
