package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"moat/internal/postfixtest"
	"moat/internal/rbldnstest"
)

// DNS lists end to end: a real rbldnsd serves the lists, clients connect
// to moat from different loopback addresses listed with different codes,
// and each gets the verdict its listing calls for, at its stage, in front
// of a real Postfix.
func TestDNSBLEndToEnd(t *testing.T) {
	bl := rbldnstest.Start(t, map[string]rbldnstest.Zone{
		"bl.test": {Type: "ip4set", Default: "127.0.0.2:Listed, see https://bl.test/$", Entries: []rbldnstest.Entry{
			{Key: "127.0.0.2", A: "127.0.0.2"}, // sbl: scored, tagged
			{Key: "127.0.0.3", A: "127.0.0.4"}, // xbl: refused at connect
		}},
		"bl6.test": {Type: "ip6trie", Default: "127.0.0.2", Entries: []rbldnstest.Entry{{Key: "::1"}}},
		"dbl.test": {Type: "dnset", Default: "127.0.1.2", Entries: []rbldnstest.Entry{{Key: "evil.test"}}},
		"uri.test": {Type: "dnset", Default: "127.0.0.2", Entries: []rbldnstest.Entry{{Key: "badlink.test"}}},
	})
	pf := postfixtest.Start(t, postfixtest.Options{})
	dir := t.TempDir()
	rulesPath := filepath.Join(dir, "rules.yaml")
	os.WriteFile(rulesPath, []byte(`
thresholds: {tag: 5, reject: 50}
rules:
  - {name: BL_XBL, stage: connect, when: {dnsbl: {list: bl, reason: xbl}}, action: reject}
  - {name: BL_SBL, stage: connect, when: {dnsbl: {list: bl, reason: sbl}}}
  - {name: BL6, stage: connect, when: {dnsbl: bl6}, action: reject}
  - {name: SENDER_DBL, stage: mail, when: {dnsbl: dbl}, action: reject}
  - {name: URI_LISTED, stage: data, when: {dnsbl: uri}, action: reject, reply: "550 5.7.1 Message contains a blocklisted link"}
`), 0o644)
	extra := fmt.Sprintf(`rules:
  file: %q
dnsbl:
  resolver: %q
  timeout: 20s
  lists:
    - {name: bl, zone: bl.test, kind: ip, hide_zone: true, codes: {"127.0.0.2": {reason: sbl, weight: 6}, "127.0.0.4": {reason: xbl, weight: 10}}}
    - {name: bl6, zone: bl6.test, kind: ip, health_check: false}
    - {name: dbl, zone: dbl.test, kind: domain, health_check: false}
    - {name: uri, zone: uri.test, kind: uri, health_check: false}
`, rulesPath, bl.Addr)
	cfg := configFor(t, pf.Addr, extra)
	// A second listener on ::1 for the IPv6 client.
	data, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, bytes.Replace(data, []byte(`listen: ["127.0.0.1:0"]`), []byte(`listen: ["127.0.0.1:0", "[::1]:0"]`), 1), 0o644)
	m := startMoat(t, "--config", cfg)
	v6 := listenAddrs(t, m)[1]

	// 127.0.0.3 is listed as xbl: refused in the greeting, the reason
	// named, the zone hidden (hide_zone), the reference given.
	greet := greetingFrom(t, "127.0.0.3", m.smtp)
	if !strings.HasPrefix(greet, "554 5.7.1 Service unavailable; listed (xbl) (ref ") || strings.Contains(greet, "bl.test") {
		t.Fatalf("xbl client greeted with %q", greet)
	}
	// ::1 is on the IPv6 list (reversed nibbles).
	if greet := greetingFrom(t, "::1", v6); !strings.HasPrefix(greet, "554 5.7.1 ") {
		t.Fatalf("IPv6 client greeted with %q", greet)
	}

	// 127.0.0.2 is listed as sbl with weight 6: accepted and tagged.
	out, err := swaksFrom(t, "127.0.0.2", m.smtp, "--to", "bo@example.net", "--header", "Subject: from sbl")
	if err != nil {
		t.Fatalf("sbl client: %v\n%s", err, out)
	}
	// A clean address whose sender domain is on the domain list: refused at MAIL.
	out, err = swaksFrom(t, "127.0.0.4", m.smtp, "--from", "x@evil.test", "--to", "bo@example.net")
	if err == nil || !strings.Contains(out, "<** 550 5.7.1 Rejected by policy; listed on dbl.test") {
		t.Fatalf("listed sender domain: %v\n%s", err, out)
	}
	// A clean client and sender with a listed link in the body: refused at the end of data.
	out, err = swaksFrom(t, "127.0.0.4", m.smtp, "--to", "bo@example.net", "--body", "See http://badlink.test/offer now")
	if err == nil || !strings.Contains(out, "<** 550 5.7.1 Message contains a blocklisted link (ref ") {
		t.Fatalf("listed URL: %v\n%s", err, out)
	}

	msgs := pf.WaitMessages(t, 1, 20*time.Second)
	time.Sleep(500 * time.Millisecond)
	if msgs = pf.Messages(t); len(msgs) != 1 {
		t.Fatalf("%d messages delivered, want only the sbl client's", len(msgs))
	}
	if !bytes.Contains(msgs[0], []byte("X-Spam-Status: Yes, score=6.0 required=5.0 tests=BL_SBL\n")) {
		t.Fatalf("sbl message not tagged:\n%s", msgs[0])
	}
}

func listenAddrs(t *testing.T, m *moatProc) []string {
	t.Helper()
	for _, line := range strings.Split(m.log.String(), "\n") {
		var e struct {
			Msg    string   `json:"msg"`
			Listen []string `json:"listen"`
		}
		if json.Unmarshal([]byte(line), &e) == nil && e.Msg == "moat started" {
			if len(e.Listen) < 2 {
				t.Fatalf("listeners %v", e.Listen)
			}
			return e.Listen
		}
	}
	t.Fatal("no startup line")
	return nil
}

// greetingFrom connects from src and returns the first greeting line.
func greetingFrom(t *testing.T, src, addr string) string {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("greeting from %s: %v", src, err)
	}
	return strings.TrimRight(line, "\r\n")
}

// swaksFrom runs swaks bound to a source address.
func swaksFrom(t *testing.T, src, server string, args ...string) (string, error) {
	t.Helper()
	return swaks(t, server, append([]string{"--local-interface", src}, args...)...)
}
