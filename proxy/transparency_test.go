package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"moat/inspect"
	"moat/inspect/smtp"
	"moat/internal/eximtest"
	"moat/internal/opensmtpdtest"
	"moat/internal/postfixtest"
	"moat/internal/sendmailtest"
	"moat/internal/sessiongen"
)

// The transparency test runs the same generated client sessions twice —
// straight to an MTA, and through moat (no rules) to an identically
// configured second instance of that MTA — and requires the client to see
// the same thing both times: the same reply class at every step, the
// upstream's own code and text wherever moat relays it (MAIL, RCPT, end
// of data), and the same delivered mailbox, byte for byte. Every way in
// which moat may differ is in documentedDifferences, with its reason;
// anything else fails the test with the seed and the session number.
//
// moat runs in-process (serveProxy with testConfig, as the other proxy
// tests do): the session-panic check of TestMain then covers every
// generated session, and a failure prints the end of moat's log.
// cmd/moat's soak test covers the built binary.
//
// MOAT_TRANSPARENCY_SEED replays a seed, MOAT_TRANSPARENCY_SESSIONS sets
// the number of sessions per upstream, MOAT_TRANSPARENCY_ONLY=N runs only
// session N and logs its transcripts.

// documentedDifferences is the one table of what moat may do differently
// from the MTA it shields, as a client sees it. The comparison names an
// entry each time it applies one; an entry that is not here cannot be
// applied (tolerances.use panics), and the test logs how often each was.
var documentedDifferences = []struct{ key, what, why string }{
	{"own-reply",
		"replies moat gives itself — the greeting, EHLO/HELO, NOOP, RSET, QUIT, STARTTLS's 220, DATA's 354, syntax and sequence errors (500, 501, 503, 554 no valid recipients, 555) — are compared by class only",
		"moat answers everything but MAIL, RCPT and the end of data itself (DESIGN.md, live path); its texts are its own"},
	{"capabilities",
		"the EHLO keywords are moat's (PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES, STARTTLS, CHUNKING, and SMTPUTF8/DSN only when the upstream has them), so the client pipelines, declares SIZE= and uses BDAT where the upstream alone would not let it",
		"moat offers what it can honour end to end (DESIGN.md, capabilities); the runner adapts like a real client, so the replies are still compared command by command"},
	{"enhanced-added",
		"a relayed reply without an enhanced status code gets the default one for its verb and code (smtp.Reply.WithDefaultEnhanced: 2.1.0 MAIL, 2.1.5 RCPT, 2.0.0 otherwise, 4.0.0/5.0.0, 5.5.x for 500-504/555) when the client said EHLO; code and text are otherwise unchanged",
		"moat offers ENHANCEDSTATUSCODES, and RFC 2034 §3 then requires a code on every reply (README: Exim's 250 OK)"},
	{"queue-id",
		"the upstream's queue id in its end-of-data reply (Postfix \"queued as ID\", Exim \"id=ID\", OpenSMTPD and Sendmail \"ID Message accepted for delivery\") is normalised in both runs",
		"two deliveries get two queue ids; not moat's doing"},
	{"strict-syntax",
		"a MAIL whose argument breaks RFC 5321's grammar (MAIL FROM:bad) gets moat's 501 where Postfix, by default (strict_rfc821_envelopes = no), accepts it and qualifies the address; every other malformed command is refused by both (own-reply)",
		"moat parses paths strictly (inspect/smtp) and passes on only what it can re-serialise exactly; the generator follows a malformed MAIL with RSET, so a lenient upstream's open transaction ends there"},
	{"size-declared",
		"a SIZE= over the limit gets moat's 552 at MAIL (RFC 1870 §6.2) where an upstream that does not check SIZE= (OpenSMTPD) answers MAIL by its other policies — it refuses the sender (any class), or accepts MAIL and refuses the message at its end: through moat the client gives the transaction up at MAIL; directly its later replies are not compared, but the message must be refused (5xx) and nothing delivered",
		"moat refuses what it will refuse anyway as early as it can"},
	{"repeated-hello",
		"a second HELO/EHLO gets moat's 250 where OpenSMTPD refuses it (503 5.5.1 Already identified); the generator sends RSET before it, so that both are without a transaction afterwards (OpenSMTPD's refused EHLO resets nothing)",
		"RFC 5321 §4.1.4 allows a repeated EHLO (it resets the session); moat answers HELO/EHLO itself"},
	{"vrfy",
		"VRFY gets moat's 252 whatever the upstream would say",
		"moat does not ask the upstream: that would let anyone harvest addresses through moat (RFC 5321 §3.5.3 allows 252)"},
	{"help",
		"HELP gets moat's 214 (Postfix does not implement HELP: 500 5.5.2)",
		"moat answers HELP itself"},
	{"starttls",
		"STARTTLS is moat's (it terminates TLS): offered whether or not the upstream offers it, so a STARTTLS step the direct run skips (not offered) is played through moat",
		"DESIGN.md: STARTTLS terminated by moat; moat talks to the upstream in plaintext unless upstream.tls says otherwise"},
	{"helo-policy",
		"a HELO/EHLO name the upstream refuses gets moat's 250: moat introduces itself upstream with upstream.helo, so the upstream's HELO restrictions never see the client's name (they would with upstream.xclient)",
		"moat handles HELO/EHLO itself and opens the upstream connection only after the mail stage (DESIGN.md)"},
	{"data-refusal-at-eod",
		"an upstream that refuses the DATA command (Postfix smtpd_data_restrictions) refuses directly with its reply to DATA; through moat the client gets moat's 354, sends the message, and gets that same upstream reply (code and text) at the end of data",
		"moat answers DATA with 354 itself and sends DATA upstream only after reading and judging the message (DESIGN.md); the refusal reaches the client one step later, unchanged"},
	{"bdat-as-data",
		"BDAT chunks but the last get moat's 250; the LAST chunk gets the upstream's reply to the end of DATA, whose acceptance text lacks what the upstream says about chunks (Postfix's \"N bytes\", Exim's \"N byte chunk, total M\" line), which is normalised away; without CHUNKING at the upstream the direct run sends DATA and its final reply is compared",
		"moat sends every message upstream as DATA (DESIGN.md: BDAT may be converted to DATA)"},
	{"bdat-refusal-at-last",
		"a refusal the upstream gives at a first BDAT chunk (data restrictions, size) comes through moat at the LAST chunk, with the upstream's code and text (moat's own 552 for the size limit); the direct run's replies to later chunks (Postfix's \"551 Discarded N bytes\") are not compared",
		"moat acknowledges non-LAST chunks itself and talks to the upstream only at LAST, with DATA"},
	{"size-limit",
		"a message over the size limit gets moat's own 552 (declared with SIZE= at MAIL, else at the end of data), compared by class: the upstream is configured with the same limit. An oversize message whose DATA the upstream refuses directly (with 4xx or 5xx) gets moat's 552 at the end of data",
		"moat enforces limits.max_message_size itself (RFC 1870; README: limits), and judges a message before it asks the upstream anything about it (data-refusal-at-eod)"},
	{"recipient-limit",
		"a RCPT past the recipient limit gets moat's own 452 4.5.3, compared by class: the upstream is configured with the same limit",
		"moat enforces limits.max_recipients itself (RFC 5321 §4.5.3.1.10)"},
	{"bare-lf",
		"a bare LF in a message reaches the upstream through moat as a line end (CRLF); an upstream that reads a bare LF otherwise stores something else when reached directly (Exim 4.96 turns it into a space after DATA, not in BDAT chunks). For such an upstream (bareLFSpace in the table) the bodies of messages with bare LFs sent directly after DATA are each compared with the generated message, under its own rule; their headers still differentially. Sendmail 8.17 refuses a bare LF (421 4.5.0) and closes the session, which could not be compared past that point: it gets no bare LFs",
		"data.bare_lf: normalize (the default): a bare LF is never a line end for moat and the upstream sees exactly the framing moat saw (README, SMTP smuggling)"},
	{"error-limit",
		"a session that reaches the error limit is closed with 421 by both, but not necessarily after the same command of a pipelined batch: Postfix (smtpd_hard_error_limit 20) counts every refusal it gives, moat (limits.max_errors 20) only those it gives itself, not the upstream's relayed refusals of MAIL and RCPT, which the upstream counts on its own connection",
		"the error budget is moat's own (inspect/sequencer); the replies before the 421s are compared as usual"},
	{"received",
		"each message delivered through moat carries moat's Received: header, removed before the mailboxes are compared (exactly one must be there)",
		"RFC 5321 §4.4: moat is a hop"},
	{"upstream-trace",
		"the upstream's own Received: header (naming moat's EHLO and no TLS, or the client's EHLO and TLS; a queue id; a time) and Exim's Delivery-date: are removed or normalised in both mailboxes",
		"they differ between any two deliveries; Return-Path, Delivered-To, X-Original-To and Envelope-to are kept and compared"},
}

