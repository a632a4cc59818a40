package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"moat/inspect/reputation"
	"moat/internal/state"
)

// moat analyze --state reads what a live moat learned — here, three
// rejections of a client network in an embedded store — so a rule on the
// reputation facts judges the capture as it would have live; without
// --state the facts are unknown and the rule does not fire; and the store
// is never written (issue 15 §7).
func TestAnalyzeStateReadOnly(t *testing.T) {
	dir := t.TempDir()
	analyze := func(extra ...string) []map[string]any {
		t.Helper()
		rulesFile := filepath.Join(dir, "rules.yaml")
		os.WriteFile(rulesFile, []byte("rules:\n  - {name: BAD_NET, stage: connect, when: {net_rejected: {ge: 3}}, score: 5}\n"), 0o644)
		cfg := filepath.Join(dir, "moat.yaml")
		os.WriteFile(cfg, []byte("rules:\n  file: "+rulesFile+"\nreputation:\n  enabled: true\n"), 0o644)
		var out, errb bytes.Buffer
		args := append([]string{"analyze", "--quiet", "--config", cfg}, extra...)
		if code := run(append(args, sharedSMTPCapture), &out, &errb); code != 0 {
			t.Fatalf("analyze %v: exit %d: %s", extra, code, errb.String())
		}
		var recs []map[string]any
		for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			var r map[string]any
			if err := json.Unmarshal([]byte(l), &r); err != nil {
				t.Fatal(err)
			}
			recs = append(recs, r)
		}
		return recs
	}
	hasRule := func(r map[string]any) bool {
		rs, _ := r["rules"].([]any)
		return slices.Contains(rs, any("BAD_NET"))
	}
	plain := analyze()
	client := netip.MustParseAddr(plain[0]["id.orig_h"].(string))
	for _, r := range plain {
		if hasRule(r) {
			t.Fatalf("without --state the reputation is unknown, yet BAD_NET fired: %v", r)
		}
	}

	// What a live moat would have counted.
	stateDir := filepath.Join(dir, "state")
	var sc state.Config
	sc.Backend = state.BackendEmbedded
	sc.Defaults()
	sc.Dir = stateDir
	st, err := state.New(sc, state.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	var rc reputation.Config
	rc.Enabled = true
	rc.Defaults()
	counter := reputation.New(rc, st, nil, nil)
	for i := 0; i < 3; i++ {
		counter.Record(context.Background(), reputation.Network(client), "", reputation.Rejected)
	}
	st.Close()
	before := fileSum(t, filepath.Join(stateDir, state.FileName))

	withState := analyze("--state", stateDir)
	fired := 0
	for _, r := range withState {
		if r["id.orig_h"] == client.String() && hasRule(r) {
			fired++
		}
	}
	if fired == 0 {
		t.Errorf("with --state, BAD_NET did not fire for %s: %v", client, withState[0])
	}
	if after := fileSum(t, filepath.Join(stateDir, state.FileName)); after != before {
		t.Errorf("moat analyze --state changed the store")
	}
	var out, errb bytes.Buffer
	if code := run([]string{"analyze", "--quiet", "--state", filepath.Join(dir, "nope"), sharedSMTPCapture}, &out, &errb); code != exitUsage || !strings.Contains(errb.String(), "--state") {
		t.Errorf("a missing store: exit %d: %s", code, errb.String())
	}
}

func fileSum(t *testing.T, name string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}
