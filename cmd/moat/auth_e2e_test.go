package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"moat/internal/nsdtest"
	"moat/internal/postfixtest"
)

// authZones are the DNS of the sender-authentication tests: pass.test
// authorises loopback by SPF, signs with DKIM and publishes p=reject;
// strict.test authorises nobody here and publishes p=reject (a spoof of
// it must be refused); soft.test softfails and asks for quarantine.
func authZones(dkimKey string) map[string][]string {
	return map[string][]string{
		"pass.test": {
			`@ TXT "v=spf1 ip4:127.0.0.0/8 -all"`,
			`sel._domainkey TXT ` + nsdtest.TXT("v=DKIM1; k=rsa; p="+dkimKey),
			`_dmarc TXT "v=DMARC1; p=reject"`,
		},
		"strict.test": {
			`@ TXT "v=spf1 ip4:192.0.2.1 -all"`,
			`_dmarc TXT "v=DMARC1; p=reject"`,
		},
		"soft.test": {
			`@ TXT "v=spf1 ~all"`,
			`_dmarc TXT "v=DMARC1; p=quarantine"`,
		},
	}
}

// dkimKeyPair writes an RSA private key for dkimpy and returns its file
// and the public key as a DKIM record's p= (RFC 6376 §3.6.1).
func dkimKeyPair(t *testing.T, dir string) (keyFile, pub string) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keyFile = filepath.Join(dir, "dkim.key")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
	if err := os.WriteFile(keyFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return keyFile, base64.StdEncoding.EncodeToString(der)
}

// dkimpySign signs msg with dkimpy's dkimsign, the signer of many Python
// MTAs, as selector sel of domain.
func dkimpySign(t *testing.T, keyFile, sel, domain string, msg []byte) []byte {
	t.Helper()
	cmd := exec.Command("/usr/bin/dkimsign", "--hcanon", "relaxed", "--bcanon", "relaxed", sel, domain, keyFile)
	cmd.Stdin = bytes.NewReader(msg)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("dkimsign (scripts/install-test-deps.sh installs python3-dkim): %v\n%s", err, errb.String())
	}
	signed := out.Bytes()
	if !bytes.Contains(signed, []byte("DKIM-Signature:")) {
		t.Fatalf("dkimsign gave no signature:\n%s", signed)
	}
	if !bytes.Contains(signed, []byte("Subject:")) {
		signed = append(signed, msg...) // only the field: the message follows
	}
	return signed
}

func authMessage(from, subject string) []byte {
	return []byte(strings.ReplaceAll(fmt.Sprintf("From: %s\nTo: bo@example.net\nSubject: %s\nDate: Sun, 6 Dec 2026 10:00:00 +0000\nMessage-ID: <%s@moat.test>\n\nHello, authenticated world.\n", from, subject, strings.ReplaceAll(subject, " ", "-")), "\n", "\r\n"))
}

