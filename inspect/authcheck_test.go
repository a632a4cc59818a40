package inspect_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"moat/inspect"
	"moat/inspect/auth"
	"moat/inspect/smtp"
	"moat/rules"
)

// zoneResolver answers from a map of TXT records; every other question
// is "not found", and a name in fail gets a temporary failure.
type zoneResolver struct {
	txt  map[string][]string
	fail bool // every lookup fails, as against a capture that did not record it
}

var errTemp = errors.New("REFUSED")

func (z zoneResolver) LookupTXT(_ context.Context, name string) ([]string, error) {
	if z.fail {
		return nil, errTemp
	}
	if t, ok := z.txt[strings.TrimSuffix(strings.ToLower(name), ".")]; ok {
		return t, nil
	}
	return nil, auth.NotFound{Name: name}
}
func (z zoneResolver) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	if z.fail {
		return nil, errTemp
	}
	return nil, auth.NotFound{Name: name}
}
func (z zoneResolver) LookupIP(_ context.Context, name string) ([]netip.Addr, error) {
	if z.fail {
		return nil, errTemp
	}
	return nil, auth.NotFound{Name: name}
}
func (z zoneResolver) LookupPTR(_ context.Context, ip netip.Addr) ([]string, error) {
	if z.fail {
		return nil, errTemp
	}
	return nil, auth.NotFound{Name: ip.String()}
}

const authRules = `
rules:
  - {name: DMARC_REJECT, stage: data, when: {dmarc_action: reject}, action: reject, reply: "550 5.7.1 DMARC"}
  - {name: SPF_FAIL, stage: mail, when: {spf: fail}, score: 3}
  - {name: DMARC_FAIL_ANY, stage: data, when: {dmarc: fail}, score: 1}
`

