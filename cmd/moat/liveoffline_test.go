package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"moat/inspect/smtp"
	"moat/internal/postfixtest"
	"moat/internal/sessiongen"
)

// Live equals offline (issue 13): the transactions moat judges live are
// judged the same by `moat analyze` reading a capture of that very
// traffic. Seeded sessions from internal/sessiongen run through a moat
// binary in front of a real Postfix while dumpcap records the client side
// on loopback; then moat analyze, with the same configuration and the DNS
// answers recorded in the capture (there are none: every lookup fails, as
// it did live against a closed resolver port; loopback clients' reverse
// names are never asked), reads the capture.
//
// The comparison, session by session (each connects from an address of
// its own: the live line's client_ip and client_port are the record's
// id.orig_h and id.orig_p):
//
//   - Live, moat logs one "transaction" line per transaction attempt: per
//     MAIL the sequencer took as the start of one (Step.Began: a session
//     past an accepted HELO/EHLO with no transaction open, RFC 5321
//     §4.1.4), when it ends (Step.Ended: the MAIL refused, the message's
//     final reply, RSET, HELO, QUIT, a refused chunk after an accepted
//     one, the session's end). The test follows that state from what the
//     client sent and the replies it got; a 421 ends the session there.
//   - Offline, records follow Zeek's smtp.log model (capture/conversation.go):
//     a MAIL ends the record in progress, if it has client activity, and
//     starts the next; RSET, the end of a DATA message and a refused or
//     LAST BDAT chunk end one; MAIL, RCPT, a DATA that got 354 (or no
//     reply) and BDAT are activity; a session without activity still gets
//     one record. The test walks the same exchange through these rules:
//     the number of records must be what the capture gives.
//   - A transaction's record is the last one with activity while it was
//     open: the one its MAIL started, or a later one when a nested MAIL
//     (refused with 503; the transaction goes on) started a new record, as
//     Zeek does. That is the record the conversation gives the
//     transaction's end to, so it carries the transaction's judgement.
//   - A live line and its record must agree on action (the record's
//     verdict), would_be (the record leaves it out when it equals the
//     verdict), score, rules (in order) and stage. Records of no
//     transaction (RCPT without MAIL, sessions without one) and the earlier
//     records of a transaction continued by a nested MAIL have no live line
//     of their own and are only counted.
//
// Every difference fails the test with the seed, the session's script
// and transcript, the live line and the record. MOAT_LIVEOFFLINE_SEED
// replays a seed.
func TestLiveEqualsOffline(t *testing.T) {
	if _, err := exec.LookPath("dumpcap"); err != nil {
		t.Fatalf("dumpcap is missing (Debian package wireshark-common; scripts/install-test-deps.sh installs it): %v", err)
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("MOAT_LIVEOFFLINE_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("MOAT_LIVEOFFLINE_SEED: %v", err)
		}
	}
	t.Logf("seed %d (replay with MOAT_LIVEOFFLINE_SEED=%d)", seed, seed)
	pf := postfixtest.Start(t, postfixtest.Options{ExtraMainCF: loPostfixRefusals})
	rulesFile := loRulesFile(t)
	for _, mode := range []string{"enforce", "monitor"} {
		t.Run(mode, func(t *testing.T) {
			st := runLiveOffline(t, pf.Addr, rulesFile, mode, seed)
			t.Logf("%s: %d sessions, %d transactions compared (%d refused by moat, %d by the upstream, %d delivered), %d records without a transaction, %d records of a transaction continued in the next record, %d differences (seed %d); exercised: %v",
				mode, st.sessions, st.compared, st.refusedMoat, st.refusedUpstream, st.delivered, st.noTx, st.continued, st.differences, seed, st.covered)
		})
	}
}

// The generator's knobs, matched by moat's limits.
const (
	loSessions  = 150   // per mode
	loWorkers   = 6     // sessions at once
	loSizeLimit = 20000 // limits.max_message_size
	loMaxRcpts  = 100   // limits.max_recipients (RFC 5321's minimum)
	loMaxErrors = 4     // limits.max_errors
	// loGreetingDelay is greeting.delay: long enough that an early
	// talker's EHLO, sent right after the connect, is there first.
	loGreetingDelay = 200 * time.Millisecond
)