// Sender authentication end to end, against a real NSD serving the
// records, dkimpy signing, swaks sending through moat, and the real
// Postfix behind it (issue 14):
//
//   - a message from pass.test arrives with moat's Authentication-Results
//     saying spf=pass, dkim=pass and dmarc=pass;
//   - an Authentication-Results field forged with moat's authserv-id
//     never reaches the mailbox;
//   - a p=reject spoof of strict.test gets 550 and is never delivered;
//   - a softfail under p=quarantine is tagged;
//
// and then `moat analyze --dns recorded` on a dumpcap capture of that
// very traffic (SMTP and the DNS queries to NSD) gives every transaction
// the same SPF, DKIM, DMARC and ARC results as moat serve's log.
func TestSenderAuthEndToEnd(t *testing.T) {
	if _, err := exec.LookPath("dumpcap"); err != nil {
		t.Fatalf("dumpcap is missing (scripts/install-test-deps.sh installs it): %v", err)
	}
	dir := t.TempDir()
	keyFile, pub := dkimKeyPair(t, dir)
	// On port 53, where moat analyze finds the DNS answers in a capture.
	dnsSrv := nsdtest.StartPort53(t, authZones(pub))
	pf := postfixtest.Start(t, postfixtest.Options{})
	cfg := configFor(t, pf.Addr, fmt.Sprintf("dnsbl:\n  resolver: %q\nauth:\n  enabled: true\n  authserv_id: mx.moat.test\n", dnsSrv.Addr))
	m := startMoat(t, "--config", cfg)
	_, smtpPort := hostPort(t, m.smtp)
	_, dnsPort := hostPort(t, dnsSrv.Addr)
	cap := startDumpcapFilter(t, dir, fmt.Sprintf("tcp port %s or port %s", smtpPort, dnsPort))

	send := func(from string, msg []byte) (string, error) {
		f := filepath.Join(t.TempDir(), "msg.eml")
		if err := os.WriteFile(f, msg, 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("swaks", "--server", m.smtp, "--helo", "client.pass.test",
			"--from", from, "--to", "bo@example.net", "--data", "@"+f).CombinedOutput()
		return string(out), err
	}

	passMsg := dkimpySign(t, keyFile, "sel", "pass.test", authMessage("Alice <alice@pass.test>", "authenticated"))
	if out, err := send("alice@pass.test", passMsg); err != nil {
		t.Fatalf("the authenticated message was refused: %v\n%s", err, out)
	}
	forged := append([]byte("Authentication-Results: mx.moat.test; dkim=pass header.d=forged-marker.example; dmarc=pass\r\n"),
		dkimpySign(t, keyFile, "sel", "pass.test", authMessage("alice@pass.test", "forged results"))...)
	if out, err := send("alice@pass.test", forged); err != nil {
		t.Fatalf("the message with a forged Authentication-Results was refused: %v\n%s", err, out)
	}
	out, err := send("ceo@strict.test", authMessage("The CEO <ceo@strict.test>", "wire the money"))
	if err == nil || !strings.Contains(out, "<** 550 5.7.1 ") || !strings.Contains(out, "DMARC") {
		t.Fatalf("the p=reject spoof was not refused with 550 5.7.1 naming DMARC: %v\n%s", err, out)
	}
	if out, err := send("news@soft.test", authMessage("news@soft.test", "quarantine me")); err != nil {
		t.Fatalf("the softfail message was refused: %v\n%s", err, out)
	}

	msgs := pf.WaitMessages(t, 3, 30*time.Second)
	bySubject := map[string]string{}
	for _, msg := range msgs {
		s := strings.ReplaceAll(string(msg), "\r\n", "\n")
		for _, l := range strings.Split(s, "\n") {
			if strings.HasPrefix(l, "Subject: ") {
				bySubject[strings.TrimPrefix(l, "Subject: ")] = s
			}
		}
	}
	if _, ok := bySubject["wire the money"]; ok {
		t.Errorf("the p=reject spoof was delivered")
	}
	ar := func(subject string) []string {
		var out []string
		msg := bySubject[subject]
		header, _, _ := strings.Cut(msg, "\n\n")
		for _, f := range strings.Split(strings.ReplaceAll(header, "\n\t", " "), "\n") {
			if strings.HasPrefix(strings.ToLower(f), "authentication-results:") {
				out = append(out, f)
			}
		}
		if msg == "" {
			t.Errorf("%q was not delivered; got %d messages", subject, len(msgs))
		}
		return out
	}
	for _, subject := range []string{"authenticated", "forged results"} {
		fields := ar(subject)
		if len(fields) != 1 {
			t.Errorf("%q: want exactly moat's Authentication-Results, got %q", subject, fields)
			continue
		}
		f := fields[0]
		for _, want := range []string{"Authentication-Results: mx.moat.test;", "spf=pass", "smtp.mailfrom=", "dkim=pass", "header.d=pass.test", "dmarc=pass", "header.from=pass.test"} {
			if !strings.Contains(f, want) {
				t.Errorf("%q: Authentication-Results lacks %q: %s", subject, want, f)
			}
		}
		if strings.Contains(f, "forged-marker") {
			t.Errorf("%q: the forged Authentication-Results reached the mailbox: %s", subject, f)
		}
	}
	if soft := bySubject["quarantine me"]; !strings.Contains(soft, "X-Spam-Flag: YES") {
		t.Errorf("the p=quarantine failure was not tagged:\n%s", soft)
	}

	// Live equals offline: the same results from the capture.
	waitSessionsEnded(t, m, 4)
	cap.sync(t)
	cap.stop(t)
	live := authLiveLines(t, m.log.String())
	code, stdout, stderr := runMoat(t, "analyze", "--config", cfg, "--dns", "recorded", "--quiet", cap.file)
	if code != 0 {
		t.Fatalf("moat analyze: exit %d\n%s", code, stderr)
	}
	offline := authRecords(t, stdout)
	if len(live) != 4 {
		t.Fatalf("want 4 live transactions with sender authentication, got %d:\n%s", len(live), m.log.String())
	}
	for key, l := range live {
		r, ok := offline[key]
		if !ok {
			t.Errorf("%s: no record offline; records: %v", key, offline)
			continue
		}
		if l != r {
			t.Errorf("%s: live %+v, offline %+v", key, l, r)
		}
	}
}

// authOutcome is what the live log and the offline record must agree on.
type authOutcome struct {
	SPF, DKIM, DMARC, DMARCPolicy, ARC, Verdict string
}

// authLiveLines reads moat serve's "transaction" lines, keyed by client
// port and sender.
func authLiveLines(t *testing.T, log string) map[string]authOutcome {
	t.Helper()
	out := map[string]authOutcome{}
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l struct {
			Msg      string `json:"msg"`
			Port     int    `json:"client_port"`
			MailFrom string `json:"mail_from"`
			Action   string `json:"action"`
			Auth     *struct {
				SPF         string   `json:"spf"`
				DKIM        []string `json:"dkim"`
				DMARC       string   `json:"dmarc"`
				DMARCPolicy string   `json:"dmarc_policy"`
				ARC         string   `json:"arc"`
			} `json:"auth"`
		}
		if json.Unmarshal(sc.Bytes(), &l) != nil || l.Msg != "transaction" || l.Auth == nil {
			continue
		}
		out[fmt.Sprintf("%d %s", l.Port, strings.Trim(l.MailFrom, "<>"))] = authOutcome{
			SPF: l.Auth.SPF, DKIM: strings.Join(l.Auth.DKIM, ","), DMARC: l.Auth.DMARC,
			DMARCPolicy: l.Auth.DMARCPolicy, ARC: l.Auth.ARC, Verdict: l.Action}
	}
	return out
}

// authRecords reads moat analyze's records the same way.
func authRecords(t *testing.T, jsonl string) map[string]authOutcome {
	t.Helper()
	out := map[string]authOutcome{}
	for _, line := range strings.Split(strings.TrimSpace(jsonl), "\n") {
		var r struct {
			OrigP       int      `json:"id.orig_p"`
			MailFrom    string   `json:"mailfrom"`
			Verdict     string   `json:"verdict"`
			SPF         string   `json:"spf"`
			DKIM        []string `json:"dkim"`
			DMARC       string   `json:"dmarc"`
			DMARCPolicy string   `json:"dmarc_policy"`
			ARC         string   `json:"arc"`
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("record %q: %v", line, err)
		}
		if r.SPF == "" && r.DMARC == "" {
			continue // no data stage
		}
		out[fmt.Sprintf("%d %s", r.OrigP, r.MailFrom)] = authOutcome{SPF: r.SPF, DKIM: strings.Join(r.DKIM, ","),
			DMARC: r.DMARC, DMARCPolicy: r.DMARCPolicy, ARC: r.ARC, Verdict: r.Verdict}
	}
	return out
}