// tolerances counts the documented differences applied, per key.
type tolerances struct {
	mu sync.Mutex
	n  map[string]int
}

func (t *tolerances) use(key string) {
	if !slices.ContainsFunc(documentedDifferences, func(d struct{ key, what, why string }) bool { return d.key == key }) {
		panic("transparency: difference " + key + " is not in documentedDifferences")
	}
	t.mu.Lock()
	if t.n == nil {
		t.n = map[string]int{}
	}
	t.n[key]++
	t.mu.Unlock()
}

// mta is one running upstream instance.
type mta struct {
	addr string
	// wait waits until at least n messages have been delivered and
	// returns all delivered so far.
	wait func(t *testing.T, n int) [][]byte
}

// transparencyUpstream is one kind of upstream the test runs against:
// the generator's options say what it is configured to refuse and its
// limits; start starts one instance configured so.
type transparencyUpstream struct {
	name  string
	gen   sessiongen.Options
	start func(t *testing.T, o sessiongen.Options, tlsFiles [2]string) mta
	// bareLFSpace: reached directly, the upstream stores a bare LF in a
	// message as a space (bare-lf).
	bareLFSpace bool
}

// The refusals every upstream is configured with, as far as it can be.
var transparencyRefusals = sessiongen.Refusals{
	Helo:             []string{"bad-helo.client.test"},
	MailReject:       []string{"mail-reject@client.test"},
	MailDefer:        []string{"mail-defer@client.test"},
	RcptReject:       []string{"rcpt-reject@example.net"},
	RcptDefer:        []string{"rcpt-defer@example.net"},
	DataReject:       []string{"data-reject@client.test"},
	DataDefer:        []string{"data-defer@client.test"},
	EODDefer:         []string{"eod-defer@client.test"},
	EODRejectSubject: "eod-reject",
}

const (
	transparencySizeLimit = 40000
	transparencyRcptLimit = 100 // the least moat's config accepts (RFC 5321 §4.5.3.1.8)
)

// transparencyUpstreams is the table of upstreams. Another MTA harness
// joins with one line.
var transparencyUpstreams = []transparencyUpstream{
	{name: "postfix", gen: postfixGenOptions(), start: startPostfixMTA(nil)},
	// The legacy look: no PIPELINING, 8BITMIME, ENHANCEDSTATUSCODES or
	// CHUNKING in the EHLO reply, and (with enhancedstatuscodes gone) no
	// enhanced codes in any reply.
	{name: "postfix-legacy", gen: postfixGenOptions(), start: startPostfixMTA([]string{"smtpd_discard_ehlo_keywords = pipelining, 8bitmime, enhancedstatuscodes, chunking"})},
	{name: "exim", gen: eximGenOptions(), start: startEximMTA, bareLFSpace: true},
	{name: "opensmtpd", gen: opensmtpdGenOptions(), start: startOpenSMTPDMTA},
	{name: "sendmail", gen: sendmailGenOptions(), start: startSendmailMTA},
}

func postfixGenOptions() sessiongen.Options {
	return sessiongen.Options{
		SizeLimit:      transparencySizeLimit,
		RecipientLimit: transparencyRcptLimit,
		EarlyTalker:    true, // smtpd (without postscreen) does not mind
		BareLF:         true, // smtpd_forbid_bare_newline = no (postfixtest)
		STARTTLS:       true,
		OversizeBDAT:   true,
		Refuse:         transparencyRefusals,
	}
}

// eximGenOptions: eximtest refuses senders at MAIL, recipients at RCPT
// (5xx and 4xx) and a Subject at the end of data; it has no recipient
// limit to match moat's, no STARTTLS, and Exim refuses early talkers
// (smtp_enforce_sync) while moat, with no greeting delay, does not.
func eximGenOptions() sessiongen.Options {
	r := transparencyRefusals
	// OversizeBDAT stays off: Exim answers an oversize BDAT chunk
	// before reading it and takes the rest for commands ("554 SMTP
	// synchronization error"), where moat drains it (RFC 3030 §2).
	return sessiongen.Options{
		SizeLimit: transparencySizeLimit,
		BareLF:    true,
		Refuse: sessiongen.Refusals{
			MailReject:       r.MailReject,
			RcptReject:       r.RcptReject,
			RcptDefer:        r.RcptDefer,
			EODRejectSubject: r.EODRejectSubject,
		},
	}
}