// loClientAddr is the loopback address session n connects from: one
// address per session, so that sessions are told apart by it in moat's
// log and in the capture even when a client port comes round again.
func loClientAddr(n int) netip.Addr {
	return netip.AddrFrom4([4]byte{127, 0, byte(1 + n/200), byte(1 + n%200)})
}

// loRefuse are the envelopes refused somewhere: pf-* by Postfix (below),
// moat-* by the rules of loRules.
var loRefuse = sessiongen.Refusals{
	MailReject:       []string{"pf-mail-reject@client.test", "moat-mail-reject@client.test"},
	MailDefer:        []string{"pf-mail-defer@client.test", "moat-mail-defer@client.test"},
	RcptReject:       []string{"pf-rcpt-reject@example.net", "moat-rcpt-reject@example.net"},
	RcptDefer:        []string{"pf-rcpt-defer@example.net", "moat-rcpt-defer@example.net"},
	DataReject:       []string{"pf-data-reject@client.test"},
	DataDefer:        []string{"pf-data-defer@client.test"},
	EODDefer:         []string{"pf-eod-defer@client.test"},
	EODRejectSubject: "pf-eod-reject",
}

// loPostfixRefusals make Postfix refuse loRefuse's pf-* envelopes at
// MAIL (smtpd_delay_reject = no), RCPT, DATA and the end of data.
var loPostfixRefusals = []string{
	"smtpd_delay_reject = no",
	"smtpd_sender_restrictions = check_sender_access inline:{pf-mail-reject@client.test=REJECT, pf-mail-defer@client.test=DEFER}, permit",
	"smtpd_recipient_restrictions = check_recipient_access inline:{pf-rcpt-reject@example.net=REJECT, pf-rcpt-defer@example.net=DEFER}, permit_mynetworks, reject_unauth_destination",
	"smtpd_data_restrictions = check_sender_access inline:{pf-data-reject@client.test=REJECT, pf-data-defer@client.test=DEFER}, permit",
	"smtpd_end_of_data_restrictions = check_sender_access inline:{pf-eod-defer@client.test=DEFER}, permit",
	"header_checks = regexp:{{/^Subject: pf-eod-reject/ REJECT refused at end of data}}",
}

// loRules are added to the built-in rules: rules that fire at every
// stage, with scores that add up to tag and reject, rule actions, a meta
// rule, a shadow rule, and size thresholds that make the data stage's
// idea of the message size visible in the score.
const loRules = `
  # --- TestLiveEqualsOffline ---------------------------------------------
  - name: LO_HELO_SEVEN
    stage: helo
    when: {helo: {matches: '^client[0-9]*7\.'}}
    score: 3
  - name: LO_HELO_REFUSED
    stage: helo
    when: {helo: {matches: '^client[0-9]*19\.'}}
    action: reject
  - name: LO_HELO_NOT_ESMTP
    stage: helo
    when: {esmtp: false}
    score: 1
  - name: LO_MAIL_S3
    stage: mail
    when: {mail_from: {equals: s3@client.test}}
    score: 4
  - name: LO_MAIL_NULL
    stage: mail
    when: {mail_from_null: true}
    score: 2.5
  - name: LO_MAIL_SIZE
    stage: mail
    when: {mail_size: {gt: 2000}}
    score: 0.5
  - name: LO_MAIL_REJECT
    stage: mail
    when: {mail_from: {equals: moat-mail-reject@client.test}}
    action: reject
    reply: "550 5.7.1 moat refuses this sender"
  - name: LO_MAIL_DEFER
    stage: mail
    when: {mail_from: {equals: moat-mail-defer@client.test}}
    action: tempfail
  - name: LO_RCPT_U5
    stage: rcpt
    when: {rcpt: {equals: u5@example.net}}
    score: 1.5
  - name: LO_RCPT_COUNT
    stage: rcpt
    when: {rcpt_count: {ge: 2}}
    score: 0.5
  - name: LO_RCPT_SHADOW
    stage: rcpt
    when: {rcpt: {equals: u1@example.net}}
    action: reject
    shadow: true
  - name: LO_RCPT_REJECT
    stage: rcpt
    when: {rcpt: {equals: moat-rcpt-reject@example.net}}
    action: reject
  - name: LO_RCPT_DEFER
    stage: rcpt
    when: {rcpt: {equals: moat-rcpt-defer@example.net}}
    action: tempfail
  - name: LO_DATA_FOX
    stage: data
    when: {body: {contains: "brown fox"}}
    score: 2
  - name: LO_DATA_UTF8
    stage: data
    when: {content_type: {starts_with: "text/plain"}}
    score: 1
  - name: LO_DATA_META
    stage: data
    when: {all: [{rule: LO_MAIL_S3}, {rule: LO_DATA_FOX}]}
    score: 3
  - name: LO_DATA_REJECT
    stage: data
    when: {subject: {matches: '^transaction 2 of session [0-9]*[05]$'}}
    action: reject
  - name: LO_DATA_DEFER
    stage: data
    when: {subject: {matches: '^transaction 1 of session [0-9]*3$'}}
    action: tempfail
`

