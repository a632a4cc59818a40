package main

// A newcomer's first hour, as tests: README.md's Setup and Quickstart run
// for real, and every moat command line README.md shows is run or, where
// it cannot run offline, at least parsed by the binary — so README cannot
// drift from the program.

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"moat/internal/postfixtest"
	"moat/internal/rbldnstest"
)

func readREADME(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// ---------------------------------------------------------------------
// The system resolver, trapped.

// resolverTrap runs programs with /etc/resolv.conf replaced, in a private
// mount namespace, by one that names trapResolver, where the test answers
// every question REFUSED and writes it down. moat falls back to the
// system resolver when dnsbl.resolver is not set (the README's configs
// do not set it); this proves what it asked there — nothing, as no test
// may touch the system resolver.
type resolverTrap struct {
	wrap []string // prefix that runs a command under the trap
	err  error    // why there is no trap

	mu        sync.Mutex
	questions []string
}

// trapResolver is a loopback address of its own, not 127.0.0.53, where
// systemd-resolved may already listen.
const trapResolver = "127.83.0.53"

func newResolverTrap(t *testing.T) *resolverTrap {
	t.Helper()
	tr := &resolverTrap{}
	if os.Geteuid() != 0 {
		tr.err = errors.New("not root: no private mount namespace, no port 53")
		return tr
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		tr.err = err
		return tr
	}
	pc, err := net.ListenPacket("udp", trapResolver+":53")
	if err != nil {
		tr.err = err
		return tr
	}
	ln, err := net.Listen("tcp", trapResolver+":53")
	if err != nil {
		pc.Close()
		tr.err = err
		return tr
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		tr.mu.Lock()
		for _, q := range r.Question {
			tr.questions = append(tr.questions, q.Name+" "+dns.TypeToString[q.Qtype])
		}
		tr.mu.Unlock()
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeRefused)
		w.WriteMsg(m)
	})
	udp := &dns.Server{PacketConn: pc, Handler: h}
	tcp := &dns.Server{Listener: ln, Handler: h}
	go udp.ActivateAndServe()
	go tcp.ActivateAndServe()
	t.Cleanup(func() { udp.Shutdown(); tcp.Shutdown() })

	conf := filepath.Join(t.TempDir(), "resolv.conf")
	text := "nameserver " + trapResolver + "\n"
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	wrap := []string{unshare, "--mount", "sh", "-c", `mount --bind "$0" /etc/resolv.conf && exec "$@"`, conf}
	// The wrapper must really show the program the trap's resolv.conf.
	out, err := exec.Command(wrap[0], append(wrap[1:], "cat", "/etc/resolv.conf")...).CombinedOutput()
	if err != nil || string(out) != text {
		tr.err = fmt.Errorf("unshare --mount: %v: %s", err, out)
		return tr
	}
	tr.wrap = wrap
	return tr
}

// command is exec.Command(name, args...) under the trap, or not trapped
// when there is none (check then skips).
func (tr *resolverTrap) command(name string, args ...string) *exec.Cmd {
	if tr.wrap == nil {
		return exec.Command(name, args...)
	}
	return exec.Command(tr.wrap[0], append(append(slices.Clone(tr.wrap[1:]), name), args...)...)
}

// check fails the test if anything asked the system resolver.
func (tr *resolverTrap) check(t *testing.T) {
	t.Helper()
	t.Run("no system resolver queries", func(t *testing.T) {
		if tr.wrap == nil {
			t.Skipf("cannot trap the system resolver: %v", tr.err)
		}
		tr.mu.Lock()
		defer tr.mu.Unlock()
		if len(tr.questions) > 0 {
			t.Errorf("moat asked the system resolver: %q", tr.questions)
		}
	})
}

// ---------------------------------------------------------------------
// (a) Setup: `go run ./cmd/moat serve` with nothing around it.

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func addrFree(addr string) bool {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	l.Close()
	return true
}

func stopMoat(t *testing.T, p *moatProc) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(20 * time.Second):
		t.Fatal("moat did not stop on SIGTERM")
	}
}