// opensmtpdGenOptions: opensmtpdtest refuses senders at MAIL and
// recipients at RCPT, 5xx and 4xx; no refusal at DATA or after, no
// recipient limit, no STARTTLS.
func opensmtpdGenOptions() sessiongen.Options {
	r := transparencyRefusals
	return sessiongen.Options{
		SizeLimit:   transparencySizeLimit,
		EarlyTalker: true,
		BareLF:      true,
		Refuse: sessiongen.Refusals{
			MailReject: r.MailReject,
			MailDefer:  r.MailDefer,
			RcptReject: r.RcptReject,
			RcptDefer:  r.RcptDefer,
		},
	}
}

func startOpenSMTPDMTA(t *testing.T, o sessiongen.Options, _ [2]string) mta {
	r := o.Refuse
	sd := opensmtpdtest.Start(t, opensmtpdtest.Options{
		DenySenders:      r.MailReject,
		DeferSenders:     r.MailDefer,
		DenyRecipients:   r.RcptReject,
		DeferRecipients:  r.RcptDefer,
		MessageSizeLimit: o.SizeLimit,
	})
	return mta{addr: sd.Addr, wait: func(t *testing.T, n int) [][]byte { return sd.WaitMessages(t, n, 60*time.Second) }}
}

// sendmailGenOptions: sendmailtest refuses senders at MAIL and recipients
// at RCPT, 5xx and 4xx; no refusal at DATA or after, no recipient limit,
// no STARTTLS.
func sendmailGenOptions() sessiongen.Options {
	o := opensmtpdGenOptions()
	o.BareLF = false // Sendmail 8.17 refuses it with 421 and closes (bare-lf)
	return o
}

func startSendmailMTA(t *testing.T, o sessiongen.Options, _ [2]string) mta {
	r := o.Refuse
	sm := sendmailtest.Start(t, sendmailtest.Options{
		DenySenders:      r.MailReject,
		DeferSenders:     r.MailDefer,
		DenyRecipients:   r.RcptReject,
		DeferRecipients:  r.RcptDefer,
		MessageSizeLimit: o.SizeLimit,
	})
	return mta{addr: sm.Addr, wait: func(t *testing.T, n int) [][]byte { return sm.WaitMessages(t, n, 60*time.Second) }}
}

// inlineMap is a Postfix inline: table giving each key the action.
func inlineMap(action string, keys ...[]string) string {
	var kv []string
	for i, ks := range keys {
		for _, k := range ks {
			a := action
			if i > 0 {
				a = "DEFER"
			}
			kv = append(kv, k+"="+a)
		}
	}
	return "inline:{" + strings.Join(kv, ", ") + "}"
}

// startPostfixMTA starts a Postfix that refuses what o.Refuse names, at
// the stage it names: HELO, MAIL (smtpd_delay_reject = no makes the
// helo and sender restrictions answer HELO and MAIL themselves), RCPT,
// DATA (smtpd_data_restrictions), the end of data
// (smtpd_end_of_data_restrictions and a header check), with moat's size
// and recipient limits and STARTTLS with the test's certificate.
func startPostfixMTA(extra []string) func(*testing.T, sessiongen.Options, [2]string) mta {
	return func(t *testing.T, o sessiongen.Options, tlsFiles [2]string) mta {
		r := o.Refuse
		cf := []string{
			"smtpd_delay_reject = no",
			"smtpd_helo_restrictions = check_helo_access " + inlineMap("REJECT", r.Helo) + ", permit",
			"smtpd_sender_restrictions = check_sender_access " + inlineMap("REJECT", r.MailReject, r.MailDefer) + ", permit",
			"smtpd_recipient_restrictions = check_recipient_access " + inlineMap("REJECT", r.RcptReject, r.RcptDefer) + ", permit_mynetworks, reject_unauth_destination",
			"smtpd_data_restrictions = check_sender_access " + inlineMap("REJECT", r.DataReject, r.DataDefer) + ", permit",
			"smtpd_end_of_data_restrictions = check_sender_access " + inlineMap("DEFER", r.EODDefer) + ", permit",
			"header_checks = regexp:{{/^Subject: " + regexp.QuoteMeta(r.EODRejectSubject) + "/ REJECT refused at end of data}}",
			"smtpd_recipient_limit = " + strconv.Itoa(o.RecipientLimit),
			// Refused recipients count as errors; past
			// smtpd_soft_error_limit (10) Postfix would pause 1s before
			// every reply. Only the test's time is at stake.
			"smtpd_error_sleep_time = 0s",
			"smtpd_tls_security_level = may",
			"smtpd_tls_chain_files = " + tlsFiles[0] + ", " + tlsFiles[1],
		}
		pf := postfixtest.Start(t, postfixtest.Options{MessageSizeLimit: o.SizeLimit, ExtraMainCF: append(cf, extra...)})
		return mta{addr: pf.Addr, wait: func(t *testing.T, n int) [][]byte { return pf.WaitMessages(t, n, 60*time.Second) }}
	}
}

func startEximMTA(t *testing.T, o sessiongen.Options, _ [2]string) mta {
	r := o.Refuse
	ex := eximtest.Start(t, eximtest.Options{
		DenySenders:      r.MailReject,
		DenyRecipients:   r.RcptReject,
		DeferRecipients:  r.RcptDefer,
		DenySubject:      r.EODRejectSubject,
		MessageSizeLimit: o.SizeLimit,
	})
	return mta{addr: ex.Addr, wait: func(t *testing.T, n int) [][]byte { return ex.WaitMessages(t, n, 60*time.Second) }}
}

