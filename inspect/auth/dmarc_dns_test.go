package auth

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"moat/internal/nsdtest"
)

// TestDMARCRealDNS publishes policies in a real NSD on loopback and
// checks them through wireDNS: pass, fail, none, the
// organizational-domain fallback with sp=, and an answer too big for UDP.
func TestDMARCRealDNS(t *testing.T) {
	filler := make([]string, 0, 20)
	for i := 0; i < 20; i++ {
		filler = append(filler, "_dmarc.big TXT "+nsdtest.TXT(fmt.Sprintf("filler-%02d-", i)+strings.Repeat("x", 240)))
	}
	srv := nsdtest.Start(t, map[string][]string{
		"example.test": append([]string{
			`_dmarc TXT "v=DMARC1; p=reject; sp=quarantine"`,
			`_dmarc.own TXT "v=DMARC1; p=none"`,
			`_dmarc.big TXT "v=DMARC1; p=reject; adkim=s"`,
			`_dmarc.split TXT "v=DMARC1; " "p=reject"`,
			`_dmarc.two TXT "v=DMARC1; p=reject"`,
			`_dmarc.two TXT "v=DMARC1; p=none"`,
			`_dmarc.nodata A 192.0.2.1`,
		}, filler...),
		"other.test": {`@ TXT "v=spf1 -all"`},
	})
	r := wireDNS{addr: srv.Addr}
	ctx := context.Background()

	// The filler makes the answer at _dmarc.big larger than 4096 bytes.
	m := new(dns.Msg)
	m.SetQuestion("_dmarc.big.example.test.", dns.TypeTXT)
	m.SetEdns0(4096, false)
	if in, _, err := (&dns.Client{Timeout: 2 * time.Second}).Exchange(m, srv.Addr); err != nil || !in.Truncated {
		t.Fatalf("the big answer is not truncated over UDP (err %v)", err)
	}

	tests := []struct {
		name    string
		in      DMARCInput
		result  Result
		policy  string
		lookups int
	}{
		{"pass", DMARCInput{From: []string{"a@example.test"}, DKIM: []DKIMResult{dmarcDKIM(Pass, "example.test")}}, Pass, "reject", 1},
		{"fail", DMARCInput{From: []string{"a@example.test"}, SPF: dmarcSPF(Pass, "other.test")}, Fail, "reject", 1},
		{"none: no record", DMARCInput{From: []string{"a@other.test"}, SPF: dmarcSPF(Pass, "other.test")}, None, "", 1},
		{"temperror: REFUSED for a zone the server does not serve", DMARCInput{From: []string{"a@nowhere.test"}}, TempError, "", 1},
		{"NODATA falls back to the org domain", DMARCInput{From: []string{"a@nodata.example.test"}}, Fail, "quarantine", 2},
		{"org-domain fallback with sp=", DMARCInput{From: []string{"a@mail.example.test"}, SPF: dmarcSPF(Pass, "example.test")}, Pass, "quarantine", 2},
		{"org-domain fallback, fail", DMARCInput{From: []string{"a@deep.mail.example.test"}}, Fail, "quarantine", 2},
		{"own record", DMARCInput{From: []string{"a@own.example.test"}}, Fail, "none", 1},
		{"record split in strings", DMARCInput{From: []string{"a@split.example.test"}}, Fail, "reject", 1},
		{"two records: none", DMARCInput{From: []string{"a@two.example.test"}}, None, "", 1},
		{"truncated answer over TCP", DMARCInput{From: []string{"a@big.example.test"}, DKIM: []DKIMResult{dmarcDKIM(Pass, "example.test")}}, Fail, "reject", 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := CheckDMARC(ctx, r, tc.in, DMARCOptions{})
			if got.Result != tc.result || got.Policy != tc.policy || len(got.Lookups) != tc.lookups {
				t.Errorf("got %s policy %q with %d lookups (%s), want %s policy %q with %d lookups",
					got.Result, got.Policy, len(got.Lookups), got.Reason, tc.result, tc.policy, tc.lookups)
			}
		})
	}
}