// startedLine is the "moat started" log line's fields.
func startedLine(t *testing.T, p *moatProc) map[string]any {
	t.Helper()
	for _, line := range strings.Split(p.log.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "moat started" {
			return m
		}
	}
	t.Fatalf("no startup line:\n%s", p.log.String())
	return nil
}

// TestNewcomerServeDefaults runs moat serve on the built-in defaults, as
// README's Setup does: it listens and forwards where README says, and
// with no upstream MTA listening a message gets a 4xx, never a 250, and
// moat stays up for the next connection.
func TestNewcomerServeDefaults(t *testing.T) {
	readme := readREADME(t)
	m := regexp.MustCompile(`(?m)^go run \./cmd/moat serve +# run moat: listens on (\S+), forwards to (\S+)$`).FindStringSubmatch(readme)
	if m == nil {
		t.Fatal("README's Setup no longer shows `go run ./cmd/moat serve  # run moat: listens on ADDR, forwards to ADDR`; update this test with it")
	}
	wantListen, wantUpstream := m[1], m[2]
	trap := newResolverTrap(t)

	t.Run("as in README", func(t *testing.T) {
		for _, a := range []string{wantListen, "127.0.0.1:9325"} {
			if !addrFree(a) {
				t.Skipf("%s is taken on this machine; the run below uses free ports instead", a)
			}
		}
		p := startMoatCmd(t, trap.command(moatBin, "serve"))
		st := startedLine(t, p)
		if p.smtp != wantListen || st["upstream"] != wantUpstream || p.http != "127.0.0.1:9325" {
			t.Errorf("moat serve: listen %q upstream %v http %q; README says listens on %s, forwards to %s (and serve --help: /metrics on 127.0.0.1:9325)",
				p.smtp, st["upstream"], p.http, wantListen, wantUpstream)
		}
		if g := greetingFrom(t, "127.0.0.1", p.smtp); !strings.HasPrefix(g, "220 ") {
			t.Errorf("greeting %q", g)
		}
		stopMoat(t, p)
	})

	upstream := closedAddr(t)
	p := startMoatCmd(t, trap.command(moatBin, "serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--upstream", upstream))
	if st := startedLine(t, p); st["upstream"] != upstream {
		t.Fatalf("--upstream %s, but moat forwards to %v", upstream, st["upstream"])
	}
	for i := 1; i <= 3; i++ {
		out, err := exec.Command("swaks", "--server", p.smtp, "--from", "me@example.org", "--to", "you@example.net",
			"--header", fmt.Sprintf("Subject: no upstream %d", i)).CombinedOutput()
		if err == nil {
			t.Errorf("connection %d: swaks succeeded with no upstream:\n%s", i, out)
		}
		// From MAIL on, the first reply that is not 2xx is a 4xx (moat
		// answers MAIL itself only when the upstream takes it), and
		// neither a RCPT nor the message gets a 250.
		mail := bytes.Index(out, []byte("-> MAIL FROM"))
		if mail < 0 {
			t.Fatalf("connection %d: swaks sent no MAIL:\n%s", i, out)
		}
		if m := regexp.MustCompile(`(?m)^<\S* +([013-9])\d\d[ -]`).FindSubmatch(out[mail:]); m == nil || string(m[1]) != "4" {
			t.Errorf("connection %d: no 4xx for the message with no upstream:\n%s", i, out)
		}
		if rcpt := bytes.Index(out, []byte("-> RCPT TO")); rcpt >= 0 && regexp.MustCompile(`(?m)^<\S* +250[ -]`).Match(out[rcpt:]) {
			t.Errorf("connection %d: a 250 for RCPT or the message with no upstream:\n%s", i, out)
		}
		if bytes.Contains(out, []byte("queued")) {
			t.Errorf("connection %d: queued with no upstream?\n%s", i, out)
		}
		select {
		case <-p.exited:
			t.Fatalf("moat exited after connection %d: %v\n%s", i, p.cmd.ProcessState, p.log.String())
		default:
		}
	}
	resp, err := http.Get("http://" + p.http + "/healthz")
	if err != nil {
		t.Fatalf("/healthz: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("/healthz: %s", resp.Status)
	}
	trap.check(t)
}

// ---------------------------------------------------------------------
// (b) Quickstart: README's config and swaks line in front of a real Postfix.

// fencedBlock is one ``` block of README.md.
type fencedBlock struct {
	line int // of the opening fence, 1-based
	lang string
	text string
}

func fencedBlocks(md string) (blocks []fencedBlock, prose string) {
	var b *fencedBlock
	var lines, rest []string
	for i, l := range strings.Split(md, "\n") {
		if strings.HasPrefix(l, "```") {
			if b == nil {
				b = &fencedBlock{line: i + 1, lang: strings.TrimSpace(l[3:])}
				lines = nil
			} else {
				b.text = strings.Join(lines, "\n")
				blocks = append(blocks, *b)
				b = nil
			}
			rest = append(rest, "")
			continue
		}
		if b != nil {
			lines = append(lines, l)
			rest = append(rest, "")
		} else {
			rest = append(rest, l)
		}
	}
	return blocks, strings.Join(rest, "\n")
}

// shellWords splits a command line as sh would for the simple lines
// README holds (quotes, no expansions but ~), up to a comment or an
// operator (|, &, ;).
func shellWords(s string) []string {
	var words []string
	var w strings.Builder
	in, quote := false, byte(0)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			} else {
				w.WriteByte(c)
			}
		case c == '\'' || c == '"':
			quote, in = c, true
		case c == ' ' || c == '\t':
			if in {
				words = append(words, w.String())
				w.Reset()
				in = false
			}
		case !in && (c == '#' || c == '|' || c == '&' || c == ';'):
			return words
		default:
			w.WriteByte(c)
			in = true
		}
	}
	if in {
		words = append(words, w.String())
	}
	return words
}