// loRulesFile writes the built-in rules (moat rules default) with loRules
// added.
func loRulesFile(t *testing.T) string {
	t.Helper()
	code, def, stderr := runMoat(t, "rules", "default")
	if code != 0 {
		t.Fatalf("moat rules default: exit %d: %s", code, stderr)
	}
	var b strings.Builder
	b.WriteString(def)
	b.WriteString(loRules)
	// Size thresholds every 400 bytes up to the largest normal message.
	for n := 400; n <= loSizeLimit/4; n += 400 {
		fmt.Fprintf(&b, "  - name: LO_DATA_SIZE_%d\n    stage: data\n    when: {size: {gt: %d}}\n    score: 0.25\n", n, n)
	}
	path := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// loStats are the counts of one mode's run.
type loStats struct {
	sessions, compared, noTx, differences   int
	continued                               int // records of a transaction that went on in the next one
	refusedMoat, refusedUpstream, delivered int
	covered                                 map[string]int
}

// loCoverage counts what the sessions did that the limits and policies
// are about, from what was sent and answered.
func loCoverage(ss []sessiongen.Session, trs []sessiongen.Transcript) map[string]int {
	c := map[string]int{}
	for n, s := range ss {
		if s.EarlyTalk {
			c["early talker"]++
		}
		for i, st := range s.Steps {
			res := trs[n].Steps[i]
			if len(res.Sent) == 0 {
				continue
			}
			if res.Pipelined {
				c["pipelined"]++
			}
			if st.Kind == sessiongen.KindBDAT && !res.AsData {
				c["BDAT"]++
			}
			if st.Msg != nil && st.Msg.BareLF {
				c["bare LF message"]++
			}
			for _, r := range res.Replies {
				switch {
				case r.Code == 452:
					c["over max_recipients (452)"]++
				case r.Code == 552:
					c["over max_message_size (552)"]++
				case r.Code == 421 && strings.Contains(r.String(), "Too many errors"):
					c["over max_errors (421)"]++
				}
			}
		}
	}
	return c
}

// loLive is a live "transaction" log line.
type loLive struct {
	Msg        string   `json:"msg"`
	Session    string   `json:"session"`
	ClientIP   string   `json:"client_ip"`
	ClientPort uint16   `json:"client_port"`
	MailFrom   string   `json:"mail_from"`
	Outcome    string   `json:"verdict"`
	Stage      string   `json:"stage"`
	Action     string   `json:"action"`
	WouldBe    string   `json:"would_be"`
	Score      float64  `json:"score"`
	Rules      []string `json:"rules"`
	raw        string
}

// loRecord is an offline record.
type loRecord struct {
	UID      string   `json:"uid"`
	OrigH    string   `json:"id.orig_h"`
	OrigP    uint16   `json:"id.orig_p"`
	MailFrom string   `json:"mailfrom"`
	Verdict  string   `json:"verdict"`
	WouldBe  string   `json:"would_be"`
	Score    float64  `json:"score"`
	Rules    []string `json:"rules"`
	Stage    string   `json:"stage"`
	Problems []string `json:"problems"`
	raw      string
}

func runLiveOffline(t *testing.T, upstream, rulesFile, mode string, seed uint64) loStats {
	var st loStats
	cfgPath := configFor(t, upstream, fmt.Sprintf(`greeting:
  delay: %s
  early_talker: log
limits:
  max_message_size: %d
  max_recipients: %d
  max_errors: %d
rules:
  file: %q
  mode: %s
`, loGreetingDelay, loSizeLimit, loMaxRcpts, loMaxErrors, rulesFile, mode))
	m := startMoat(t, "--config", cfgPath)
	_, port := hostPort(t, m.smtp)
	dir := t.TempDir()
	dc := startDumpcap(t, dir, port)
	dc.sync(t) // capturing for sure before the first session

	// The sessions, loWorkers at a time.
	opts := sessiongen.Options{SizeLimit: loSizeLimit, RecipientLimit: loMaxRcpts,
		EarlyTalker: true, BareLF: true, Refuse: loRefuse}
	sessions := make([]sessiongen.Session, loSessions)
	trs := make([]sessiongen.Transcript, loSessions)
	runErrs := make([]error, loSessions)
	for n := range sessions {
		sessions[n] = sessiongen.New(seed, n, opts)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range loWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range jobs {
				trs[n], runErrs[n] = sessiongen.RunFrom(ctx, loClientAddr(n), m.smtp, sessions[n], nil)
			}
		}()
	}
	for n := range sessions {
		jobs <- n
	}
	close(jobs)
	wg.Wait()
	for n, err := range runErrs {
		if err != nil {
			t.Errorf("seed %d, session %d: %v\n%s\ntranscript:\n%s", seed, n, err, sessions[n].String(), trs[n].String())
		}
	}
	st.sessions = loSessions
	st.covered = loCoverage(sessions, trs)
	// What the sessions are for: each of these is all but certain in a
	// run (the generator's odds over some 200 transactions).
	for _, what := range []string{"early talker", "pipelined", "BDAT", "bare LF message", "over max_recipients (452)", "over max_message_size (552)"} {
		if st.covered[what] == 0 {
			t.Errorf("mode %s: no %s in %d sessions (seed %d): the test did not exercise it", mode, what, loSessions, seed)
		}
	}

	// Every session over at moat (so its last packets were sent), then
	// every packet on the file, then moat's log complete.
	waitSessionsEnded(t, m, loSessions)
	dc.sync(t)
	dc.stop(t)
	m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("moat did not stop on SIGTERM")
	}

	// Live: the transaction lines, by client address.
	live := map[string][]loLive{}
	for _, line := range strings.Split(m.log.String(), "\n") {
		if !strings.Contains(line, `"msg":"transaction"`) {
			continue
		}
		var l loLive
		if err := json.Unmarshal([]byte(line), &l); err != nil || l.Msg != "transaction" {
			t.Fatalf("live log line %q: %v", line, err)
		}
		l.raw = line
		k := net.JoinHostPort(l.ClientIP, strconv.Itoa(int(l.ClientPort)))
		live[k] = append(live[k], l)
	}

	// Offline: moat analyze on the capture, with the same configuration.
	out := filepath.Join(dir, "records.jsonl")
	cmd := exec.Command(moatBin, "analyze", "--config", cfgPath, "--dnsbl", "recorded", "--ports", port,
		"--quiet", "--out", out, dc.file)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("moat analyze: %v\n%s", err, b)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if keep := os.Getenv("MOAT_LIVEOFFLINE_KEEP"); keep != "" {
		// For a closer look: the capture, the records, moat's log.
		kd := filepath.Join(keep, mode)
		pcap, _ := os.ReadFile(dc.file)
		if err := errors.Join(os.MkdirAll(kd, 0o755), os.WriteFile(filepath.Join(kd, "live.pcapng"), pcap, 0o644),
			os.WriteFile(filepath.Join(kd, "records.jsonl"), data, 0o644),
			os.WriteFile(filepath.Join(kd, "moat.log"), []byte(m.log.String()), 0o644)); err != nil {
			t.Fatal(err)
		}
		t.Logf("capture, records and moat's log kept in %s", kd)
	}
	offline := map[string][]loRecord{}
	uids := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if line == "" {
			continue
		}
		var r loRecord
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("offline record %q: %v", line, err)
		}
		r.raw = line
		k := net.JoinHostPort(r.OrigH, strconv.Itoa(int(r.OrigP)))
		if u, ok := uids[k]; ok && u != r.UID {
			t.Fatalf("client %s is two sessions in the capture (%s, %s)", k, u, r.UID)
		}
		uids[k] = r.UID
		offline[k] = append(offline[k], r)
	}

	// Compare, session by session.
	var reports []string
	seen := map[string]int{}
	for n, s := range sessions {
		tr := trs[n]
		ap, err := netip.ParseAddrPort(tr.Local)
		if err != nil {
			t.Errorf("seed %d, session %d: no client address: %v", seed, n, err)
			continue
		}
		p := ap.String()
		if k, dup := seen[p]; dup {
			t.Fatalf("sessions %d and %d had the same client address %s", k, n, p)
		}
		seen[p] = n
		want := loExpect(s, tr)
		lives, recs := live[p], offline[p]
		delete(live, p)
		delete(offline, p)
		var diffs []string
		for _, r := range recs {
			for _, pr := range r.Problems {
				if strings.HasPrefix(pr, "gap_") || pr == "mid_stream" || pr == "client_only" || pr == "server_only" {
					diffs = append(diffs, fmt.Sprintf("the capture of the session is incomplete (%s): %s", pr, r.raw))
				}
			}
		}
		if len(recs) != len(want.records) {
			diffs = append(diffs, fmt.Sprintf("%d offline records, but the Zeek model gives %d for what the client sent", len(recs), len(want.records)))
		}
		if len(lives) != len(want.mails) {
			diffs = append(diffs, fmt.Sprintf("%d live transaction lines, but the client sent %d MAILs moat took as a transaction's start", len(lives), len(want.mails)))
		}
		if len(diffs) == 0 {
			for i, tx := range want.records {
				switch {
				case tx < 0:
					st.noTx++
					continue
				case want.last[tx] != i:
					st.continued++
					continue
				}
				l, r := lives[tx], recs[i]
				st.compared++
				switch {
				case l.Outcome == "delivered":
					st.delivered++
				case strings.HasPrefix(l.Outcome, "upstream_"):
					st.refusedUpstream++
				case l.Outcome != "aborted":
					st.refusedMoat++
				}
				if d := loCompare(l, r, want.mails[tx]); d != "" {
					diffs = append(diffs, fmt.Sprintf("transaction %d (%s), record %d: %s\n      live:    %s\n      offline: %s", tx+1, want.mails[tx], i+1, d, l.raw, r.raw))
				}
			}
		}
		if len(diffs) > 0 {
			st.differences += len(diffs)
			var b strings.Builder
			fmt.Fprintf(&b, "mode %s, seed %d, session %d (client %s", mode, seed, n, p)
			if len(lives) > 0 {
				fmt.Fprintf(&b, ", moat session %s", lives[0].Session)
			}
			if len(recs) > 0 {
				fmt.Fprintf(&b, ", uid %s", recs[0].UID)
			}
			b.WriteString("):\n")
			for _, d := range diffs {
				b.WriteString("    " + d + "\n")
			}
			if len(reports) < 8 {
				fmt.Fprintf(&b, "  live lines:\n")
				for _, l := range lives {
					b.WriteString("    " + l.raw + "\n")
				}
				fmt.Fprintf(&b, "  offline records:\n")
				for _, r := range recs {
					b.WriteString("    " + r.raw + "\n")
				}
				fmt.Fprintf(&b, "  %s  transcript:\n%s", s.String(), tr.String())
			}
			reports = append(reports, b.String())
		}
	}
	for p, ls := range live {
		t.Errorf("mode %s, seed %d: %d live transaction lines of client %s, which no session had: %s", mode, seed, len(ls), p, ls[0].raw)
	}
	for p, rs := range offline {
		t.Errorf("mode %s, seed %d: %d offline records of client %s, which no session had: %s", mode, seed, len(rs), p, rs[0].raw)
	}
	for _, r := range reports {
		t.Error(r)
	}
	if len(reports) > 0 {
		t.Errorf("mode %s: %d of %d sessions differ live and offline (seed %d)", mode, len(reports), loSessions, seed)
	}
	if st.compared < loSessions {
		t.Errorf("mode %s: only %d transactions compared in %d sessions (seed %d)", mode, st.compared, loSessions, seed)
	}
	return st
}

