//go:build e2ebench

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"moat/internal/corpustest"
)

var flagClassifierMessages = 4000

// TestClassifierEndToEnd measures the statistical classifier end to end
// (issue 17): 5 KB messages from 50 concurrent sessions of one message
// each, straight to smtp-sink, through the TCP relay, through moat with
// the built-in rules, and through moat with the classifier on (its model
// learned by moat learn from the older half of the SpamAssassin corpus,
// 3,250 messages, on the embedded store). It reports throughput against
// the TCP relay and moat's CPU per message; the bar is 0.70× the relay
// with the classifier on.
func TestClassifierEndToEnd(t *testing.T) {
	root, out := benchDirs(t)
	dir := t.TempDir()
	n := workloadSize(flagClassifierMessages)
	moatBin := buildMoat(t, root, dir)
	// The model: every message of the corpus's older half, learned.
	corpus := corpustest.Load(t)
	for _, m := range corpus {
		class := "ham"
		if m.Spam {
			class = "spam"
		}
		p := filepath.Join(dir, "corpus", class, strings.ReplaceAll(m.Name, "/", "_")+".eml")
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, m.Raw, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	stateDir := filepath.Join(dir, "state")
	learnCfg := filepath.Join(dir, "learn.yaml")
	os.WriteFile(learnCfg, []byte(fmt.Sprintf("state: {dir: %q}\n", stateDir)), 0o644)
	start := time.Now()
	if out, err := exec.Command(moatBin, "learn", "--config", learnCfg, "--spam", filepath.Join(dir, "corpus", "spam"),
		"--ham", filepath.Join(dir, "corpus", "ham")).CombinedOutput(); err != nil {
		t.Fatalf("moat learn: %v\n%s", err, out)
	} else {
		t.Logf("moat learn: %d messages in %v\n%s", len(corpus), time.Since(start).Round(time.Millisecond), out)
	}

	msg := stateBenchMessage()
	snk := startSink(t, dir)
	paths := []*path{{name: "direct", addr: snk.addr}, startRelay(t, dir, snk.addr)}
	httpAddr := map[string]string{}
	for _, on := range []bool{false, true} {
		p, h := startClassifierMoat(t, dir, moatBin, snk.addr, stateDir, on)
		paths = append(paths, p)
		httpAddr[p.name] = h
	}
	for _, p := range paths {
		if _, err := sendSigned(p.addr, msg, 200, 50); err != nil {
			t.Fatalf("warm-up of %s: %v", p.name, err)
		}
	}
	r := runRounds(t, paths, snk, msg, n, nil)
	// The classifier judged the messages: their transaction lines carry
	// its probability.
	logData, _ := os.ReadFile(filepath.Join(dir, "moat-classifier.log"))
	if judged := strings.Count(string(logData), `"classifier":{"prob":`); judged < n {
		t.Fatalf("moat-classifier: %d transaction lines carry a classifier judgement, want at least %d", judged, n)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "## Statistical classifier (TestClassifierEndToEnd)\n\n%d 5 KB messages, 50 concurrent sessions of one message; moat-rules runs the built-in rules, moat-classifier adds the classifier (model learned by `moat learn` from the %d messages of the SpamAssassin corpus's older half, embedded store); median of %d rounds, paths alternating.\n\n", n, len(corpus), *flagRounds)
	r.table(&b, paths)
	fmt.Fprintf(&b, "\nThe classifier adds %.3f ms of moat CPU per message (decoding the text, tokenizing, judging).\n", r.cpu("moat-classifier")-r.cpu("moat-rules"))
	fmt.Println("\n" + b.String())
	if err := os.WriteFile(filepath.Join(out, "classifier.md"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := r.rate("moat-classifier") / r.rate("tcp-relay"); r < 0.70 {
		t.Errorf("moat with the classifier runs at %.2f× the TCP relay; the bar is 0.70×", r)
	}
}

// startClassifierMoat runs moat with the built-in rules in front of the
// sink, with the classifier's model in stateDir when on.
func startClassifierMoat(t *testing.T, dir, bin, sink, stateDir string, on bool) (*path, string) {
	t.Helper()
	name, extra := "moat-rules", ""
	if on {
		name = "moat-classifier"
		extra = fmt.Sprintf("state: {dir: %q}\nclassifier: {enabled: true}\n", stateDir)
	}
	return startBenchMoat(t, dir, bin, name, sink, "dnsbl:\n  resolver: \"127.0.0.1:9\"\n"+extra)
}