// logicalLines joins a block's backslash-continued lines.
func logicalLines(text string) []string {
	var out []string
	cur := ""
	for _, l := range strings.Split(text, "\n") {
		if strings.HasSuffix(l, "\\") {
			cur += strings.TrimSuffix(l, "\\") + " "
			continue
		}
		out = append(out, cur+l)
		cur = ""
	}
	return out
}

// TestNewcomerQuickstart runs README's quickstart: its moat.yaml (only
// the addresses changed to the test's), config check, serve --config,
// and its swaks line, in front of a real Postfix; the messages arrive
// with moat's Received header, and the log line has README's fields.
func TestNewcomerQuickstart(t *testing.T) {
	readme := readREADME(t)
	blocks, _ := fencedBlocks(readme)
	var yamlText, swaksLine string
	for _, b := range blocks {
		if strings.HasPrefix(b.text, "# moat.yaml\n") {
			yamlText = b.text
		}
		for _, l := range logicalLines(b.text) {
			if strings.HasPrefix(l, "swaks ") && swaksLine == "" {
				swaksLine = l
			}
		}
	}
	if yamlText == "" || swaksLine == "" {
		t.Fatal("README's quickstart config (a block starting `# moat.yaml`) or its swaks line is gone; update this test")
	}
	pf := postfixtest.Start(t, postfixtest.Options{})
	cfg := yamlText
	for from, to := range map[string]string{`"0.0.0.0:2525"`: `"127.0.0.1:0"`, `"127.0.0.1:25"`: fmt.Sprintf("%q", pf.Addr)} {
		if strings.Count(cfg, from) != 1 {
			t.Fatalf("README's quickstart config no longer has %s once; update this test:\n%s", from, yamlText)
		}
		cfg = strings.Replace(cfg, from, to, 1)
	}
	hostname := regexp.MustCompile(`(?m)^hostname: (\S+)`).FindStringSubmatch(cfg)
	if hostname == nil {
		t.Fatalf("no hostname in README's quickstart config:\n%s", yamlText)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "moat.yaml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	check := exec.Command(moatBin, "config", "check", "moat.yaml")
	check.Dir = dir
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("moat config check moat.yaml: %v\n%s", err, out)
	}

	trap := newResolverTrap(t)
	// --http: the quickstart config keeps the built-in 127.0.0.1:9325,
	// which another moat on this machine may hold.
	cmd := trap.command(moatBin, "serve", "--config", "moat.yaml", "--http", "127.0.0.1:0")
	cmd.Dir = dir
	p := startMoatCmd(t, cmd)

	args := shellWords(swaksLine)[1:]
	i := slices.Index(args, "--server")
	if i < 0 || i+1 >= len(args) {
		t.Fatalf("README's swaks line has no --server: %s", swaksLine)
	}
	args[i+1] = p.smtp
	subject := ""
	if j := slices.Index(args, "--header"); j >= 0 && j+1 < len(args) {
		subject = args[j+1]
	}
	const n = 2
	for k := 0; k < n; k++ {
		out, err := exec.Command("swaks", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("swaks %q: %v\n%s", args, err, out)
		}
		// README: "swaks shows the upstream's own 250 ... queued as ..."
		if !regexp.MustCompile(`(?m)^<-  250 .*queued as `).Match(out) {
			t.Errorf("swaks did not show Postfix's queued-as reply:\n%s", out)
		}
	}
	msgs := pf.WaitMessages(t, n, 30*time.Second)
	var sessions []string
	var logLine map[string]any
	for _, line := range strings.Split(p.log.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "transaction" {
			sessions = append(sessions, fmt.Sprint(m["session"]))
			logLine = m
		}
	}
	if len(msgs) != n || len(sessions) != n {
		t.Fatalf("%d messages delivered, %d transactions logged; want %d", len(msgs), len(sessions), n)
	}
	for _, msg := range msgs {
		if subject != "" && !bytes.Contains(msg, []byte(subject+"\n")) {
			t.Errorf("delivered message lacks %q:\n%s", subject, msg)
		}
		rcv := regexp.MustCompile(`Received: from \S+ \(\[127\.0\.0\.1\]\)\n\tby ` + regexp.QuoteMeta(hostname[1]) + ` \(moat\) with ESMTP id (\S+)`).FindSubmatch(msg)
		if rcv == nil {
			t.Errorf("no moat Received header naming HELO, IP and %s:\n%s", hostname[1], msg)
		} else if !slices.Contains(sessions, string(rcv[1])) {
			t.Errorf("Received header's id %s is on no transaction log line (%q)", rcv[1], sessions)
		}
	}
	// The README's example log line has the fields of the real one.
	var example map[string]any
	for _, b := range blocks {
		if b.lang == "json" && strings.Contains(b.text, `"msg":"transaction"`) {
			if err := json.Unmarshal([]byte(b.text), &example); err != nil {
				t.Fatalf("README's example transaction line: %v", err)
			}
		}
	}
	if example == nil {
		t.Fatal("README's example transaction log line is gone; update this test")
	}
	for k := range example {
		if _, ok := logLine[k]; !ok {
			t.Errorf("README's transaction line shows %q; moat's has no such field: %v", k, logLine)
		}
	}
	for k := range logLine {
		// README's example leaves out only the timestamp.
		if _, ok := example[k]; !ok && k != "time" {
			t.Errorf("moat's transaction line has %q, README's example does not", k)
		}
	}
	if r := fmt.Sprint(logLine["upstream_reply"]); !strings.HasPrefix(r, "250 2.0.0 Ok: queued as ") {
		t.Errorf("upstream_reply %q", r)
	}
	trap.check(t)
}