// loCompare compares a live line with its record; "" when they agree.
func loCompare(l loLive, r loRecord, mail string) string {
	var d []string
	wouldBe := r.WouldBe
	if wouldBe == "" {
		wouldBe = r.Verdict
	}
	if l.Action != r.Verdict {
		d = append(d, fmt.Sprintf("action %q live, %q offline", l.Action, r.Verdict))
	}
	if l.WouldBe != wouldBe {
		d = append(d, fmt.Sprintf("would_be %q live, %q offline", l.WouldBe, wouldBe))
	}
	if l.Score != r.Score {
		d = append(d, fmt.Sprintf("score %v live, %v offline", l.Score, r.Score))
	}
	if !slices.Equal(l.Rules, r.Rules) {
		d = append(d, fmt.Sprintf("rules %q live, %q offline", l.Rules, r.Rules))
	}
	if l.Stage != r.Stage {
		d = append(d, fmt.Sprintf("stage %q live, %q offline", l.Stage, r.Stage))
	}
	// The mapping itself: the live line is of this MAIL's sender.
	if arg, ok := strings.CutPrefix(mail, "MAIL "); ok {
		if from, _, err := smtp.ParseMailArg(arg); err == nil && from.String() != l.MailFrom {
			d = append(d, fmt.Sprintf("the live line's sender %q is not the MAIL's %q (the test's mapping is off)", l.MailFrom, from.String()))
		}
	}
	return strings.Join(d, "; ")
}

