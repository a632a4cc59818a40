package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"moat/internal/postfixtest"
)

// sharedSMTPCapture is Zeek's smtp.pcap from the capture package's test
// data (capture/testdata/SOURCES.md).
const sharedSMTPCapture = "../../capture/testdata/pcap/zeek/smtp.pcap"

func TestReplayUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"replay", sharedSMTPCapture}, exitUsage, "--to HOST:PORT is required"},
		{[]string{"replay", "--to", "", sharedSMTPCapture}, exitUsage, "--to HOST:PORT is required"},
		{[]string{"replay", "--to", "mx.example.net", sharedSMTPCapture}, exitUsage, "is not HOST:PORT"},
		{[]string{"replay", "--to", "127.0.0.1:25"}, exitUsage, "no capture file"},
		{[]string{"replay", "--to", "127.0.0.1:25", "--max-pause", "0s", sharedSMTPCapture}, exitUsage, "must be positive"},
		{[]string{"replay", "--to", "127.0.0.1:25", "--ports", "x", sharedSMTPCapture}, exitUsage, "not a port"},
		{[]string{"replay", "--to", "127.0.0.1:25", "does-not-exist.pcap"}, exitFailure, "does-not-exist.pcap"},
		{[]string{"replay", "--help"}, 0, ""},
	} {
		var out, errb bytes.Buffer
		code := run(tc.args, &out, &errb)
		if code != tc.code || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want exit %d and %q", tc.args, code, errb.String(), tc.code, tc.want)
		}
	}
}

// TestReplayCommand replays the shared capture to a real Postfix that
// offers no AUTH: both messages arrive, and the refused AUTH is reported.
func TestReplayCommand(t *testing.T) {
	pf := postfixtest.Start(t, postfixtest.Options{ExtraMainCF: []string{
		"virtual_mailbox_domains = yahoo.co.in, yahoo.com, hotmail.com, outlook.com",
	}})
	var out, errb bytes.Buffer
	if code := run([]string{"replay", "--to", pf.Addr, "--timeout", "20s", sharedSMTPCapture}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s%s", code, out.String(), errb.String())
	}
	for _, want := range []string{
		"AUTH LOGIN: recorded \"334 VXNlcm5hbWU6\", live \"503 ",
		"(2 recorded AUTH responses not sent)",
		"sessions:      2 replayed to " + pf.Addr + ", 0 skipped",
		"transactions:  2 messages sent: 2 accepted, 0 refused",
		"divergences:   1, in 1 sessions",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	msgs := pf.WaitMessages(t, 4, 30*time.Second)
	var subjects []string
	for _, m := range msgs {
		for _, l := range strings.Split(string(m), "\n") {
			if s, ok := strings.CutPrefix(l, "Subject: "); ok {
				subjects = append(subjects, s)
				break
			}
		}
	}
	if j := strings.Join(subjects, "|"); !strings.Contains(j, "SMTP") || !strings.Contains(j, "Re: Bro SMTP CC Header") {
		t.Errorf("subjects delivered: %q", subjects)
	}
}

// TestAnalyzeOpenMetrics writes the shared capture's metrics with
// --openmetrics and loads them with the real promtool: its two sessions,
// six years apart, land in two blocks at their capture times.
func TestAnalyzeOpenMetrics(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (scripts/install-test-deps.sh installs it)")
	}
	dir := t.TempDir()
	om := filepath.Join(dir, "smtp.om")
	var out, errb bytes.Buffer
	if code := run([]string{"analyze", "--quiet", "--openmetrics", om, sharedSMTPCapture}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	b, err := os.ReadFile(om)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	for _, want := range []string{
		`moat_build_info{version="` + version + `",mode="offline",instance="smtp.pcap",job="moat-offline"} 1 1254722760`,
		`moat_proxy_sessions_total{action="accept",stage="data",mode="offline",instance="smtp.pcap",job="moat-offline"} 1 1254722820`,
		`moat_rules_hits_total{rule="HELO_NOT_FQDN",mode="enforce",source="offline",instance="smtp.pcap",job="moat-offline"} 1 1254723060`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("OpenMetrics lacks %q:\n%s", want, text)
		}
	}
	if !strings.HasSuffix(text, "\n# EOF\n") {
		t.Errorf("OpenMetrics does not end with # EOF")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	blocks := filepath.Join(dir, "blocks")
	if o, err := exec.CommandContext(ctx, promtool, "tsdb", "create-blocks-from", "openmetrics", om, blocks).CombinedOutput(); err != nil {
		t.Fatalf("promtool create-blocks-from: %v\n%s", err, o)
	}
	o, err := exec.CommandContext(ctx, promtool, "tsdb", "list", blocks).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool tsdb list: %v\n%s", err, o)
	}
	if n := len(strings.Split(strings.TrimSpace(string(o)), "\n")) - 1; n != 2 {
		t.Errorf("%d blocks, want 2 (2009 and 2015):\n%s", n, o)
	}
}