// ---------------------------------------------------------------------
// (c) Every moat command line in README.md.

type cmdCheck int

const (
	// runs: the command runs for real, offline, on files the test makes
	// under README's names; it must exit 0 (or as README shows) and give
	// the output checked in readmeRunChecks.
	runs cmdCheck = iota
	// flagsOnly: the command cannot run here; the binary parses README's
	// flags (positional arguments dropped, --help appended) and must
	// exit 0 — unknown flags, flags missing a value and unknown
	// subcommands fail. Nothing else about the command is checked here.
	flagsOnly
)

// readmeCommands classifies every moat command README may show, by its
// subcommand. A README command whose subcommand is not here fails the
// test. Inline mentions in the prose (`moat replay --to HOST:PORT`) have
// placeholders, so they are always checked flagsOnly.
//
//	subcommand     check      why
//	serve          flagsOnly  runs until stopped; TestNewcomerServeDefaults and
//	                          TestNewcomerQuickstart run README's serve lines for real
//	config check   runs       the quickstart config, and the broken one whose error README prints
//	rules default  runs
//	rules test     runs       my-rules.yaml, a Maildir ~/Maildir/.Junk, archive.mbox and junk.mbox made here
//	rules compare  runs       two rule files; the Maildir, and day.pcap.gz (Zeek's smtp.pcap gzipped)
//	analyze        runs       --dnsbl recorded answers from the capture's own DNS packets: offline
//	dnsbl check    runs       moat.yaml here names lists served by rbldnsd on loopback
//	replay         flagsOnly  needs a live server, and --pace waits as the recording did
//	                          (minutes); TestReplayCommand replays to a real Postfix
//	capture        flagsOnly  needs a live interface and root; TestCaptureCommand runs it on lo
//	learn, explain flagsOnly  need a state store and labelled mail; TestLearnExplainEndToEnd
//	                          runs README's learn, forget and explain lines on the corpus
//	version        runs
var readmeCommands = map[string]cmdCheck{
	"serve":         flagsOnly,
	"config check":  runs,
	"rules default": runs,
	"rules test":    runs,
	"rules compare": runs,
	"analyze":       runs,
	"dnsbl check":   runs,
	"auth check":    runs,
	"state get":     flagsOnly, // needs a running moat with a store: TestStateCommand
	"state del":     flagsOnly,
	"learn":         flagsOnly, // needs a state store and a corpus: TestLearnExplainEndToEnd runs README's lines
	"explain":       flagsOnly,
	"replay":        flagsOnly,
	"capture":       flagsOnly,
	"version":       runs,
}

