package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"moat/internal/nsdtest"
)

// moat auth check answers "why was my mail refused?" from the real DNS:
// a p=reject spoof shows the SPF fail with the record that decided it,
// the DMARC record, the refusal moat would give, and exits 1; a
// dkimpy-signed message from its own domain passes and exits 0.
func TestAuthCheckCommand(t *testing.T) {
	dir := t.TempDir()
	keyFile, pub := dkimKeyPair(t, dir)
	dns := nsdtest.Start(t, authZones(pub))
	spoof := filepath.Join(dir, "spoof.eml")
	os.WriteFile(spoof, authMessage("The CEO <ceo@strict.test>", "wire the money"), 0o644)
	code, out, errOut := runMoat(t, "auth", "check", "--resolver", dns.Addr, "--ip", "127.0.0.1",
		"--helo", "client.pass.test", "--mail-from", "ceo@strict.test", spoof)
	if code != 1 {
		t.Errorf("spoof: exit %d, want 1\n%s%s", code, out, errOut)
	}
	for _, want := range []string{
		"SPF (MAIL FROM)", "fail", "strict.test", `"v=spf1 ip4:192.0.2.1 -all"`,
		"DMARC", "_dmarc.strict.test", `"v=DMARC1; p=reject"`, "policy reject",
		"Authentication-Results: ", "spf=fail", "dmarc=fail",
		"moat would: reject", "DMARC_REJECT", "reply: 550 5.7.1",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("spoof: output lacks %q:\n%s", want, out)
		}
	}

	good := filepath.Join(dir, "good.eml")
	os.WriteFile(good, dkimpySign(t, keyFile, "sel", "pass.test", authMessage("alice@pass.test", "hello")), 0o644)
	code, out, errOut = runMoat(t, "auth", "check", "--resolver", dns.Addr, "--ip", "127.0.0.1",
		"--helo", "client.pass.test", "--mail-from", "alice@pass.test", "--format", "json", good)
	if code != 0 {
		t.Fatalf("signed message: exit %d\n%s%s", code, out, errOut)
	}
	var o struct {
		Results struct {
			SPF  struct{ Result string }
			DKIM []struct {
				Result, Domain, Selector, Algorithm string
				Lookups                             []struct{ Name string }
			}
			DMARC struct{ Result, Policy string }
		}
		Action string
	}
	if err := json.Unmarshal([]byte(out), &o); err != nil {
		t.Fatalf("json: %v\n%s", err, out)
	}
	r := o.Results
	if r.SPF.Result != "pass" || len(r.DKIM) != 1 || r.DKIM[0].Result != "pass" || r.DKIM[0].Domain != "pass.test" ||
		r.DKIM[0].Selector != "sel" || r.DKIM[0].Algorithm != "rsa-sha256" || r.DMARC.Result != "pass" || r.DMARC.Policy != "reject" {
		t.Errorf("signed message: %+v", o)
	}
	if len(r.DKIM) == 1 && (len(r.DKIM[0].Lookups) == 0 || r.DKIM[0].Lookups[0].Name != "sel._domainkey.pass.test") {
		t.Errorf("the DKIM key lookup is not shown: %+v", r.DKIM[0].Lookups)
	}
	if o.Action != "accept" {
		t.Errorf("signed message: action %s", o.Action)
	}

	// Usage errors exit 2 with a message.
	if code, _, errOut := runMoat(t, "auth", "check", "--ip", "nope", "--helo", "x", good); code != 2 || !strings.Contains(errOut, "--ip") {
		t.Errorf("bad --ip: exit %d: %s", code, errOut)
	}
}
