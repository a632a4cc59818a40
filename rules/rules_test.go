package rules

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"moat/inspect"
	"moat/inspect/smtp"
)

func TestDefaultRulesCompile(t *testing.T) {
	s, err := Default(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Len() < 15 {
		t.Fatalf("default set has %d rules", s.Len())
	}
	// With the lists configured, the optional list rules are kept.
	s2, err := Default(Options{Lists: fakeLists{"zen": inspect.KindIP, "spamcop": inspect.KindIP, "dnswl": inspect.KindIP, "dbl": inspect.KindDomain}})
	if err != nil {
		t.Fatal(err)
	}
	if s2.Len() <= s.Len() {
		t.Fatalf("list rules not added: %d vs %d", s2.Len(), s.Len())
	}
}

// fakeLists is a DNS list configuration and answers for tests of the rule
// language (the dnsbl package has its own tests against rbldnsd).
type fakeLists map[string]inspect.ListKind

func (f fakeLists) ListKind(name string) (inspect.ListKind, bool) {
	k, ok := f[name]
	return k, ok
}

type fakeAnswers map[string][]inspect.ListResult // key -> results

// fakeResolver answers the rDNS questions of the rule-language tests:
// 192.0.2.77 has the PTR mail.example.org, which resolves back to it;
// 192.0.2.88's PTR name does not resolve back; others have none.
type fakeResolver struct{}

type noName struct{}

func (noName) Error() string    { return "no such name" }
func (noName) IsNotFound() bool { return true }

func (fakeResolver) LookupPTR(ctx context.Context, ip netip.Addr) ([]string, error) {
	switch ip.String() {
	case "192.0.2.77":
		return []string{"mail.example.org."}, nil
	case "192.0.2.88":
		return []string{"liar.example.org."}, nil
	case "192.0.2.99":
		return nil, errors.New("timeout")
	}
	return nil, noName{}
}

func (fakeResolver) LookupAddr(ctx context.Context, host string) ([]netip.Addr, error) {
	if host == "mail.example.org." {
		return []netip.Addr{netip.MustParseAddr("192.0.2.77")}, nil
	}
	return []netip.Addr{netip.MustParseAddr("198.51.100.1")}, nil
}

func (f fakeAnswers) Lookup(ctx context.Context, kind inspect.ListKind, key string) func(context.Context) []inspect.ListResult {
	return func(context.Context) []inspect.ListResult { return f[key] }
}

var testLists = fakeLists{"zen": inspect.KindIP, "dbl": inspect.KindDomain, "uribl": inspect.KindURI, "wl": inspect.KindIP}

// session is a scenario to judge.
type session struct {
	client    string
	helo      string
	from      string
	rcpts     []string
	content   *inspect.Content
	size      int64
	answers   fakeAnswers
	params    string // MAIL parameters
	tls       *inspect.TLSInfo
	bare      bool // bare LF and CR in the message
	anomalies inspect.Anomalies
}

func (sc session) run(t *testing.T, set *Set) (verdicts map[inspect.Stage]inspect.Verdict) {
	t.Helper()
	e, err := inspect.New(inspect.Config{Judge: set, Blocklists: sc.answers, Resolver: fakeResolver{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s := &inspect.Session{ID: "TESTID", Client: netip.AddrPortFrom(netip.MustParseAddr(orDefault(sc.client, "192.0.2.1")), 4000),
		TLS: sc.tls, Anomalies: sc.anomalies}
	defer e.End(s)
	verdicts = map[inspect.Stage]inspect.Verdict{}
	verdicts[inspect.StageConnect] = e.Connect(ctx, s)
	s.Keep(inspect.StageConnect, verdicts[inspect.StageConnect])
	s.HeloVerb, s.Helo = "EHLO", orDefault(sc.helo, "mail.example.org")
	verdicts[inspect.StageHelo] = e.Helo(ctx, s)
	s.Keep(inspect.StageHelo, verdicts[inspect.StageHelo])
	from, params, _ := smtp.ParseMailArg("FROM:<" + sc.from + "> " + sc.params)
	tx := &inspect.Transaction{From: from, FromParams: params}
	verdicts[inspect.StageMail] = e.Mail(ctx, s, tx)
	tx.Keep(inspect.StageMail, verdicts[inspect.StageMail])
	rcpts := sc.rcpts
	if rcpts == nil {
		rcpts = []string{"bob@example.net"}
	}
	for _, r := range rcpts {
		p, _, _ := smtp.ParseRcptArg("TO:<" + r + ">")
		v := e.Rcpt(ctx, s, tx, inspect.Recipient{Path: p})
		verdicts[inspect.StageRcpt] = v
		if v.Action < inspect.Tempfail {
			tx.Rcpts = append(tx.Rcpts, inspect.Recipient{Path: p, Result: v.Result})
		}
	}
	verdicts[inspect.StageData] = judgeData(e, s, tx, sc.content, sc.size, sc.bare)
	return verdicts
}

// judgeData runs the data stage with a hand-built Content.
func judgeData(e *inspect.Engine, s *inspect.Session, tx *inspect.Transaction, c *inspect.Content, size int64, bare bool) inspect.Verdict {
	if c == nil {
		c = &inspect.Content{}
	}
	return e.DataWithContent(context.Background(), s, tx, &inspect.Message{Size: size, BareLF: bare, BareCR: bare}, c)
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func mustParse(t *testing.T, src string) *Set {
	t.Helper()
	s, err := Parse("test.yaml", []byte(src), Options{Lists: testLists})
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return s
}

// oneRule wraps a condition at a stage into a rules file.
func oneRule(stage, when string) string {
	return "rules:\n  - name: R\n    stage: " + stage + "\n    when: " + when + "\n    score: 1\n"
}

// Every operator on every kind of fact, matching and not.
func TestOperators(t *testing.T) {
	content := &inspect.Content{
		Subject: "Cheap WATCHES", Header: []inspect.HeaderField{{Name: "Subject", Value: "=?utf-8?q?Cheap_WATCHES?=", Decoded: "Cheap WATCHES"}, {Name: "X-Mailer", Value: "BulkMailer 3", Decoded: "BulkMailer 3"}},
		From: []inspect.Address{{Name: "Example Bank", Addr: "x@evil.test", Domain: "evil.test"}},
		To:   []inspect.Address{{Addr: "a@example.net"}, {Addr: "b@example.net"}},
		Date: time.Now().Add(48 * time.Hour), MessageID: "abc@evil.test",
		ReplyTo: []inspect.Address{{Addr: "r@reply.test", Domain: "reply.test"}}, Cc: []inspect.Address{{Addr: "c@example.net"}},
		Received: []string{"from a by b", "from c by d"}, HTML: "<a href=\"http://shop.evil.test/x\">x</a>",
		Parts: []inspect.Part{{ContentType: "multipart/mixed", Multipart: true}, {ContentType: "text/plain", Charset: "koi8-r"},
			{ContentType: "application/octet-stream", Filename: "invoice.pdf.exe"}},
		MaxDepth: 1, Text: "Buy now at http://shop.evil.test/x", URLs: []inspect.URL{{Raw: "http://shop.evil.test/x", Host: "shop.evil.test"}},
		Malformed: []string{"base64_invalid"},
	}
	dir := t.TempDir()
	listFile := filepath.Join(dir, "bad-helos.txt")
	os.WriteFile(listFile, []byte("# spammy HELOs\nfriend\nLOCALHOST  # comment\n"), 0o644)
	sc := session{client: "192.0.2.77", helo: "localhost", from: "x@evil.test", content: content, size: 5000,
		params: "SIZE=4000", tls: &inspect.TLSInfo{Version: "TLS1.3"}, bare: true,
		anomalies: inspect.Anomalies{BareLFCommand: true, InvalidCommands: 2}}

	tests := []struct {
		stage, when string
		match       bool
	}{
		{"connect", "{client_ip: {cidr: 192.0.2.0/24}}", true},
		{"connect", "{client_ip: {cidr: [10.0.0.0/8, 2001:db8::/32]}}", false},
		{"connect", "{client_ip: {equals: 192.0.2.77}}", true},
		{"connect", "{client_ip: {in: [192.0.2.1, 192.0.2.77]}}", true},
		{"connect", "{client_ip: {exists: true}}", true},
		{"connect", "{early_talker: true}", false},
		{"connect", "{early_talker: false}", true},
		{"helo", "{helo: LocalHost}", true}, // equals is case-insensitive
		{"helo", "{helo: {contains: CALH}}", true},
		{"helo", "{helo: {starts_with: local}}", true},
		{"helo", "{helo: {ends_with: host}}", true},
		{"helo", "{helo: {matches: '^local'}}", true},
		{"helo", "{helo: {matches: '^LOCAL'}}", false}, // matches is RE2 as written
		{"helo", "{helo: {matches: '(?i)^LOCAL'}}", true},
		{"helo", "{helo: {in: [friend, localhost]}}", true},
		{"helo", "{helo: {in: {file: " + listFile + "}}}", true},
		{"helo", "{helo: {in: [friend]}}", false},
		{"helo", "{helo_fqdn: false}", true},
		{"helo", "{helo_is_ip: true}", false},
		{"helo", "{helo: {exists: false}}", false},
		{"mail", "{mail_from_domain: evil.test}", true},
		{"mail", "{mail_from_null: true}", false},
		{"rcpt", "{rcpt_domain: example.net}", true},
		{"rcpt", "{rcpt_count: {lt: 1}}", true},
		{"data", "{size: {gt: 4000, le: 5000}}", true},
		{"data", "{size: {gt: 5000}}", false},
		{"data", "{size: 5000}", true},
		{"data", "{subject: {contains: watches}}", true},
		{"data", "{subject_encoded: true}", true},
		{"data", "{subject_upper_ratio: {ge: 0.5}}", true},
		{"data", "{from_name: {contains: bank}}", true},
		{"data", "{from_domain: evil.test}", true},
		{"data", "{to_count: 2}", true},
		{"data", "{date_skew: {gt: 86400}}", true},
		{"data", "{date: {exists: false}}", true}, // no Date field in Header
		{"data", "{message_id_valid: true}", true},
		{"data", "{header: {name: x-mailer, matches: '^Bulk'}}", true},
		{"data", "{header: {name: X-Mailer}}", true},
		{"data", "{header: {name: X-Nope}}", false},
		{"data", "{content_type: application/octet-stream}", true},
		{"data", "{charset: koi8-r}", true},
		{"data", "{attachment_name: {matches: '(?i)\\.exe$'}}", true},
		{"data", "{mime_depth: {ge: 1}}", true},
		{"data", "{mime_malformed: true}", true},
		{"data", "{malformed: base64_invalid}", true},
		{"data", "{body: {contains: 'buy now'}}", true},
		{"data", "{url_domain: {ends_with: evil.test}}", true},
		{"data", "{all: [{helo: localhost}, {subject: {contains: cheap}}]}", true},
		{"data", "{all: [{helo: localhost}, {subject: {contains: nope}}]}", false},
		{"data", "{any: [{helo: other}, {subject: {contains: cheap}}]}", true},
		{"data", "{not: {helo: localhost}}", false},
		{"data", "{helo: localhost, from_domain: evil.test}", true}, // several keys: all
		{"connect", "{client_rdns: mail.example.org}", true},
		{"connect", "{client_fcrdns: true}", true},
		{"connect", "{tls: true}", true},
		{"helo", "{helo_matches_rdns: false}", true},
		{"helo", "{helo_matches_client_ip: false}", true},
		{"helo", "{helo_is_literal: false}", true},
		{"helo", "{esmtp: true}", true},
		{"helo", "{bare_lf_commands: true}", true},
		{"helo", "{invalid_commands: {ge: 2}}", true},
		{"helo", "{starttls_injection: false}", true},
		{"mail", "{mail_from: x@evil.test}", true},
		{"mail", "{mail_size: {gt: 1000}}", true},
		{"rcpt", "{rcpt: bob@example.net}", true},
		{"data", "{rcpt: bob@example.net}", true},
		{"data", "{bare_lf: true, bare_cr: true}", true},
		{"data", "{from: x@evil.test}", true},
		{"data", "{reply_to: r@reply.test, reply_to_domain: reply.test}", true},
		{"data", "{cc_count: 1}", true},
		{"data", "{from_name_mentions_rcpt_domain: false}", true},
		{"data", "{date_valid: true}", true},
		{"data", "{message_id: abc@evil.test}", true},
		{"data", "{received_count: 2}", true},
		{"data", "{user_agent: {starts_with: bulkmailer}}", true},
		{"data", "{header_count: 2}", true},
		{"data", "{attachment_type: application/octet-stream}", true},
		{"data", "{mime_parts: 3}", true},
		{"data", "{html: {contains: href}}", true},
		{"data", "{url: {starts_with: 'http://shop.'}}", true},
	}
	for _, tt := range tests {
		t.Run(tt.stage+" "+tt.when, func(t *testing.T) {
			set := mustParse(t, oneRule(tt.stage, tt.when))
			stage, _ := inspect.ParseStage(tt.stage)
			v := sc.run(t, set)[max(stage, inspect.StageRcpt)]
			if stage < inspect.StageRcpt {
				v = sc.run(t, set)[inspect.StageData] // carried to the data stage
			}
			if got := contains(v.Rules, "R"); got != tt.match {
				t.Fatalf("matched=%v, want %v (rules %v, trace %v)", got, tt.match, v.Rules, v.Trace)
			}
		})
	}
}

// A rules file with mistakes is refused whole, every mistake reported with
// file:line:column and the rule's name.
func TestValidation(t *testing.T) {
	tests := []struct{ name, src, want string }{
		{"unknown field", "rules:\n  - name: A\n    stage: data\n    when: {size: 1}\n    scor: 1\n", "test.yaml:5:5: rule A: unknown field \"scor\""},
		{"unknown top field", "rulez: []\n", "test.yaml:1:1: unknown field \"rulez\""},
		{"fact before its stage", "rules:\n  - name: B\n    stage: rcpt\n    when: {body: {contains: x}}\n    score: 1\n", "test.yaml:4:12: rule B: fact \"body\" is known only from the data stage on, and this rule runs at rcpt"},
		{"bad regex", "rules:\n  - name: C\n    stage: helo\n    when: {helo: {matches: 'a(b'}}\n    score: 1\n", "test.yaml:4:28: rule C: bad regular expression: missing closing ): `a(b`"},
		{"duplicate name", "rules:\n  - name: D\n    stage: helo\n    when: {helo: x}\n    score: 1\n  - name: D\n    stage: helo\n    when: {helo: y}\n    score: 1\n", "test.yaml:6:5: rule D: duplicate rule name (first defined at line 2)"},
		{"unknown list", "rules:\n  - name: E\n    stage: connect\n    when: {dnsbl: nolist}\n    score: 1\n", "test.yaml:4:19: rule E: unknown DNS list \"nolist\""},
		{"meta cycle", "rules:\n  - name: F\n    stage: data\n    when: {rule: G}\n    score: 1\n  - name: G\n    stage: data\n    when: {rule: F}\n    score: 1\n", "rule F: meta rules form a cycle: F -> G -> F"},
		{"meta unknown", "rules:\n  - name: H\n    stage: data\n    when: {rule: NOPE}\n    score: 1\n", "test.yaml:2:5: rule H: meta condition names unknown rule \"NOPE\""},
		{"meta later stage", "rules:\n  - name: I\n    stage: helo\n    when: {rule: J}\n    score: 1\n  - name: J\n    stage: data\n    when: {size: 1}\n    score: 1\n", "rule I: meta condition names rule \"J\" of the later data stage"},
		{"unknown fact", "rules:\n  - name: K\n    stage: data\n    when: {attachement_name: x}\n    score: 1\n", "test.yaml:4:12: rule K: unknown fact \"attachement_name\""},
		{"unknown operator", "rules:\n  - name: L\n    stage: data\n    when: {subject: {regex: x}}\n    score: 1\n", "test.yaml:4:22: rule L: unknown field \"regex\" in the operators of subject"},
		{"no stage", "rules:\n  - name: M\n    when: {size: 1}\n    score: 1\n", "test.yaml:2:5: rule M: a rule needs a stage"},
		{"bad stage", "rules:\n  - name: N\n    stage: later\n    when: {size: 1}\n    score: 1\n", "test.yaml:3:12: rule N: stage \"later\" is not connect"},
		{"no score or action", "rules:\n  - name: O\n    stage: data\n    when: {size: 1}\n", "rule O: a rule needs a score, an action, or both"},
		{"bad reply class", "rules:\n  - name: P\n    stage: data\n    when: {size: 1}\n    action: reject\n    reply: \"451 4.7.1 later\"\n", "test.yaml:6:12: rule P: reply \"451 4.7.1 later\" must be a 5xx reply here"},
		{"bool fact with operators", "rules:\n  - name: Q\n    stage: helo\n    when: {helo_is_ip: {equals: true}}\n    score: 1\n", "rule Q: helo_is_ip is true or false"},
		{"yaml syntax", "rules: [\n", "test.yaml:"},
		{"thresholds order", "thresholds: {tag: 10, reject: 5}\nrules: []\n", "tag (10) must be below reject (5)"},
		{"greylist at mail", "rules:\n  - name: R\n    stage: mail\n    when: {size: 1}\n    action: greylist\n", "test.yaml:5:13: rule R: action greylist needs stage rcpt or data, not mail"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("test.yaml", []byte(tt.src), Options{Lists: testLists})
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error:\n%v\nwant it to contain:\n%s", err, tt.want)
			}
			var es Errors
			if !errors.As(err, &es) || es[0].Line == 0 {
				t.Fatalf("error %v carries no position", err)
			}
		})
	}
}

// Scores add up over the stages; thresholds map them to actions; a tag
// carries SpamAssassin's headers and the subject prefix.
func TestScoresThresholdsAndTags(t *testing.T) {
	src := `
thresholds: {tag: 5, reject: 10}
tag: {subject_prefix: "[SPAM] ", clean_status_header: true}
rules:
  - {name: HELO_LOCAL, stage: helo, when: {helo: localhost}, score: 3}
  - {name: FROM_EVIL, stage: mail, when: {mail_from_domain: evil.test}, score: 2.5}
  - {name: CHEAP, stage: data, when: {subject: {contains: cheap}}, score: 1.8}
`
	set := mustParse(t, src)
	content := &inspect.Content{Subject: "cheap", Header: []inspect.HeaderField{{Name: "Subject", Value: "cheap", Decoded: "cheap"}}}
	v := session{helo: "localhost", from: "a@evil.test", content: content}.run(t, set)[inspect.StageData]
	if v.Action != inspect.Tag || v.Score != 7.3 {
		t.Fatalf("verdict %v score %v", v.Action, v.Score)
	}
	want := "Yes, score=7.3 required=5.0 tests=HELO_LOCAL,FROM_EVIL,CHEAP"
	if len(v.Headers) != 3 || v.Headers[0].Value != "YES" || v.Headers[1].Value != "7.3" || v.Headers[2].Value != want {
		t.Fatalf("headers %+v", v.Headers)
	}
	if v.SubjectPrefix != "[SPAM] " {
		t.Fatalf("subject prefix %q", v.SubjectPrefix)
	}
	// Below the tag threshold: X-Spam-Status: No, as configured.
	clean := session{helo: "mail.example.org", from: "a@evil.test", content: content}.run(t, set)[inspect.StageData]
	if clean.Action != inspect.Accept || len(clean.Headers) != 1 || clean.Headers[0].Value != "No, score=4.3 required=5.0 tests=FROM_EVIL,CHEAP" {
		t.Fatalf("clean verdict %v %+v", clean.Action, clean.Headers)
	}
}

// A reject carries the session ID in its text; per-rule replies win; an
// allowlist rule stops judging; shadow rules never act; monitor mode
// never refuses but reports what it would have done.
func TestActions(t *testing.T) {
	src := `
thresholds: {reject: 5}
replies: {reject: "550 5.7.1 Go away"}
rules:
  - {name: ALLOW_PARTNER, stage: connect, when: {client_ip: {cidr: 198.51.100.0/24}}, action: accept}
  - {name: BAD_HELO, stage: helo, when: {helo: localhost}, score: 6}
  - {name: NO_EXE, stage: data, when: {attachment_name: {matches: '\.exe$'}}, action: reject, reply: "550 5.7.1 No executables"}
  - {name: TRY_SHADOW, stage: mail, when: {mail_from_domain: evil.test}, action: reject, shadow: true}
`
	set := mustParse(t, src)
	v := session{helo: "localhost"}.run(t, set)[inspect.StageHelo]
	if v.Action != inspect.Reject || v.Reply.String() != "550 5.7.1 Go away (ref TESTID)" {
		t.Fatalf("threshold reject: %v %q", v.Action, v.Reply.String())
	}
	exe := &inspect.Content{Parts: []inspect.Part{{Filename: "x.exe"}}}
	v = session{content: exe}.run(t, set)[inspect.StageData]
	if v.Action != inspect.Reject || v.Reply.String() != "550 5.7.1 No executables (ref TESTID)" || v.Reason != "rule:NO_EXE" {
		t.Fatalf("rule reject: %v %q %s", v.Action, v.Reply.String(), v.Reason)
	}
	vs := session{client: "198.51.100.9", helo: "localhost", content: exe}.run(t, set)
	if vs[inspect.StageHelo].Action != inspect.Accept || vs[inspect.StageData].Action != inspect.Accept || vs[inspect.StageData].Reason != "allowlisted" {
		t.Fatalf("allowlisted session judged: %+v", vs)
	}
	v = session{from: "a@evil.test"}.run(t, set)[inspect.StageMail]
	if v.Action != inspect.Accept || len(v.Trace) != 1 || !strings.HasPrefix(v.Trace[0], "shadow TRY_SHADOW") {
		t.Fatalf("shadow rule acted: %v %v", v.Action, v.Trace)
	}

	mon, err := Parse("test.yaml", []byte(src), Options{Lists: testLists, Mode: "monitor"})
	if err != nil {
		t.Fatal(err)
	}
	v = session{helo: "localhost"}.run(t, mon)[inspect.StageHelo]
	if v.Action != inspect.Accept || v.WouldBe != inspect.Reject {
		t.Fatalf("monitor mode: action %v would_be %v", v.Action, v.WouldBe)
	}
}

// Action greylist asks the engine (Verdict.Greylist) and leaves the
// action to it; a reject or a threshold refusal wins over it; monitor
// mode never asks.
func TestGreylistAction(t *testing.T) {
	src := `
thresholds: {reject: 5}
rules:
  - {name: GREY, stage: data, when: {size: {gt: 0}}, action: greylist}
  - {name: NO_EXE, stage: data, when: {attachment_name: {matches: '\.exe$'}}, action: reject}
`
	set := mustParse(t, src)
	if !set.Greylists() {
		t.Error("Greylists() is false")
	}
	if mustParse(t, "rules:\n  - {name: A, stage: data, when: {size: 1}, score: 1}\n").Greylists() {
		t.Error("Greylists() without a greylist rule")
	}
	v := session{content: &inspect.Content{}, size: 10}.run(t, set)[inspect.StageData]
	if !v.Greylist || v.Action != inspect.Accept || v.Reason != "rule:GREY" {
		t.Fatalf("greylist: %+v", v)
	}
	exe := &inspect.Content{Parts: []inspect.Part{{Filename: "x.exe"}}}
	v = session{content: exe, size: 10}.run(t, set)[inspect.StageData]
	if v.Greylist || v.Action != inspect.Reject {
		t.Fatalf("reject over greylist: %v greylist %v", v.Action, v.Greylist)
	}
	mon, err := Parse("test.yaml", []byte(src), Options{Lists: testLists, Mode: "monitor"})
	if err != nil {
		t.Fatal(err)
	}
	if v := (session{content: &inspect.Content{}, size: 10}).run(t, mon)[inspect.StageData]; v.Greylist {
		t.Fatal("monitor mode asked for greylisting")
	}
}

// DNS list conditions: listed, reasons, weights as scores, and what a
// failed lookup does under each on_error.
func TestDNSBLConditions(t *testing.T) {
	answers := fakeAnswers{
		"192.0.2.66": {{List: "zen", Key: "192.0.2.66", Listed: true, Reasons: []string{"xbl"}, Weight: 6, Text: "listed (xbl)"}},
		"192.0.2.99": {{List: "zen", Key: "192.0.2.99", Err: errors.New("timeout"), ErrKind: "timeout"}},
		"evil.test":  {{List: "dbl", Key: "evil.test", Listed: true, Reasons: []string{"spam"}, Weight: 3}},
		"link.test":  {{List: "uribl", Key: "link.test", Listed: true, Reasons: []string{"black"}, Weight: 5}},
	}
	src := `
rules:
  - {name: ZEN, stage: connect, when: {dnsbl: zen}}
  - {name: ZEN_XBL, stage: connect, when: {dnsbl: {list: zen, reason: xbl, weight: {ge: 6}}}, score: 1}
  - {name: ZEN_SBL, stage: connect, when: {dnsbl: {list: zen, reason: sbl}}, score: 1}
  - {name: NOT_ZEN_ACCEPT, stage: connect, when: {not: {dnsbl: zen}}, score: 1, on_error: accept}
  - {name: NOT_ZEN_SKIP, stage: connect, when: {not: {dnsbl: zen}}, score: 1}
  - {name: DBL_SENDER, stage: mail, when: {dnsbl: dbl}, score: 2}
  - {name: URIBL, stage: data, when: {dnsbl: uribl}, score: 2}
`
	set := mustParse(t, src)
	v := session{client: "192.0.2.66", answers: answers}.run(t, set)[inspect.StageConnect]
	if got := strings.Join(v.Rules, ","); got != "ZEN,ZEN_XBL" || v.Score != 7 {
		t.Fatalf("listed client: rules %s score %v", got, v.Score)
	}
	v = session{client: "192.0.2.99", answers: answers}.run(t, set)[inspect.StageConnect]
	if got := strings.Join(v.Rules, ","); got != "NOT_ZEN_ACCEPT" || v.Action != inspect.Accept {
		t.Fatalf("failed lookup: rules %s action %v trace %v", got, v.Action, v.Trace)
	}
	tf := mustParse(t, "rules:\n  - {name: Z, stage: connect, when: {dnsbl: zen}, score: 1, on_error: tempfail}\n")
	v = session{client: "192.0.2.99", answers: answers}.run(t, tf)[inspect.StageConnect]
	if v.Action != inspect.Tempfail || !strings.HasPrefix(v.Reply.String(), "451 4.4.3") {
		t.Fatalf("on_error tempfail: %v %q", v.Action, v.Reply.String())
	}
	content := &inspect.Content{URLs: []inspect.URL{{Raw: "http://link.test/", Host: "link.test"}}}
	vs := session{from: "x@evil.test", content: content, answers: answers}.run(t, set)
	if !contains(vs[inspect.StageMail].Rules, "DBL_SENDER") || !contains(vs[inspect.StageData].Rules, "URIBL") {
		t.Fatalf("domain/uri lists: %v / %v", vs[inspect.StageMail].Rules, vs[inspect.StageData].Rules)
	}
}

// Meta rules see the rules of earlier stages and of their own.
func TestMetaRules(t *testing.T) {
	set := mustParse(t, `
rules:
  - {name: M, stage: data, when: {all: [{rule: A}, {not: {rule: B}}]}, score: 4}
  - {name: A, stage: helo, when: {helo: localhost}, score: 1}
  - {name: B, stage: data, when: {size: {gt: 100}}, score: 1}
`)
	if v := (session{helo: "localhost", size: 10}).run(t, set)[inspect.StageData]; !contains(v.Rules, "M") {
		t.Fatalf("meta did not match: %v", v.Rules)
	}
	if v := (session{helo: "localhost", size: 1000}).run(t, set)[inspect.StageData]; contains(v.Rules, "M") {
		t.Fatalf("meta matched with B: %v", v.Rules)
	}
}

// The rDNS facts: no name, a name that does not resolve back, and a
// failed lookup, which leaves the rule unknown (skipped by default).
func TestRDNSFacts(t *testing.T) {
	set := mustParse(t, `
rules:
  - {name: NO_RDNS, stage: connect, when: {client_rdns: {exists: false}}, score: 1}
  - {name: NOT_FCRDNS, stage: connect, when: {all: [{client_rdns: {exists: true}}, {client_fcrdns: false}]}, score: 1}
`)
	for _, tt := range []struct{ client, want string }{
		{"192.0.2.77", ""}, {"192.0.2.1", "NO_RDNS"}, {"192.0.2.88", "NOT_FCRDNS"}, {"192.0.2.99", ""},
	} {
		v := session{client: tt.client}.run(t, set)[inspect.StageConnect]
		if got := strings.Join(v.Rules, ","); got != tt.want {
			t.Errorf("client %s: rules %q, want %q (trace %v)", tt.client, got, tt.want, v.Trace)
		}
	}
}

// A data-stage meta rule may name a rcpt-stage rule (README: "at this
// stage or an earlier one"). It used to load and never match, because
// recipients' results were not kept. It matches when the rule matched
// for a recipient the transaction accepted, and only then.
func TestMetaRuleNamesRcptRule(t *testing.T) {
	set := mustParse(t, `
rules:
  - {name: RCPT_POSTMASTER, stage: rcpt, when: {rcpt: postmaster@example.net}, score: 0.1}
  - {name: TO_POSTMASTER, stage: data, when: {rule: RCPT_POSTMASTER}, score: 2}
  - {name: RCPT_REFUSED, stage: rcpt, when: {rcpt: nobody@example.net}, action: reject}
  - {name: TO_REFUSED, stage: data, when: {rule: RCPT_REFUSED}, score: 2}
`)
	v := session{rcpts: []string{"bob@example.net", "postmaster@example.net", "nobody@example.net"}}.run(t, set)[inspect.StageData]
	if !contains(v.Rules, "TO_POSTMASTER") {
		t.Errorf("data meta rule on an accepted recipient's rule did not match: rules %v, trace %v", v.Rules, v.Trace)
	}
	if contains(v.Rules, "TO_REFUSED") {
		t.Errorf("data meta rule matched a refused recipient's rule: rules %v", v.Rules)
	}
	if v.Score != 2 {
		t.Errorf("score %v, want 2 (recipient scores are not carried into data)", v.Score)
	}
	none := session{rcpts: []string{"bob@example.net"}}.run(t, set)[inspect.StageData]
	if contains(none.Rules, "TO_POSTMASTER") {
		t.Errorf("meta rule matched without the recipient: %v", none.Rules)
	}
}

// A stage judged again (EHLO after STARTTLS or RSET) replaces its earlier
// result: the helo rules count once, whatever the number of EHLOs.
func TestStageRunAgainReplacesItsResult(t *testing.T) {
	set := mustParse(t, `
thresholds: {tag: 2}
rules:
  - {name: HELO_LOCAL, stage: helo, when: {helo: localhost}, score: 3}
  - {name: HELO_OK, stage: helo, when: {helo: mail.example.org}, action: accept}
`)
	e, err := inspect.New(inspect.Config{Judge: set})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s := &inspect.Session{ID: "T", Client: netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), 1)}
	defer e.End(s)
	s.Keep(inspect.StageConnect, e.Connect(ctx, s))
	var v inspect.Verdict
	for i := 0; i < 3; i++ {
		s.HeloVerb, s.Helo = "EHLO", "localhost"
		v = e.Helo(ctx, s)
		s.Keep(inspect.StageHelo, v)
	}
	if v.Score != 3 || strings.Join(v.Rules, ",") != "HELO_LOCAL" {
		t.Fatalf("after three EHLOs: score %v rules %v, want 3 [HELO_LOCAL]", v.Score, v.Rules)
	}
	tx := &inspect.Transaction{}
	mv := e.Mail(ctx, s, tx)
	if mv.Score != 3 || len(mv.Rules) != 1 {
		t.Fatalf("mail stage builds on score %v rules %v, want 3 [HELO_LOCAL]", mv.Score, mv.Rules)
	}
	// An allowlisting EHLO, then a plain one: the allowlist of the
	// first does not outlive it.
	s.HeloVerb, s.Helo = "EHLO", "mail.example.org"
	v = e.Helo(ctx, s)
	s.Keep(inspect.StageHelo, v)
	if !s.HeloResult.Allowlisted {
		t.Fatalf("allowlist rule did not allowlist: %+v", v)
	}
	s.HeloVerb, s.Helo = "EHLO", "localhost"
	v = e.Helo(ctx, s)
	s.Keep(inspect.StageHelo, v)
	if s.HeloResult.Allowlisted || v.Score != 3 {
		t.Fatalf("second EHLO kept the first's allowlist: %+v", s.HeloResult)
	}
}

// countingLists records every lookup the engine starts.
type countingLists struct {
	mu   sync.Mutex
	keys []string
}

func (c *countingLists) Lookup(ctx context.Context, kind inspect.ListKind, key string) func(context.Context) []inspect.ListResult {
	c.mu.Lock()
	c.keys = append(c.keys, key)
	c.mu.Unlock()
	return func(context.Context) []inspect.ListResult {
		return []inspect.ListResult{{List: "dbl", Key: key, Listed: true, Weight: 1, Text: "listed"}}
	}
}

// The lookup the engine starts as soon as a domain is known is the one
// the rules wait for: the domain is spelt one way (lower case, no
// trailing dot) in both places, so a HELO of "MX.Example.ORG." costs one
// query, not one early and a second when the rule asks.
func TestListLookupStartedEarlyIsReused(t *testing.T) {
	set := mustParse(t, `
rules:
  - {name: HELO_DBL, stage: helo, when: {dnsbl: {list: dbl, on: helo}}, score: 1}
  - {name: FROM_DBL, stage: mail, when: {dnsbl: {list: dbl, on: mail_from}}, score: 1}
  - {name: HDR_DBL, stage: data, when: {dnsbl: {list: dbl, on: from}}, score: 1}
`)
	lists := &countingLists{}
	e, err := inspect.New(inspect.Config{Judge: set, Blocklists: lists})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s := &inspect.Session{ID: "T", Client: netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), 1)}
	defer e.End(s)
	s.Keep(inspect.StageConnect, e.Connect(ctx, s))
	s.HeloVerb, s.Helo = "EHLO", "MX.Example.ORG."
	hv := e.Helo(ctx, s)
	s.Keep(inspect.StageHelo, hv)
	from, _, _ := smtp.ParseMailArg("FROM:<a@Sender.EXAMPLE>")
	tx := &inspect.Transaction{From: from}
	mv := e.Mail(ctx, s, tx)
	c := &inspect.Content{From: []inspect.Address{{Addr: "a@sender.example", Domain: "sender.example"}}}
	dv := e.DataWithContent(ctx, s, tx, &inspect.Message{}, c)
	if !contains(hv.Rules, "HELO_DBL") || !contains(mv.Rules, "FROM_DBL") || !contains(dv.Rules, "HDR_DBL") {
		t.Fatalf("rules did not see the lookups: helo %v mail %v data %v", hv.Rules, mv.Rules, dv.Rules)
	}
	want := []string{"192.0.2.1", "mx.example.org", "sender.example"}
	if strings.Join(lists.keys, " ") != strings.Join(want, " ") {
		t.Fatalf("lookups %q, want each key once: %q", lists.keys, want)
	}
}