// readmeRunChecks check the output of the commands that run.
var readmeRunChecks = map[string]func(stdout, stderr string) error{
	"rules default": func(o, _ string) error { return wantIn(o, "thresholds:", "rules:") },
	"rules test": func(o, _ string) error {
		if strings.HasPrefix(o, "QUALITY") { // --labels: the quality summary
			return wantIn(o, "spam judged                2\n", "ham judged                 2\n", "tag threshold", "1-ROCA%")
		}
		return wantIn(o, "archive.mbox#2", "Maildir/.Junk/new/1")
	},
	"rules compare": func(o, e string) error { return wantIn(o+e, "CHEAP_WATCHES", "change action") },
	"analyze":       func(o, e string) error { return wantIn(o+e, `"verdict":`, `"helo":"GP"`, "moat analyze summary") },
	"dnsbl check":   func(o, _ string) error { return wantIn(o, "LISTED") },
	"auth check": func(o, _ string) error {
		return wantIn(o, "SPF (MAIL FROM)", "DKIM", "DMARC", "Authentication-Results: mx.example.org;", "moat would: ")
	},
	"version": func(o, _ string) error { return wantIn(o, "moat ") },
}

func wantIn(s string, subs ...string) error {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return fmt.Errorf("output lacks %q", sub)
		}
	}
	return nil
}

type readmeCmd struct {
	line      int
	text      string
	args      []string // after "moat"
	inline    bool
	output    string // what README shows it printing ($ lines)
	hasOutput bool
}

func (c readmeCmd) key() string {
	if len(c.args) >= 2 && slices.Contains([]string{"config", "rules", "dnsbl", "auth", "state"}, c.args[0]) {
		return c.args[0] + " " + c.args[1]
	}
	if len(c.args) == 0 {
		return ""
	}
	return c.args[0]
}