// writeTLSFiles writes a self-signed key and certificate for the upstreams'
// STARTTLS.
func writeTLSFiles(t *testing.T) [2]string {
	cert, err := selfSignedCertificate(postfixtest.Hostname)
	if err != nil {
		t.Fatal(err)
	}
	key, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := [2]string{filepath.Join(dir, "key.pem"), filepath.Join(dir, "cert.pem")}
	if err := os.WriteFile(files[0], pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(files[1], pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o644); err != nil {
		t.Fatal(err)
	}
	return files
}

// transparencySessions is how many sessions run per upstream
// (MOAT_TRANSPARENCY_SESSIONS overrides it).
const transparencySessions = 60

func TestTransparency(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("MOAT_TRANSPARENCY_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("MOAT_TRANSPARENCY_SEED: %v", err)
		}
	}
	sessions := transparencySessions
	if s := os.Getenv("MOAT_TRANSPARENCY_SESSIONS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 2000 {
			t.Fatalf("MOAT_TRANSPARENCY_SESSIONS=%q: want 1 to 2000", s)
		}
		sessions = n
	}
	first := 0
	if s := os.Getenv("MOAT_TRANSPARENCY_ONLY"); s != "" {
		// One session, to reproduce a failure: its transcripts are logged.
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			t.Fatalf("MOAT_TRANSPARENCY_ONLY=%q: want a session number", s)
		}
		first, sessions = n, 1
	}
	t.Logf("seed %d, %d sessions per upstream from session %d (MOAT_TRANSPARENCY_SEED, MOAT_TRANSPARENCY_SESSIONS, MOAT_TRANSPARENCY_ONLY)", seed, sessions, first)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("seed %d: rerun with MOAT_TRANSPARENCY_SEED=%d go test -run TestTransparency ./proxy", seed, seed)
		}
	})
	tlsFiles := writeTLSFiles(t)
	tol := &tolerances{}
	for _, up := range transparencyUpstreams {
		t.Run(up.name, func(t *testing.T) {
			runTransparency(t, up, seed, first, sessions, tlsFiles, tol)
		})
	}
	keys := make([]string, 0, len(tol.n))
	for k := range tol.n {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%d", k, tol.n[k])
	}
	t.Logf("documented differences applied:%s", b.String())
}

// transparencyRun is one session's two transcripts.
type transparencyRun struct {
	s              sessiongen.Session
	direct, moat   sessiongen.Transcript
	errD, errM     error
	deliveredD     int // messages (one per accepted recipient) each run delivered, by its transcript
	deliveredM     int
	divergences    []string
	compareSkipped bool
}

func runTransparency(t *testing.T, up transparencyUpstream, seed uint64, first, sessions int, tlsFiles [2]string, tol *tolerances) {
	start := time.Now()
	direct := up.start(t, up.gen, tlsFiles)
	behind := up.start(t, up.gen, tlsFiles)
	// moat with no rules (inspect.Config{}) and the upstream's limits.
	engine, err := inspect.New(inspect.Config{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(behind.addr)
	// OpenSMTPD sometimes greets only after a 5s resolver timeout here
	// (no reachable name server); the direct client waits that long too.
	cfg.Upstream.ConnectTimeout = 20 * time.Second
	cfg.Limits.MaxMessageSize = ByteSize(up.gen.SizeLimit)
	if up.gen.RecipientLimit > 0 {
		cfg.Limits.MaxRecipients = up.gen.RecipientLimit
	}
	logs := &syncBuffer{}
	_, moatAddr := serveProxy(t, cfg, engine, logs)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("end of moat's log:\n%s", lastLogLines(logs.String(), 30))
		}
	})
	clientTLS := &tls.Config{InsecureSkipVerify: true}

	runs := make([]*transparencyRun, sessions)
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range jobs {
				r := &transparencyRun{s: sessiongen.New(seed, first+n, up.gen)}
				ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
				r.direct, r.errD = sessiongen.Run(ctx, direct.addr, r.s, clientTLS)
				r.moat, r.errM = sessiongen.Run(ctx, moatAddr, r.s, clientTLS)
				cancel()
				runs[n] = r
			}
		}()
	}
	for n := range sessions {
		jobs <- n
	}
	close(jobs)
	wg.Wait()

	failed := 0
	report := func(r *transparencyRun, format string, args ...any) {
		failed++
		if failed > 8 {
			return
		}
		t.Errorf("%s, seed %d, session %d: %s\n%s\ndirect:\n%s\nthrough moat:\n%s", up.name, seed, r.s.N,
			fmt.Sprintf(format, args...), r.s.String(), r.direct.String(), r.moat.String())
	}
	var wantD, wantM int
	for _, r := range runs {
		if r.errD != nil || r.errM != nil {
			report(r, "run failed: direct: %v; through moat: %v", r.errD, r.errM)
			continue
		}
		cmp := &comparison{s: r.s, d: &r.direct, m: &r.moat, gen: up.gen, tol: tol}
		cmp.run()
		if sessions == 1 {
			t.Logf("%s\ndirect:\n%s\nthrough moat:\n%s", r.s.String(), r.direct.String(), r.moat.String())
		}
		r.deliveredD, r.deliveredM = cmp.deliveredD, cmp.deliveredM
		wantD += cmp.deliveredD
		wantM += cmp.deliveredM
		if len(cmp.divergences) > 0 {
			report(r, "%d divergence(s):\n  %s", len(cmp.divergences), strings.Join(cmp.divergences, "\n  "))
		}
	}
	if failed > 8 {
		t.Errorf("%s: %d more sessions diverged (seed %d)", up.name, failed-8, seed)
	}
	t.Logf("%s: %d sessions compared in %v; %d deliveries direct, %d through moat; played (direct/through moat): %s",
		up.name, sessions, time.Since(start).Round(time.Millisecond), wantD, wantM, coverage(runs))

	// The mailboxes: each run delivered what its transcript says, and
	// the two hold the same messages.
	gotD := direct.wait(t, wantD)
	gotM := behind.wait(t, wantM)
	if len(gotD) != wantD || len(gotM) != wantM {
		t.Errorf("%s: delivered %d direct and %d through moat, transcripts promise %d and %d (seed %d)",
			up.name, len(gotD), len(gotM), wantD, wantM, seed)
	}
	var bareLF map[string]*sessiongen.Message
	if up.bareLFSpace {
		bareLF = map[string]*sessiongen.Message{}
		for _, r := range runs {
			for i, st := range r.s.Steps {
				// Exim keeps a bare LF in a BDAT chunk as a line end.
				asData := st.Kind == sessiongen.KindData || st.Kind == sessiongen.KindBDAT && r.direct.Steps[i].AsData
				if st.Msg != nil && st.Msg.BareLF && asData {
					bareLF["<"+st.Msg.ID+">"] = st.Msg
				}
			}
		}
	}
	compareMailboxes(t, up.name, seed, gotD, gotM, bareLF, tol)
}