// loWant is what the client's side of a session predicts: the offline
// records in order, each with the index of the transaction whose
// commands it holds (-1: none), the MAIL lines that started a
// transaction, and for each transaction its last record.
type loWant struct {
	records []int
	mails   []string
	last    []int
}

// loExpect walks what the client sent and the replies it got through
// two models (see TestLiveEqualsOffline): where capture/conversation.go
// starts and ends records, and where the sequencer starts and ends
// transactions. The second follows the session's state as the client
// sees it, because a 503 to MAIL may be the upstream's, relayed
// (Postfix's "nested MAIL" after its end-of-data restrictions refused a
// message), and is then a transaction moat logs.
func loExpect(s sessiongen.Session, tr sessiongen.Transcript) loWant {
	var w loWant
	// The record model.
	active := false
	recTx := -1 // the transaction of the record in progress
	activity := func(tx int) {
		active = true
		if tx >= 0 {
			recTx = tx
		}
	}
	end := func() {
		if active {
			if recTx >= 0 {
				w.last[recTx] = len(w.records)
			}
			w.records = append(w.records, recTx)
			active, recTx = false, -1
		}
	}
	// The session as the sequencer sees it (RFC 5321 §4.1.4): HELO
	// accepted, the transaction open (its MAIL accepted) with so many
	// accepted recipients, a BDAT transfer under way; closed after a 421.
	greeted := tr.Greeting.Code == 220
	closed := tr.Greeting.Code == 421
	open, rcpts, bdat := -1, 0, false
	for i, step := range s.Steps {
		if i >= len(tr.Steps) {
			break
		}
		res := tr.Steps[i]
		if res.Skipped != "" {
			continue
		}
		for j, sent := range res.Sent {
			var r *sessiongen.Reply
			if j < len(res.Replies) {
				r = &res.Replies[j]
			}
			// A 421 is the session's end, and its transaction's: moat
			// closed it and never read this command, or refused it as the
			// one too many.
			if r != nil && r.Code == 421 {
				closed = true
				open, bdat = -1, false
			}
			if strings.HasPrefix(sent, "<message ") {
				// The message of a DATA that got 354: whatever its final
				// reply, the transaction is over.
				open, bdat = -1, false
				continue
			}
			if step.Kind == sessiongen.KindBDAT && !res.AsData {
				// "BDAT n [LAST] <n octets of ID>"
				last := strings.Contains(sent, " LAST <")
				activity(open)
				if last || r != nil && r.Class() != 2 {
					end()
				}
				switch {
				case closed:
				case open >= 0 && rcpts > 0: // the chunk was taken
					bdat = true
					if last {
						open, bdat = -1, false
					}
				case bdat: // refused after an accepted chunk: over (RFC 3030 §2)
					open, bdat = -1, false
				}
				continue
			}
			cmd, err := smtp.ParseCommand([]byte(sent))
			if err != nil {
				continue
			}
			switch cmd.Verb {
			case smtp.VerbHELO, smtp.VerbEHLO:
				if !closed && cmd.Arg != "" {
					open, bdat = -1, false
					greeted = r != nil && r.Class() == 2
				}
			case smtp.VerbMAIL:
				end()
				if !closed && greeted && open < 0 && r != nil {
					k := len(w.mails)
					w.mails = append(w.mails, sent)
					w.last = append(w.last, -1)
					activity(k)
					open, rcpts = -1, 0
					if r.Class() == 2 {
						open = k
					}
				} else {
					// Refused: a nested MAIL is part of the open transaction,
					// which goes on in this new record.
					activity(open)
				}
			case smtp.VerbRCPT:
				activity(open)
				if !closed && open >= 0 && r != nil && r.Class() == 2 {
					rcpts++
				}
			case smtp.VerbDATA:
				if r == nil || r.Code == 354 {
					activity(open)
					end() // after the message
				}
			case smtp.VerbRSET:
				end()
				open, bdat = -1, false
			}
		}
	}
	end()
	if len(w.records) == 0 {
		w.records = append(w.records, -1)
	}
	return w
}