// moatArgs returns the arguments after moat (or go run ./cmd/moat).
func moatArgs(words []string) ([]string, bool) {
	switch {
	case len(words) >= 3 && words[0] == "go" && words[1] == "run" && words[2] == "./cmd/moat":
		return words[3:], true
	case len(words) >= 1 && words[0] == "moat":
		return words[1:], true
	}
	return nil, false
}

func readmeCommandLines(md string) []readmeCmd {
	blocks, prose := fencedBlocks(md)
	var cmds []readmeCmd
	for _, b := range blocks {
		var last *readmeCmd
		for i, l := range logicalLines(b.text) {
			shown := strings.HasPrefix(l, "$ ")
			if !shown && last != nil && last.hasOutput {
				last.output += l + "\n"
				continue
			}
			args, ok := moatArgs(shellWords(strings.TrimPrefix(l, "$ ")))
			if !ok {
				last = nil
				continue
			}
			cmds = append(cmds, readmeCmd{line: b.line + 1 + i, text: l, args: args, hasOutput: shown})
			last = &cmds[len(cmds)-1]
		}
	}
	for _, m := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatchIndex(prose, -1) {
		text := strings.Join(strings.Fields(prose[m[2]:m[3]]), " ")
		if args, ok := moatArgs(shellWords(text)); ok && len(args) > 0 {
			cmds = append(cmds, readmeCmd{line: strings.Count(prose[:m[0]], "\n") + 1, text: text, args: args, inline: true})
		}
	}
	return cmds
}

