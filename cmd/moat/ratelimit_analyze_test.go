package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Offline, rate limits never touch a store, not even the configured
// one: {rate_limit: NAME} is unknown, the limits' own actions are off,
// and the mail is judged by the other rules.
func TestAnalyzeRateLimitUnknown(t *testing.T) {
	dir := t.TempDir()
	rulesFile := filepath.Join(dir, "rules.yaml")
	os.WriteFile(rulesFile, []byte("rules:\n  - {name: OVER, stage: data, when: {rate_limit: per-ip}, action: reject}\n"), 0o644)
	cfg := filepath.Join(dir, "moat.yaml")
	stateDir := filepath.Join(dir, "state")
	os.WriteFile(cfg, []byte("rules:\n  file: "+rulesFile+"\nstate:\n  dir: "+stateDir+
		"\nrate_limits:\n  - {name: per-ip, key: client_ip, count: messages, rate: 1/1h, burst: 1, action: tempfail}\n"), 0o644)
	var out, errb bytes.Buffer
	if code := run([]string{"analyze", "--quiet", "--config", cfg, sharedSMTPCapture}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for i, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatal(err)
		}
		if rec["verdict"] != "accept" {
			t.Errorf("record %d: verdict %v, want accept (limits unknown offline): %v", i, rec["verdict"], rec)
		}
	}
	if _, err := os.Stat(stateDir); err == nil {
		t.Errorf("analyze created the state directory %s", stateDir)
	}
}