// waitSessionsEnded waits until moat counts n ended sessions.
func waitSessionsEnded(t *testing.T, m *moatProc, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var got float64
	for {
		got = 0
		resp, err := http.Get("http://" + m.http + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if l := sc.Text(); strings.HasPrefix(l, "moat_proxy_sessions_total{") {
				v, _ := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
				got += v
			}
		}
		resp.Body.Close()
		if got >= float64(n) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("moat ended %v sessions of %d within 30 s", got, n)
		}
		time.Sleep(20 * time.Millisecond) // polling the counter
	}
}

// dumpcapProc records loopback traffic to a file.
type dumpcapProc struct {
	cmd    *exec.Cmd
	file   string
	out    *lockedBuffer // its standard error
	notify chan struct{} // something new on standard error
	exited chan struct{}
	// sentinel is a UDP socket whose port the filter also captures: a
	// datagram to it that is in the file proves that every packet sent
	// before it is too.
	sentinel *net.UDPConn
	sent     int
}

// startDumpcap records TCP port port on lo, and waits until dumpcap has
// its file open, which it reports after the capture filter is in place.
func startDumpcap(t *testing.T, dir, port string) *dumpcapProc {
	t.Helper()
	return startDumpcapFilter(t, dir, "tcp port "+port)
}