// comparison compares one session's two transcripts step by step. Its
// state follows the session through moat's replies (which have the same
// class as the direct ones wherever it matters, or a divergence is
// reported anyway).
type comparison struct {
	s    sessiongen.Session
	d, m *sessiongen.Transcript
	gen  sessiongen.Options
	tol  *tolerances

	esmtp    bool // the client said EHLO: moat offered ENHANCEDSTATUSCODES
	mailOpen bool // a MAIL was accepted, the transaction is open
	rcptsD   int  // recipients accepted in the open transaction
	rcptsM   int
	// dataRefused is the direct run's refusal of the DATA command that
	// moat answered with 354 (data-refusal-at-eod).
	dataRefused *sessiongen.Reply
	// sizeTx is the transaction moat refused at MAIL for its SIZE=
	// while the direct upstream went on (size-declared).
	sizeTx  int
	helloed bool // a HELO/EHLO got 250 since the start or STARTTLS

	deliveredD, deliveredM int
	divergences            []string
}

func (c *comparison) diverge(step int, format string, args ...any) {
	c.divergences = append(c.divergences, fmt.Sprintf("step %d (%s): %s", step, c.s.Steps[step], fmt.Sprintf(format, args...)))
}

func (c *comparison) run() {
	if c.d.Greeting.Class() != c.m.Greeting.Class() {
		c.divergences = append(c.divergences, fmt.Sprintf("greeting: direct %q, through moat %q", c.d.Greeting, c.m.Greeting))
	} else {
		c.tol.use("own-reply")
	}
	for i, st := range c.s.Steps {
		sd, sm := &c.d.Steps[i], &c.m.Steps[i]
		if sd.Closed != sm.Closed {
			c.diverge(i, "connection closed in one run only (direct %v, through moat %v)", sd.Closed, sm.Closed)
			return
		}
		if sd.Skipped == "connection closed" || sm.Skipped == "connection closed" {
			if sd.Skipped != sm.Skipped {
				c.diverge(i, "connection closed in one run only")
			}
			return
		}
		if st.Tx == 0 || st.Tx != c.sizeTx {
			c.sizeTx = 0
		}
		if c.sizeTx != 0 {
			c.sizeDeclared(i, st, sd, sm, 0)
			continue
		}
		// The runner skips what a client would not send (see
		// sessiongen.Run); both runs must skip the same steps, but for
		// the documented cases data and startTLS handle.
		if (sd.Skipped == "") != (sm.Skipped == "") && st.Kind != sessiongen.KindData && st.Kind != sessiongen.KindStartTLS {
			c.diverge(i, "skipped direct %q, through moat %q", sd.Skipped, sm.Skipped)
			continue
		}
		if sd.Skipped != "" && sm.Skipped != "" {
			continue
		}
		switch st.Kind {
		case sessiongen.KindCmd:
			c.commands(i, st, sd, sm)
		case sessiongen.KindData:
			c.data(i, st, sd, sm)
		case sessiongen.KindBDAT:
			c.bdat(i, st, sd, sm)
		case sessiongen.KindStartTLS:
			c.startTLS(i, sd, sm)
		}
		if sd.Closed {
			return
		}
	}
	if c.d.Closed != c.m.Closed {
		c.divergences = append(c.divergences, fmt.Sprintf("connection closed at the end: direct %v, through moat %v", c.d.Closed, c.m.Closed))
	}
}

func (c *comparison) resetTx() {
	c.mailOpen = false
	c.rcptsD, c.rcptsM = 0, 0
	c.dataRefused = nil
}

// commands compares the replies to a command step.
func (c *comparison) commands(i int, st sessiongen.Step, sd, sm *sessiongen.StepResult) {
	n := len(sd.Replies)
	if n != len(sm.Replies) {
		nd, nm := len(sd.Replies), len(sm.Replies)
		if !(sd.Closed && sm.Closed && nd > 0 && nm > 0 && sd.Replies[nd-1].Code == 421 && sm.Replies[nm-1].Code == 421) {
			c.diverge(i, "%d replies direct, %d through moat", nd, nm)
			return
		}
		c.tol.use("error-limit")
		n = min(nd, nm) - 1 // the replies before either 421
	}
	for j, cmd := range st.Cmds[:n] {
		if c.sizeTx != 0 {
			// The rest of a batch whose MAIL moat refused for its SIZE=.
			c.sizeDeclared(i, st, sd, sm, j)
			return
		}
		c.command(i, cmd, sd.Replies[j], sm.Replies[j])
	}
}

func (c *comparison) command(i int, cmd sessiongen.Command, rd, rm sessiongen.Reply) {
	same := rd.Class() == rm.Class()
	switch cmd.Tag {
	case sessiongen.TagEHLO, sessiongen.TagHELO:
		switch {
		case same:
			c.tol.use("own-reply")
			if cmd.Tag == sessiongen.TagEHLO && rm.Code == 250 {
				c.tol.use("capabilities")
			}
		case rd.Class() == 5 && rm.Code == 250 && slices.Contains(c.gen.Refuse.Helo, c.s.Helo):
			c.tol.use("helo-policy")
		case rd.Code == 503 && rm.Code == 250 && c.helloed:
			c.tol.use("repeated-hello")
		default:
			c.diverge(i, "%s: direct %q, through moat %q", cmd.Tag, rd, rm)
		}
		if rm.Code == 250 {
			c.esmtp = cmd.Tag == sessiongen.TagEHLO
			c.helloed = true
			c.resetTx()
		}
		return
	case sessiongen.TagVrfy:
		if rm.Code != 252 {
			c.diverge(i, "VRFY through moat got %q, want moat's 252", rm)
		}
		c.tol.use("vrfy")
		return
	case sessiongen.TagHelp:
		if rm.Code != 214 {
			c.diverge(i, "HELP through moat got %q, want moat's 214", rm)
		}
		c.tol.use("help")
		return
	}
	if !same {
		if cmd.Tag == sessiongen.TagMail && rm.Code == 552 && c.esmtp && cmd.Size > c.gen.SizeLimit {
			// The upstream did not check SIZE=: it accepted MAIL, or
			// refused it for another reason.
			c.tol.use("size-declared")
			if rd.Class() == 2 {
				c.sizeTx = c.s.Steps[i].Tx
			}
			return
		}
		if cmd.Tag == sessiongen.TagMailSyntax && rd.Class() == 2 && rm.Code == 501 {
			c.tol.use("strict-syntax")
			return
		}
		if (cmd.Tag == sessiongen.TagData || cmd.Tag == sessiongen.TagDataNoRcpt) && rm.Code == 354 && (rd.Class() == 4 || rd.Class() == 5) && c.rcptsM > 0 {
			// The upstream refused DATA; moat said 354 itself. The
			// message step must bring the same refusal.
			c.dataRefused = &rd
			return
		}
		c.diverge(i, "%s: direct %q, through moat %q", cmd.Tag, rd, rm)
		return
	}
	switch cmd.Tag {
	case sessiongen.TagMail:
		declared := c.esmtp && cmd.Size > 0
		switch {
		case c.mailOpen:
			c.tol.use("own-reply") // nested MAIL
		case declared && cmd.Size > c.gen.SizeLimit:
			c.tol.use("size-limit")
		default:
			c.relayed(i, "MAIL", rd, rm)
		}
		if rm.Class() == 2 {
			c.resetTx()
			c.mailOpen = true
		}
	case sessiongen.TagRcpt, sessiongen.TagRcptNoMail, sessiongen.TagRcptOver:
		switch {
		case !c.mailOpen:
			c.tol.use("own-reply")
		case c.gen.RecipientLimit > 0 && c.rcptsM >= c.gen.RecipientLimit:
			c.tol.use("recipient-limit")
		default:
			c.relayed(i, "RCPT", rd, rm)
		}
		if rd.Class() == 2 {
			c.rcptsD++
		}
		if rm.Class() == 2 {
			c.rcptsM++
		}
	case sessiongen.TagRset:
		c.tol.use("own-reply")
		c.resetTx()
	case sessiongen.TagMailSyntax:
		c.tol.use("own-reply")
		if rm.Class() == 2 {
			c.diverge(i, "moat accepted %q", cmd.Line)
		}
	default:
		// NOOP, QUIT, DATA (354 or a refusal), bad commands.
		c.tol.use("own-reply")
		if cmd.Tag == sessiongen.TagMailParam && rm.Class() == 2 {
			c.diverge(i, "moat accepted %q", cmd.Line)
		}
	}
}