// judge runs one message from 192.0.2.1 through an engine with sender
// authentication on r.
func judge(t *testing.T, r auth.Resolver, recorded bool, dmarc string, msg string) inspect.Verdict {
	t.Helper()
	set, err := rules.Parse("t.yaml", []byte(authRules), rules.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e, err := inspect.New(inspect.Config{Judge: set, Auth: &inspect.AuthConfig{
		Resolver: r, AuthservID: "mx.moat.test", Recorded: recorded, DMARC: dmarc}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s := &inspect.Session{ID: "t", Client: netip.MustParseAddrPort("192.0.2.1:4000"), HeloVerb: "EHLO", Helo: "mail.spoof.test"}
	defer e.End(s)
	s.Keep(inspect.StageConnect, e.Connect(ctx, s))
	s.Keep(inspect.StageHelo, e.Helo(ctx, s))
	tx := &inspect.Transaction{From: smtp.Path{Local: "ceo", Domain: "strict.test"}}
	tx.Keep(inspect.StageMail, e.Mail(ctx, s, tx))
	body := []byte(strings.ReplaceAll(msg, "\n", "\r\n"))
	w := e.MessageWriter(s, tx)
	for i := 0; i < len(body); i += 7 { // as a front end writes it: in pieces
		w.Write(body[i:min(i+7, len(body))])
	}
	return e.Data(ctx, s, tx, &inspect.Message{Size: int64(len(body)), Body: bytes.NewReader(body)})
}

var strictZone = map[string][]string{
	"strict.test":        {"v=spf1 ip4:198.51.100.1 -all"},
	"_dmarc.strict.test": {"v=DMARC1; p=reject"},
}

const spoof = "Authentication-Results: mx.moat.test; dmarc=pass\nFrom: The CEO <ceo@strict.test>\nSubject: wire the money\n\nNow.\n"

// A spoof of a p=reject domain is refused at data with the rule's reply;
// the forged Authentication-Results field with moat's id is marked for
// removal and moat's own is added.
func TestEngineAuthRejectsSpoof(t *testing.T) {
	v := judge(t, zoneResolver{txt: strictZone}, false, inspect.DMARCReject, spoof)
	if v.Auth == nil || v.Auth.SPF.Result != auth.Fail || v.Auth.DMARC.Result != auth.Fail || v.Auth.DMARC.Policy != "reject" {
		t.Fatalf("auth results: %+v", v.Auth)
	}
	if v.Action != inspect.Reject || v.Reply.Code != 550 {
		t.Errorf("verdict %v %v, want reject 550 (rules %v)", v.Action, v.Reply, v.Rules)
	}
	if len(v.DropHeaders) != 1 || v.DropHeaders[0].Start != 0 || v.DropHeaders[0].End != int64(len("Authentication-Results: mx.moat.test; dmarc=pass\r\n")) {
		t.Errorf("the forged field is not marked for removal: %+v", v.DropHeaders)
	}
	if len(v.Headers) == 0 || v.Headers[0].Name != "Authentication-Results" ||
		!strings.HasPrefix(v.Headers[0].Value, "mx.moat.test;") || !strings.Contains(v.Headers[0].Value, "dmarc=fail") {
		t.Errorf("moat's Authentication-Results: %+v", v.Headers)
	}
	// monitor: the same results, no refusal.
	if v := judge(t, zoneResolver{txt: strictZone}, false, inspect.DMARCMonitor, spoof); v.Action == inspect.Reject {
		t.Errorf("auth.dmarc monitor rejected: %v", v.Rules)
	}
	// quarantine: p=reject is only tagged.
	if v := judge(t, zoneResolver{txt: strictZone}, false, inspect.DMARCQuarantine, spoof); v.Action == inspect.Reject {
		t.Errorf("auth.dmarc quarantine rejected: %v", v.Rules)
	}
}

// Offline, an answer the capture did not record makes every check
// unknown — never fail — and no rule over them fires. Live, the same
// failures are temperror.
func TestEngineAuthUnrecordedIsUnknown(t *testing.T) {
	v := judge(t, zoneResolver{fail: true}, true, inspect.DMARCReject, spoof)
	if v.Auth == nil {
		t.Fatal("no auth results")
	}
	if v.Auth.SPF.Result != auth.Unknown || v.Auth.DMARC.Result != auth.Unknown {
		t.Errorf("recorded mode: spf %s dmarc %s, want unknown", v.Auth.SPF.Result, v.Auth.DMARC.Result)
	}
	if v.Action != inspect.Accept || len(v.Rules) != 0 {
		t.Errorf("rules fired on unknown results: %v %v", v.Action, v.Rules)
	}
	if strings.Contains(v.Headers[0].Value, "spf=") || strings.Contains(v.Headers[0].Value, "dmarc=") {
		t.Errorf("unknown results written into Authentication-Results: %s", v.Headers[0].Value)
	}
	v = judge(t, zoneResolver{fail: true}, false, inspect.DMARCReject, spoof)
	if v.Auth.SPF.Result != auth.TempError || v.Auth.DMARC.Result != auth.TempError {
		t.Errorf("live: spf %s dmarc %s, want temperror", v.Auth.SPF.Result, v.Auth.DMARC.Result)
	}
}

// An authenticated submission is not verified (no SPF, DKIM, DMARC, no
// Authentication-Results of moat's), but a field forged with moat's
// authserv-id is still marked for removal; another server's stays.
func TestEngineAuthAuthenticatedForgery(t *testing.T) {
	set, err := rules.Parse("t.yaml", []byte(authRules), rules.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e, err := inspect.New(inspect.Config{Judge: set, Auth: &inspect.AuthConfig{
		Resolver: zoneResolver{txt: strictZone}, AuthservID: "mx.moat.test", DMARC: inspect.DMARCReject}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s := &inspect.Session{ID: "t", Client: netip.MustParseAddrPort("192.0.2.1:4000"), HeloVerb: "EHLO", Helo: "laptop",
		Submission: true, AuthUser: "ceo"}
	defer e.End(s)
	tx := &inspect.Transaction{From: smtp.Path{Local: "ceo", Domain: "strict.test"}}
	tx.Keep(inspect.StageMail, e.Mail(ctx, s, tx))
	other := "Authentication-Results: mx.elsewhere.test; spf=pass\r\n"
	forged := "Authentication-Results: mx.moat.test;\r\n  dkim=pass header.d=bank.example\r\n"
	body := []byte(other + forged + "From: The CEO <ceo@strict.test>\r\nSubject: hi\r\n\r\nAuthentication-Results: mx.moat.test; in the body\r\n")
	if w := e.MessageWriter(s, tx); w != nil {
		t.Fatal("an authenticated message is streamed to the verifiers")
	}
	v := e.Data(ctx, s, tx, &inspect.Message{Size: int64(len(body)), Body: bytes.NewReader(body)})
	if v.Auth != nil || v.Action == inspect.Reject {
		t.Fatalf("an authenticated message was checked: auth %+v, action %v", v.Auth, v.Action)
	}
	start := int64(len(other))
	if len(v.DropHeaders) != 1 || v.DropHeaders[0].Start != start || v.DropHeaders[0].End != start+int64(len(forged)) {
		t.Errorf("drop %+v, want only the forged field [%d,%d)", v.DropHeaders, start, start+int64(len(forged)))
	}
	for _, h := range v.Headers {
		if h.Name == "Authentication-Results" {
			t.Errorf("moat added %s: %s to an authenticated message", h.Name, h.Value)
		}
	}
}