// helpFlags returns the flags a subcommand's --help names, and whether
// each takes a value: from flag.PrintDefaults lines ("  -to HOST:PORT")
// and the usage lines ("[--format table|json]", "--iface NAME").
func helpFlags(t *testing.T, key string) map[string]bool {
	t.Helper()
	out, err := exec.Command(moatBin, append(strings.Fields(key), "--help")...).CombinedOutput()
	if err != nil {
		t.Fatalf("moat %s --help: %v\n%s", key, err, out)
	}
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z][a-z0-9-]*)(?: (\S+))?$`).FindAllStringSubmatch(string(out), -1) {
		flags[m[1]] = flags[m[1]] || m[2] != ""
	}
	for _, m := range regexp.MustCompile(`--([a-z][a-z0-9-]*)(?: ([A-Z][A-Z:|]*|[a-z]+\|[a-z|]+))?[\]\s.,)]`).FindAllStringSubmatch(string(out), -1) {
		flags[m[1]] = flags[m[1]] || m[2] != ""
	}
	return flags
}

// flagsWithHelp keeps args' flags (and their values), drops positional
// arguments, and appends --help.
func flagsWithHelp(c readmeCmd, words int, flags map[string]bool) ([]string, error) {
	out := slices.Clone(c.args[:words])
	rest := c.args[words:]
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		if !strings.HasPrefix(a, "-") || a == "-" {
			continue // positional
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		takes, known := flags[name]
		if !known {
			return nil, fmt.Errorf("flag %s is not in moat %s --help", a, c.key())
		}
		out = append(out, a)
		if takes && !hasValue {
			if i+1 >= len(rest) {
				return nil, fmt.Errorf("flag %s needs a value", a)
			}
			i++
			out = append(out, rest[i])
		}
	}
	return append(out, "--help"), nil
}

// readmeFiles makes, in dir, the files README's commands name.
func readmeFiles(t *testing.T, dir string, dnsblAddr string) {
	t.Helper()
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
	// moat.yaml: the quickstart's addresses, and DNS lists on rbldnsd
	// (so dnsbl check has a list to ask, on loopback).
	write("moat.yaml", fmt.Sprintf("listen: [\"127.0.0.1:2525\"]\nhostname: mx.example.org\nupstream:\n  address: \"127.0.0.1:25\"\n"+
		"dnsbl:\n  resolver: %q\n  timeout: 2s\n  lists:\n    - {name: zen, profile: spamhaus-zen, zone: zen.test, health_check: false}\n", dnsblAddr))
	def, err := exec.Command(moatBin, "rules", "default").Output()
	if err != nil {
		t.Fatal(err)
	}
	newer := string(def) + "  - name: CHEAP_WATCHES\n    stage: data\n    when: {subject: {matches: '(?i)^(cheap watches|smtp)$'}}\n    score: 20\n"
	for _, n := range []string{"my-rules.yaml", "rules.yaml"} {
		write(n, string(def))
	}
	for _, n := range []string{"my-rules-new.yaml", "rules-new.yaml"} {
		write(n, newer)
	}
	write("home/Maildir/.Junk/new/1", msg("j1", "cheap watches"))
	write("message.eml", msg("a1", "why was this refused?"))
	write("home/Maildir/.Junk/cur/2:2,S", msg("j2", "minutes"))
	os.MkdirAll(filepath.Join(dir, "home/Maildir/.Junk/tmp"), 0o755)
	write("archive.mbox", "From ana@client.test Mon Jan  5 10:00:00 2026\n"+msg("m1", "hello")+"\n"+
		"From ana@client.test Mon Jan  5 10:01:00 2026\n"+msg("m2", "cheap watches")+"\n")
	write("junk.mbox", "From spam@client.test Mon Jan  5 10:00:00 2026\n"+msg("k1", "cheap watches")+"\n"+
		"From spam@client.test Mon Jan  5 10:01:00 2026\n"+msg("k2", "smtp")+"\n")
	pcap, err := os.ReadFile(sharedSMTPCapture)
	if err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(pcap)
	zw.Close()
	write("day.pcap.gz", gz.String())
}

// TestREADMECommands runs or parses every moat command line README.md
// shows (see readmeCommands for which and why).
func TestREADMECommands(t *testing.T) {
	readme := readREADME(t)
	cmds := readmeCommandLines(readme)
	if len(cmds) < 10 {
		t.Fatalf("found only %d moat commands in README.md: is the extraction broken?", len(cmds))
	}
	zones := rbldnstest.Start(t, map[string]rbldnstest.Zone{
		"zen.test": {Entries: []rbldnstest.Entry{{Key: "192.0.2.7", A: "127.0.0.2"}}},
	})
	dir := t.TempDir()
	readmeFiles(t, dir, zones.Addr)
	// The README's broken config: its error line must be what moat says.
	bad := filepath.Join(dir, "bad")
	os.Mkdir(bad, 0o755)
	os.WriteFile(filepath.Join(bad, "moat.yaml"), []byte("listen: [\"127.0.0.1:2525\"]\nupstream:\n  adress: \"127.0.0.1:25\"\n"), 0o644)
	trap := newResolverTrap(t)

	help := map[string]map[string]bool{}
	ran := map[string]bool{}
	for _, c := range cmds {
		name := fmt.Sprintf("line%d_%s", c.line, strings.ReplaceAll(c.key(), " ", "_"))
		t.Run(name, func(t *testing.T) {
			t.Logf("README.md:%d: %s", c.line, c.text)
			how, ok := readmeCommands[c.key()]
			if !ok {
				t.Fatalf("README.md:%d: `%s`: moat %q is not in readmeCommands; classify it (run it, or say why it cannot run)", c.line, c.text, c.key())
			}
			if help[c.key()] == nil {
				help[c.key()] = helpFlags(t, c.key())
			}
			// Every command, run or not: the binary parses its flags.
			args, err := flagsWithHelp(c, len(strings.Fields(c.key())), help[c.key()])
			if err != nil {
				t.Fatalf("README.md:%d: `%s`: %v", c.line, c.text, err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if out, err := exec.CommandContext(ctx, moatBin, args...).CombinedOutput(); err != nil || !strings.Contains(string(out), "Usage:") {
				t.Fatalf("README.md:%d: moat %s: %v\n%s", c.line, strings.Join(args, " "), err, out)
			}
			if how != runs || c.inline {
				return
			}
			// Run it, on the files made under README's names.
			cmd := trap.command(moatBin, expandHome(c.args, filepath.Join(dir, "home"))...)
			cmd.Dir = dir
			if c.hasOutput {
				cmd.Dir = bad
			}
			var o, e bytes.Buffer
			cmd.Stdout, cmd.Stderr = &o, &e
			cmd.WaitDelay = time.Second
			done := make(chan error, 1)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			go func() { done <- cmd.Wait() }()
			select {
			case err = <-done:
			case <-time.After(60 * time.Second):
				cmd.Process.Kill()
				<-done
				t.Fatalf("moat %q did not finish", c.args)
			}
			ran[c.key()] = true
			if c.hasOutput {
				// README shows what it prints; for config check, an error
				// with exit status 2.
				code := cmd.ProcessState.ExitCode()
				if got := o.String() + e.String(); got != c.output || code != exitUsage {
					t.Errorf("moat %s: exit %d, output\n%s\nREADME shows (exit 2)\n%s", strings.Join(c.args, " "), code, got, c.output)
				}
				return
			}
			if err != nil {
				t.Fatalf("moat %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(c.args, " "), err, o.String(), e.String())
			}
			if check := readmeRunChecks[c.key()]; check != nil {
				if err := check(o.String(), e.String()); err != nil {
					t.Errorf("moat %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(c.args, " "), err, o.String(), e.String())
				}
			}
		})
	}
	// README's code blocks must show each runnable command at least once
	// where the test can run it (so `runs` is not a promise on paper).
	for _, k := range []string{"config check", "rules test", "rules compare", "analyze", "dnsbl check"} {
		if !ran[k] {
			t.Errorf("no README code block ran moat %s", k)
		}
	}
	trap.check(t)
}

func expandHome(args []string, home string) []string {
	out := slices.Clone(args)
	for i, a := range out {
		if a == "~" || strings.HasPrefix(a, "~/") {
			out[i] = home + a[1:]
		}
	}
	return out
}

// ---------------------------------------------------------------------
// (d) Setup's `make test`.

// TestREADMESetupMakeTest holds README's Setup paragraph to the Makefile
// and scripts/install-test-deps.sh: make test installs the packages
// README names (the script lists each) and then runs what README says.
// It does not run make test (that is this suite).
func TestREADMESetupMakeTest(t *testing.T) {
	readme := readREADME(t)
	if !regexp.MustCompile(`(?m)^make test +# `).MatchString(readme) {
		t.Fatal("README's Setup no longer shows `make test`; update this test")
	}
	m := regexp.MustCompile(`Debian packages the integration tests drive\s+\(([^)]*)\)`).FindStringSubmatch(readme)
	if m == nil {
		t.Fatal("README's Setup no longer lists the test packages; update this test")
	}
	script, err := os.ReadFile("../../scripts/install-test-deps.sh")
	if err != nil {
		t.Fatal(err)
	}
	listed := regexp.MustCompile(`(?s)\nTEST_PACKAGES="([^"]*)"`).FindSubmatch(script)
	if listed == nil {
		t.Fatal("no TEST_PACKAGES in scripts/install-test-deps.sh")
	}
	pkgs := map[string]bool{}
	for _, e := range strings.Fields(string(listed[1])) {
		pkgs[strings.SplitN(e, ":", 2)[0]] = true
	}
	for _, p := range strings.Split(m[1], ",") {
		if p = strings.TrimSpace(p); !pkgs[p] {
			t.Errorf("README says make test installs %q; scripts/install-test-deps.sh does not list it", p)
		}
	}
	cmd := exec.Command("make", "-n", "test")
	cmd.Dir = "../.."
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make -n test: %v\n%s", err, out)
	}
	// README: "then runs gofmt, go vet, a CGO_ENABLED=0 build and go test -race ./..."
	for _, want := range []string{"scripts/install-test-deps.sh", "gofmt", "go vet ./...", "CGO_ENABLED=0 go build ./...", "go test -race", "./..."} {
		if !strings.Contains(string(out), want) {
			t.Errorf("make test does not run %q:\n%s", want, out)
		}
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		t.Log(sc.Text())
	}
}