// relayed compares a reply moat relays from the upstream: the same code
// and text, modulo the queue id and an enhanced code moat adds.
func (c *comparison) relayed(i int, verb string, rd, rm sessiongen.Reply) {
	if rd.Code != rm.Code {
		c.diverge(i, "%s relayed: direct %q, through moat %q", verb, rd, rm)
		return
	}
	td, tm := normaliseText(rd.Text, verb), normaliseText(rm.Text, verb)
	if td != tm {
		c.diverge(i, "%s relayed: direct %q, through moat %q (text)", verb, rd, rm)
		return
	}
	if rd.Enhanced == rm.Enhanced {
		return
	}
	if rd.Enhanced == "" && c.esmtp {
		want := smtp.Reply{Code: rd.Code}.WithDefaultEnhanced(verb).Enhanced
		if rm.Enhanced == want {
			c.tol.use("enhanced-added")
			return
		}
	}
	c.diverge(i, "%s relayed: direct %q, through moat %q (enhanced code)", verb, rd, rm)
}

var (
	queueIDRE = regexp.MustCompile(`(queued as |id=)[0-9A-Za-z-]+`)
	// OpenSMTPD's and Sendmail's "250 2.0.0 ID Message accepted for delivery".
	acceptedIDRE = regexp.MustCompile(`^[0-9A-Za-z]+( Message accepted for delivery)$`)
	// Postfix's reply to BDAT LAST: "Ok: 1234 bytes queued as ID".
	bdatBytesRE = regexp.MustCompile(`^Ok: \d+ bytes queued as `)
	// Exim's first line of its reply to BDAT LAST.
	eximChunkRE = regexp.MustCompile(`^ ?\d+ byte chunk, total \d+$`)
)

// normaliseText joins a reply's text with the upstream's queue id
// replaced (queue-id); for verb "BDAT", what the upstream says about
// chunks goes too (bdat-as-data).
func normaliseText(text []string, verb string) string {
	var out []string
	for _, l := range text {
		if verb == "BDAT" {
			if eximChunkRE.MatchString(l) {
				continue
			}
			l = bdatBytesRE.ReplaceAllString(l, "Ok: queued as ")
		}
		l = acceptedIDRE.ReplaceAllString(l, "QUEUEID${1}")
		out = append(out, queueIDRE.ReplaceAllString(l, "${1}QUEUEID"))
	}
	return strings.Join(out, "\n")
}

// data compares the replies to a message sent after DATA.
func (c *comparison) data(i int, st sessiongen.Step, sd, sm *sessiongen.StepResult) {
	refused := c.dataRefused
	c.dataRefused = nil
	switch {
	case sd.Skipped != "" && sm.Skipped != "":
		return // no 354 either way
	case sd.Skipped == "no 354" && sm.Skipped == "" && refused != nil:
		if len(sm.Replies) != 1 {
			c.diverge(i, "no reply to the message through moat")
			return
		}
		// data-refusal-at-eod: the upstream's refusal of DATA, as the
		// reply to the end of data — unless moat refused the message
		// for its size before asking the upstream (size-limit).
		c.tol.use("data-refusal-at-eod")
		if st.Msg.Oversize {
			c.tol.use("size-limit")
			if sm.Replies[0].Code != 552 {
				c.diverge(i, "oversize message through moat got %q, want moat's 552", sm.Replies[0])
			}
		} else {
			c.relayed(i, "DATA", *refused, sm.Replies[0])
		}
		c.endOfData(sd, sm, st.Msg)
		return
	case sd.Skipped != "" || sm.Skipped != "":
		c.diverge(i, "message skipped direct %q, through moat %q", sd.Skipped, sm.Skipped)
		return
	case len(sd.Replies) != 1 || len(sm.Replies) != 1:
		c.diverge(i, "%d replies direct, %d through moat", len(sd.Replies), len(sm.Replies))
		return
	}
	c.final(i, "DATA", st.Msg, sd.Replies[0], sm.Replies[0])
	c.endOfData(sd, sm, st.Msg)
}

// final compares the replies to the end of a message.
func (c *comparison) final(i int, verb string, msg *sessiongen.Message, rd, rm sessiongen.Reply) {
	switch {
	case rd.Class() != rm.Class():
		c.diverge(i, "end of data: direct %q, through moat %q", rd, rm)
	case c.rcptsM == 0:
		c.tol.use("own-reply") // no valid recipients: moat refuses itself
	case msg.Oversize:
		c.tol.use("size-limit")
	default:
		c.relayed(i, verb, rd, rm)
	}
}

