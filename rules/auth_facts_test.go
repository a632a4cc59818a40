package rules

import (
	"strings"
	"testing"

	"moat/inspect"
	"moat/inspect/auth"
)

// The dkim condition: any signature by default, every one with all,
// narrowed by d=, s= and a=; "none" for an unsigned message; unknown
// (the rule skipped) when a signature could not be checked offline and
// nothing else decides, and when sender authentication did not run.
func TestDKIMCondition(t *testing.T) {
	set := mustParse(t, `
rules:
  - {name: ANY_PASS, stage: data, when: {dkim: pass}, score: 1}
  - {name: ALL_PASS, stage: data, when: {dkim: {result: pass, all: true}}, score: 1}
  - {name: BANK_PASS, stage: data, when: {dkim: {result: pass, domain: Bank.Example.}}, score: 1}
  - {name: ED_PASS, stage: data, when: {dkim: {result: pass, selector: ed, algorithm: ed25519-sha256}}, score: 1}
  - {name: UNSIGNED, stage: data, when: {dkim: none}, score: 1}
  - {name: NOT_PASS, stage: data, when: {not: {dkim: pass}}, score: 1}
  - {name: SPF_FAIL, stage: data, when: {spf: fail}, score: 1}
  - {name: DMARC_NONE, stage: data, when: {dmarc: none}, score: 1}
`)
	sig := func(r auth.Result, d, s, a string) auth.DKIMResult {
		return auth.DKIMResult{Result: r, Domain: d, Selector: s, Algorithm: a}
	}
	for _, c := range []struct {
		name string
		auth *auth.Results
		want string
	}{
		{"two pass", &auth.Results{SPF: auth.SPFResult{Result: auth.Pass}, DMARC: auth.DMARCResult{Result: auth.None},
			DKIM: []auth.DKIMResult{sig(auth.Pass, "bank.example", "rsa", "rsa-sha256"), sig(auth.Pass, "esp.example", "ed", "ed25519-sha256")}},
			"ANY_PASS,ALL_PASS,BANK_PASS,ED_PASS,DMARC_NONE"},
		{"one fails", &auth.Results{SPF: auth.SPFResult{Result: auth.Fail}, DMARC: auth.DMARCResult{Result: auth.Fail},
			DKIM: []auth.DKIMResult{sig(auth.Fail, "bank.example", "rsa", "rsa-sha256"), sig(auth.Pass, "esp.example", "rsa", "rsa-sha256")}},
			"ANY_PASS,SPF_FAIL"},
		{"unsigned", &auth.Results{SPF: auth.SPFResult{Result: auth.None}, DMARC: auth.DMARCResult{Result: auth.None}},
			"UNSIGNED,NOT_PASS,DMARC_NONE"},
		{"unknown offline", &auth.Results{SPF: auth.SPFResult{Result: auth.Unknown}, DMARC: auth.DMARCResult{Result: auth.Unknown},
			DKIM: []auth.DKIMResult{sig(auth.Unknown, "bank.example", "rsa", "rsa-sha256")}},
			""},
		{"not configured", nil, ""},
	} {
		f := &inspect.Facts{Session: &inspect.Session{}, Tx: &inspect.Transaction{}, Message: &inspect.Message{}, Auth: c.auth}
		v := set.Evaluate(inspect.StageData, f)
		if got := strings.Join(v.Rules, ","); got != c.want {
			t.Errorf("%s: rules %q, want %q", c.name, got, c.want)
		}
	}
	for _, bad := range []string{"{dkim: passed}", "{dkim: {domain: x.example}}", "{dkim: {result: pass, all: maybe}}", "{dkim: {result: pass, key: 1}}"} {
		_, err := Parse("t.yaml", []byte("rules:\n  - {name: X, stage: data, when: "+bad+", score: 1}\n"), Options{})
		if err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
	if _, err := Parse("t.yaml", []byte("rules:\n  - {name: X, stage: mail, when: {dkim: pass}, score: 1}\n"), Options{}); err == nil ||
		!strings.Contains(err.Error(), "data stage") {
		t.Errorf("dkim at mail: %v", err)
	}
}