// Thresholds lists what the file sets, tag to reject, and nothing else.
func TestThresholds(t *testing.T) {
	for _, tc := range []struct {
		src  string
		want []Threshold
	}{
		{"thresholds: {reject: 10, tag: 5}\nrules: []\n", []Threshold{{"tag", 5}, {"reject", 10}}},
		{"thresholds: {tag: 2, tempfail: 3, reject: 4.5}\nrules: []\n", []Threshold{{"tag", 2}, {"tempfail", 3}, {"reject", 4.5}}},
		{"rules: []\n", nil},
	} {
		if got := mustParse(t, tc.src).Thresholds(); !slices.Equal(got, tc.want) {
			t.Errorf("%q: %v, want %v", tc.src, got, tc.want)
		}
	}
}

// Input without a header field is not judged; a message is.
func TestJudgeMessageNotAMessage(t *testing.T) {
	set := mustParse(t, "thresholds: {tag: 5}\nrules:\n  - {name: CHEAP, stage: data, when: {subject: {contains: cheap}}, score: 6}\n")
	for _, in := range []string{"", "Hello world\r\nsecond line\r\n", "\x00\x01binary"} {
		if j := set.JudgeMessage("x", []byte(in)); j.Error != ErrNotMessage || j.Action != "" {
			t.Errorf("%q: %+v, want not judged", in, j)
		}
	}
	if j := set.JudgeMessage("m", []byte("Subject: cheap\r\n\r\nbody\r\n")); j.Error != "" || j.Action != "tag" || j.Score != 6 {
		t.Errorf("message: %+v, want tag 6", j)
	}
}