// endOfData counts deliveries and ends the transaction, when there was
// one with a recipient (else moat refused the message itself and the
// transaction stays open, as an upstream's does).
func (c *comparison) endOfData(sd, sm *sessiongen.StepResult, msg *sessiongen.Message) {
	if n := len(sd.Replies); n > 0 && sd.Replies[n-1].Class() == 2 && sd.Skipped == "" {
		c.deliveredD += c.rcptsD
	}
	if n := len(sm.Replies); n > 0 && sm.Replies[n-1].Class() == 2 {
		c.deliveredM += c.rcptsM
	}
	if c.rcptsM > 0 {
		c.resetTx()
	}
	// The direct run's transaction stays open after a refused DATA
	// (RFC 5321 §4.1.1.4); the generator follows such a transaction with
	// RSET, as a client does.
}

// bdat compares a message sent in BDAT chunks (through moat always, as
// moat offers CHUNKING) with the same message sent directly, in chunks
// or, when the upstream lacks CHUNKING, as DATA.
func (c *comparison) bdat(i int, st sessiongen.Step, sd, sm *sessiongen.StepResult) {
	defer c.endOfData(sd, sm, st.Msg)
	if sm.AsData {
		c.diverge(i, "moat did not offer CHUNKING")
		return
	}
	if len(sm.Replies) != len(st.Chunks) {
		c.diverge(i, "%d replies to %d chunks through moat", len(sm.Replies), len(st.Chunks))
		return
	}
	c.tol.use("bdat-as-data")
	last := len(st.Chunks) - 1
	// The direct run's first refusal, when moat acknowledged that chunk.
	var refusal *sessiongen.Reply
	if sd.AsData {
		// DATA's 354 (or refusal), then the reply to the message.
		rd := sd.Replies[0]
		switch {
		case rd.Code == 354 && len(sd.Replies) == 2:
			for k := 0; k < last; k++ {
				if sm.Replies[k].Class() != 2 {
					c.diverge(i, "chunk %d through moat: %q, direct DATA got 354", k, sm.Replies[k])
					return
				}
			}
			c.final(i, "DATA", st.Msg, sd.Replies[1], sm.Replies[last])
			return
		case rd.Class() == 4 || rd.Class() == 5:
			refusal = &rd
		default:
			c.diverge(i, "direct DATA: %q", sd.Replies)
			return
		}
	} else {
		if len(sd.Replies) != len(st.Chunks) {
			c.diverge(i, "%d replies to %d chunks direct", len(sd.Replies), len(st.Chunks))
			return
		}
		for k := 0; k < last; k++ {
			rd, rm := sd.Replies[k], sm.Replies[k]
			switch {
			case rd.Class() == rm.Class():
				c.tol.use("own-reply")
			case (rd.Class() == 4 || rd.Class() == 5) && rm.Class() == 2:
				refusal = &rd
			default:
				c.diverge(i, "chunk %d: direct %q, through moat %q", k, rd, rm)
				return
			}
			if refusal != nil {
				break
			}
		}
		if refusal == nil {
			c.final(i, "BDAT", st.Msg, sd.Replies[last], sm.Replies[last])
			return
		}
	}
	// The refusal the direct run got early comes at the LAST chunk.
	rm := sm.Replies[last]
	if c.rcptsM == 0 {
		// No recipient: moat refuses every chunk itself.
		if rm.Class() != refusal.Class() {
			c.diverge(i, "direct refused with %q, through moat %q", refusal, rm)
		}
		c.tol.use("own-reply")
		return
	}
	c.tol.use("bdat-refusal-at-last")
	switch {
	case st.Msg.Oversize:
		// moat judges the size before it asks the upstream (size-limit).
		c.tol.use("size-limit")
		if rm.Code != 552 {
			c.diverge(i, "oversize message through moat got %q at the LAST chunk, want moat's 552", rm)
		}
	case rm.Class() != refusal.Class():
		c.diverge(i, "direct refused a chunk with %q, through moat the LAST chunk got %q", refusal, rm)
	default:
		c.relayed(i, "DATA", *refusal, rm)
	}
}

// sizeDeclared checks a step (from its command j on) of a transaction
// moat refused at MAIL for its declared size while the direct upstream
// accepted the MAIL (size-declared): through moat nothing but refusals
// or skipped steps; directly, the message is refused.
func (c *comparison) sizeDeclared(i int, st sessiongen.Step, sd, sm *sessiongen.StepResult, j int) {
	if sm.Skipped == "" {
		for _, r := range sm.Replies[min(j+1, len(sm.Replies)):] {
			if r.Class() != 5 {
				c.diverge(i, "after refusing MAIL for its SIZE=, moat answered %q", r)
			}
		}
	}
	if sd.Skipped == "" && (st.Kind == sessiongen.KindData || st.Kind == sessiongen.KindBDAT) {
		if n := len(sd.Replies); n == 0 || sd.Replies[n-1].Class() != 5 {
			c.diverge(i, "moat refused the declared SIZE= at MAIL, but directly the message got %q", sd.Replies)
		}
	}
}

// startTLS compares a STARTTLS step.
func (c *comparison) startTLS(i int, sd, sm *sessiongen.StepResult) {
	switch {
	case sd.Skipped == sm.Skipped:
		if len(sd.Replies) != len(sm.Replies) || len(sd.Replies) > 0 && sd.Replies[0].Class() != sm.Replies[0].Class() {
			c.diverge(i, "STARTTLS: direct %q, through moat %q", sd.Replies, sm.Replies)
		}
		c.tol.use("own-reply")
	case sd.Skipped == "STARTTLS not offered" && sm.Skipped == "":
		c.tol.use("starttls")
	default:
		c.diverge(i, "STARTTLS skipped direct %q, through moat %q", sd.Skipped, sm.Skipped)
	}
	c.esmtp = false
	c.helloed = false
	c.resetTx()
}