// startDumpcapFilter is startDumpcap for the packets a capture filter
// (pcap-filter(7)) selects.
func startDumpcapFilter(t *testing.T, dir, what string) *dumpcapProc {
	t.Helper()
	sc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sc.Close() })
	d := &dumpcapProc{file: filepath.Join(dir, "live.pcapng"), out: &lockedBuffer{},
		notify: make(chan struct{}, 1), exited: make(chan struct{}), sentinel: sc}
	filter := fmt.Sprintf("(%s) or udp port %d", what, sc.LocalAddr().(*net.UDPAddr).Port)
	d.cmd = exec.Command("dumpcap", "-i", "lo", "-f", filter, "-B", "16", "-s", "0", "-w", d.file)
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		// dumpcap rewrites its "Packets: N" count with a CR.
		s := bufio.NewScanner(stderr)
		s.Split(func(data []byte, atEOF bool) (int, []byte, error) {
			if i := bytes.IndexAny(data, "\r\n"); i >= 0 {
				return i + 1, data[:i], nil
			}
			if atEOF && len(data) > 0 {
				return len(data), data, nil
			}
			return 0, nil, nil
		})
		for s.Scan() {
			if len(s.Bytes()) > 0 {
				d.out.Write(append(s.Bytes(), '\n'))
				select {
				case d.notify <- struct{}{}:
				default:
				}
			}
		}
		io.Copy(io.Discard, stderr)
		d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-d.exited:
			return
		default:
		}
		d.cmd.Process.Signal(os.Interrupt)
		select {
		case <-d.exited:
		case <-time.After(10 * time.Second):
			d.cmd.Process.Kill()
			<-d.exited
		}
	})
	d.wait(t, 20*time.Second, func() bool {
		return strings.Contains(d.out.String(), "\nFile: ") || strings.HasPrefix(d.out.String(), "File: ")
	})
	return d
}

