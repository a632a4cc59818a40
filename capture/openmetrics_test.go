package capture

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"moat/inspect"

	"moat/internal/pcaptest"
)

// omSessions are three sessions seven minutes apart: a transaction
// refused at data by a rule, an accepted one, an implicit-TLS session.
func omSessions() []*Session {
	at := func(hms string) time.Time {
		t, _ := time.Parse(time.RFC3339, "2025-01-06T"+hms+"Z")
		return t
	}
	return []*Session{
		{Start: at("10:00:30"), End: at("10:00:40"), Records: []Record{{TS: Epoch(at("10:00:31")),
			Verdict: "reject", Stage: "data", Reason: "rule:SUBJ", Rules: []string{"HELO_X", "SUBJ"}}}},
		{Start: at("10:07:10"), End: at("10:07:20"), Problems: []string{"mid_stream"},
			Records: []Record{{TS: Epoch(at("10:07:11")), Verdict: "accept", Stage: "data", Rules: []string{"HELO_X"}}}},
		{Start: at("10:07:30"), End: at("10:07:31"), TLS: true, ImplicitTLS: true, Records: []Record{{TLS: true}}},
	}
}

func TestOpenMetricsSamples(t *testing.T) {
	m := NewOpenMetrics(OpenMetricsOptions{Labels: map[string]string{"job": "moat-offline", "instance": "t.pcap"}, Version: "v1.2.3"})
	for _, s := range omSessions() {
		m.Add(s)
	}
	var b bytes.Buffer
	if _, err := m.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if !strings.HasSuffix(out, "\n# EOF\n") {
		t.Errorf("output does not end with # EOF:\n%s", out)
	}
	// Sampled minutes: 10:00 to 10:05 and 10:07 to 10:12.
	base := time.Date(2025, 1, 6, 10, 0, 0, 0, time.UTC).Unix()
	series := func(name, labels string, from int, values ...int) string {
		var s strings.Builder
		minutes := []int{0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12}
		k := 0
		for _, min := range minutes {
			if min < from {
				continue
			}
			fmt.Fprintf(&s, "%s{%s,instance=\"t.pcap\",job=\"moat-offline\"} %d %d\n", name, labels, values[k], base+int64(min)*60)
			k++
		}
		return s.String()
	}
	for _, want := range []string{
		"# HELP moat_capture_sessions SMTP sessions",
		"# TYPE moat_capture_sessions counter\n" + series("moat_capture_sessions_total", `tls="implicit",mode="offline"`, 7, 0, 1, 1, 1, 1, 1) +
			series("moat_capture_sessions_total", `tls="none",mode="offline"`, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2),
		series("moat_rules_hits_total", `rule="HELO_X",mode="enforce",source="offline"`, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2),
		series("moat_rules_hits_total", `rule="SUBJ",mode="enforce",source="offline"`, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1),
		series("moat_proxy_refusals_total", `stage="data",action="reject",reason="rule:SUBJ",mode="offline"`, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1),
		series("moat_proxy_sessions_total", `action="accept",stage="data",mode="offline"`, 7, 0, 1, 1, 1, 1, 1),
		series("moat_proxy_sessions_total", `action="none",stage="none",mode="offline"`, 7, 0, 1, 1, 1, 1, 1),
		series("moat_proxy_sessions_total", `action="reject",stage="data",mode="offline"`, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1),
		// The TLS session's record was never judged: no stage label.
		series("moat_capture_transactions_total", `action="none",mode="offline"`, 7, 0, 1, 1, 1, 1, 1),
		series("moat_capture_problems_total", `problem="mid_stream",mode="offline"`, 7, 0, 1, 1, 1, 1, 1),
		"# TYPE moat_build_info gauge\n" + series("moat_build_info", `version="v1.2.3",mode="offline"`, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks\n%s\ngot:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "# TYPE "); n != len(omFamilies) {
		t.Errorf("%d families, want %d", n, len(omFamilies))
	}

	var empty bytes.Buffer
	NewOpenMetrics(OpenMetricsOptions{Version: "v"}).WriteTo(&empty)
	if empty.String() != "# EOF\n" {
		t.Errorf("no sessions: %q", empty.String())
	}
}

// TestOpenMetricsPromtool loads the metrics of a generated capture of
// eight minutes into Prometheus blocks with the real promtool, and reads
// the last sample back.
func TestOpenMetricsPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (scripts/install-test-deps.sh installs it)")
	}
	// 300 sessions spread over about eight minutes of capture time.
	pkts := pcaptest.Capture(300, 10, 3)
	start := pkts[0].TS
	for i := range pkts {
		pkts[i].TS = start.Add(pkts[i].TS.Sub(start) * 1000)
	}
	dir := t.TempDir()
	pcap := filepath.Join(dir, "gen.pcap")
	os.WriteFile(pcap, pcaptest.Write(t, pkts), 0o644)
	engine, err := inspect.New(inspect.Config{Judge: &testJudge{}})
	if err != nil {
		t.Fatal(err)
	}
	m := NewOpenMetrics(OpenMetricsOptions{Labels: map[string]string{"job": "moat-offline", "instance": "gen.pcap"}, Version: "test"})
	sessions, _ := analyzeFile(t, pcap, Config{}, Deps{Engine: engine})
	for _, s := range sessions {
		m.Add(s)
	}
	om := filepath.Join(dir, "gen.om")
	f, err := os.Create(om)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	f.Close()

	blocks := filepath.Join(dir, "blocks")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, promtool, "tsdb", "create-blocks-from", "openmetrics", om, blocks).CombinedOutput(); err != nil {
		t.Fatalf("promtool create-blocks-from: %v\n%s", err, out)
	}
	out, err := exec.CommandContext(ctx, promtool, "tsdb", "list", blocks).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool tsdb list: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) < 2 {
		t.Fatalf("no block created:\n%s", out)
	}
	// tsdb dump opens the directory as a database, which has a WAL.
	os.Mkdir(filepath.Join(blocks, "wal"), 0o755)
	out, err = exec.CommandContext(ctx, promtool, "tsdb", "dump", blocks).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool tsdb dump: %v\n%s", err, out)
	}
	// The last sample of the sessions counter holds every session.
	last := -1.0
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, `__name__="moat_capture_sessions_total"`) && strings.Contains(l, `tls="none"`) {
			f := strings.Fields(l)
			if v, err := strconv.ParseFloat(f[len(f)-2], 64); err == nil && v > last {
				last = v
			}
		}
	}
	if last != 300 {
		t.Errorf("moat_capture_sessions_total ends at %v in the blocks, want 300:\n%s", last, lines)
	}
}