// compareMailboxes requires the two mailboxes to hold the same messages
// after normalisation. The messages in bareLF (by Message-ID) have their
// bodies compared with the generated message instead (bare-lf).
func compareMailboxes(t *testing.T, name string, seed uint64, direct, moat [][]byte, bareLF map[string]*sessiongen.Message, tol *tolerances) {
	norm := func(msgs [][]byte, throughMoat bool) map[string][]string {
		out := map[string][]string{}
		for _, m := range msgs {
			key, text, err := normaliseDelivered(m, throughMoat, tol)
			if err != nil {
				t.Errorf("%s (seed %d): %v in delivered message:\n%s", name, seed, err, m)
				continue
			}
			out[key] = append(out[key], text)
		}
		return out
	}
	d, m := norm(direct, false), norm(moat, true)
	// bare-lf: check each body against the generated message, under its
	// run's rule, then compare the rest.
	for k, texts := range d {
		msg := bareLF[strings.SplitN(k, " ", 2)[0]]
		if msg == nil {
			continue
		}
		tol.use("bare-lf")
		_, body, _ := bytes.Cut(msg.Content, []byte("\r\n\r\n"))
		wantD := strings.ReplaceAll(bareLFTo(string(body), " "), "\r\n", "\n")
		wantM := strings.ReplaceAll(string(body), "\r\n", "\n")
		check := func(texts []string, want, run string) {
			for j, text := range texts {
				head, got, _ := strings.Cut(text, "\n\n")
				if got != want {
					t.Errorf("%s (seed %d): message %s with bare LFs, %s: body differs from the generated message at %s", name, seed, k, run, strings.Replace(strings.Replace(firstDifference(got, want), "direct", "delivered", 1), "through moat", "generated", 1))
				}
				texts[j] = head + "\n\n(body checked)"
			}
		}
		check(texts, wantD, "direct (bare LF as a space)")
		check(m[k], wantM, "through moat (bare LF as a line end)")
	}
	var keys []string
	for k := range d {
		keys = append(keys, k)
	}
	for k := range m {
		if _, ok := d[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	bad := 0
	for _, k := range keys {
		a, b := d[k], m[k]
		sort.Strings(a)
		sort.Strings(b)
		if slices.Equal(a, b) {
			continue
		}
		if bad++; bad > 5 {
			continue
		}
		switch {
		case len(a) != len(b):
			t.Errorf("%s (seed %d): message %s delivered %d times direct, %d times through moat", name, seed, k, len(a), len(b))
		default:
			for j := range a {
				if a[j] != b[j] {
					t.Errorf("%s (seed %d): message %s differs: %s", name, seed, k, firstDifference(a[j], b[j]))
					break
				}
			}
		}
	}
	if bad > 5 {
		t.Errorf("%s (seed %d): %d more messages differ", name, seed, bad-5)
	}
}

// normaliseDelivered returns a delivered message's key (Message-ID and
// recipient) and its text with the trace headers that differ between
// runs removed: moat's Received: (exactly one through moat, none
// directly; received), the upstream's topmost Received: and Exim's
// Delivery-date: (upstream-trace).
func normaliseDelivered(msg []byte, throughMoat bool, tol *tolerances) (string, string, error) {
	head, body, ok := bytes.Cut(msg, []byte("\n\n"))
	if !ok {
		return "", "", fmt.Errorf("no end of header")
	}
	// Unfold into fields, keeping each field's exact text.
	var fields []string
	for _, l := range strings.SplitAfter(string(head)+"\n", "\n") {
		if l == "" {
			continue
		}
		if (l[0] == ' ' || l[0] == '\t') && len(fields) > 0 {
			fields[len(fields)-1] += l
			continue
		}
		fields = append(fields, l)
	}
	var out []string
	var id, rcpt string
	moatReceived, upstreamReceived := 0, false
	for _, f := range fields {
		name, value, _ := strings.Cut(f, ":")
		switch strings.ToLower(name) {
		case "received":
			if strings.Contains(value, "by moat.test (moat)") {
				moatReceived++
				tol.use("received")
				continue
			}
			if !upstreamReceived && strings.Contains(value, "by "+postfixtest.Hostname) {
				upstreamReceived = true
				tol.use("upstream-trace")
				continue
			}
		case "delivery-date":
			f = name + ": (normalised)\n"
			tol.use("upstream-trace")
		case "message-id":
			id = strings.TrimSpace(value)
		case "delivered-to", "envelope-to":
			rcpt = strings.TrimSpace(value)
		}
		out = append(out, f)
	}
	want := 0
	if throughMoat {
		want = 1
	}
	if moatReceived != want {
		return "", "", fmt.Errorf("%d Received: headers of moat, want %d", moatReceived, want)
	}
	if !upstreamReceived {
		return "", "", fmt.Errorf("no Received: header of the upstream")
	}
	return id + " to " + rcpt, strings.Join(out, "") + "\n" + string(body), nil
}

// firstDifference describes where two texts first differ.
func firstDifference(a, b string) string {
	la, lb := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < len(la) || i < len(lb); i++ {
		var x, y string
		if i < len(la) {
			x = la[i]
		}
		if i < len(lb) {
			y = lb[i]
		}
		if x != y || i >= len(la) || i >= len(lb) {
			return fmt.Sprintf("line %d: direct %q, through moat %q", i+1, x, y)
		}
	}
	return "no difference"
}

// lastLogLines returns the last n lines of a log.
func lastLogLines(s string, n int) string {
	lines := strings.SplitAfter(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "")
}

// bareLFTo replaces every LF not preceded by CR with repl.
func bareLFTo(s, repl string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' && (i == 0 || s[i-1] != '\r') {
			b.WriteString(repl)
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// coverage counts what the runs played, direct/through moat, so that the
// log shows the shapes were exercised and not skipped.
func coverage(runs []*transparencyRun) string {
	type pair [2]int
	n := map[string]*pair{}
	add := func(k string, side int) {
		if n[k] == nil {
			n[k] = &pair{}
		}
		n[k][side]++
	}
	for _, r := range runs {
		for side, tr := range []*sessiongen.Transcript{&r.direct, &r.moat} {
			if r.s.EarlyTalk {
				add("early-talker", side)
			}
			if tr.TLS {
				add("tls", side)
			}
			for i, st := range r.s.Steps {
				res := tr.Steps[i]
				if res.Skipped != "" {
					continue
				}
				switch {
				case res.Pipelined:
					add("pipelined", side)
				case st.Kind == sessiongen.KindBDAT && !res.AsData:
					add("bdat", side)
				case st.Kind == sessiongen.KindBDAT:
					add("bdat-as-data", side)
				}
				if st.Msg != nil && st.Msg.Oversize {
					add("oversize", side)
				}
				if st.Msg != nil && st.Msg.BareLF {
					add("bare-lf", side)
				}
				for j, c := range st.Cmds {
					if j < len(res.Replies) && c.Tag == sessiongen.TagRcptOver {
						add("rcpt-over-limit", side)
					}
				}
			}
		}
	}
	keys := make([]string, 0, len(n))
	for k := range n {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%d/%d", k, n[k][0], n[k][1])
	}
	return strings.TrimSpace(b.String())
}