// wait waits for cond, checked whenever dumpcap writes to standard error.
func (d *dumpcapProc) wait(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.After(timeout)
	for !cond() {
		select {
		case <-d.notify:
		case <-d.exited:
			if cond() {
				return
			}
			t.Fatalf("dumpcap exited (capturing on lo needs root or CAP_NET_RAW):\n%s", d.out.String())
		case <-deadline:
			t.Fatalf("dumpcap: nothing after %v:\n%s", timeout, d.out.String())
		}
	}
}

// sync returns once every packet sent before it is in the file. dumpcap
// flushes the file and then reports its packet count, at most twice a
// second, when packets came in; so a sentinel datagram is sent and the
// file read at each report until the sentinel is in it (sent again should
// a report come without it).
func (d *dumpcapProc) sync(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		d.sent++
		payload := []byte(fmt.Sprintf("moat live-offline sentinel %d %d", os.Getpid(), d.sent))
		if _, err := d.sentinel.WriteTo(payload, d.sentinel.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		retry := time.After(3 * time.Second)
	wait:
		for {
			select {
			case <-d.notify:
				if data, err := os.ReadFile(d.file); err == nil && bytes.Contains(data, payload) {
					return
				}
			case <-retry:
				break wait
			case <-d.exited:
				t.Fatalf("dumpcap exited:\n%s", d.out.String())
			}
		}
	}
	t.Fatalf("dumpcap did not write a sentinel datagram to its file within 30 s:\n%s", d.out.String())
}

var dumpcapCounts = regexp.MustCompile(`Packets received/dropped on interface .*?: (\d+)/(\d+)`)

// stop ends the capture (SIGINT: dumpcap closes the file cleanly) and
// checks that nothing was dropped.
func (d *dumpcapProc) stop(t *testing.T) {
	t.Helper()
	d.cmd.Process.Signal(os.Interrupt)
	select {
	case <-d.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("dumpcap did not stop within 30 s of SIGINT")
	}
	m := dumpcapCounts.FindStringSubmatch(d.out.String())
	if m == nil {
		t.Fatalf("dumpcap reported no packet counts:\n%s", d.out.String())
	}
	if m[2] != "0" {
		t.Fatalf("dumpcap dropped %s of %s packets: the capture is incomplete", m[2], m[1])
	}
}
