package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"moat/internal/rbldnstest"
)

// dnsblConfig writes a config file whose lists are served at addr.
func dnsblConfig(t *testing.T, addr, lists string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "moat.yaml")
	text := fmt.Sprintf("dnsbl:\n  resolver: %q\n  timeout: 500ms\n  lists:\n%s", addr, lists)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func startDnsblZones(t *testing.T) *rbldnstest.Server {
	return rbldnstest.Start(t, map[string]rbldnstest.Zone{
		"zen.test": {Entries: []rbldnstest.Entry{
			{Key: "127.0.0.2"},
			{Key: "192.0.2.4", A: "127.0.0.4", TXT: "XBL listing $"},
		}},
		"dbl.test": {Type: "dnset", Entries: []rbldnstest.Entry{
			{Key: "dbltest.com", A: "127.0.1.2"},
			{Key: "spam.example", A: "127.0.1.2"},
		}},
		"wl.test": {Entries: []rbldnstest.Entry{{Key: "192.0.2.4", A: "127.0.3.1"}}},
	})
}

const dnsblLists = `    - {name: zen, profile: spamhaus-zen, zone: zen.test, txt: true}
    - {name: wl, profile: dnswl, zone: wl.test, health_check: false}
    - {name: dbl, profile: spamhaus-dbl, zone: dbl.test}
    - {name: dbl-uri, profile: spamhaus-dbl, zone: dbl.test, kind: uri}
`

// The built binary looks an address up on the ip and uri lists and says
// what each answered.
func TestDnsblCheckBinary(t *testing.T) {
	s := startDnsblZones(t)
	cfg := dnsblConfig(t, s.Addr, dnsblLists)
	code, out, errOut := runMoat(t, "dnsbl", "check", "192.0.2.4", "--config", cfg)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{
		`zen      ip    zen.test  192.0.2.4  LISTED xbl, weight 6, answer 127.0.0.4, TXT "XBL listing 192.0.2.4"`,
		"wl       ip    wl.test   192.0.2.4  ALLOWLISTED low, weight -1, answer 127.0.3.1",
		"dbl-uri  uri   dbl.test  192.0.2.4  not listed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "dbl      domain") {
		t.Errorf("an address was looked up on a domain list:\n%s", out)
	}
}

func TestDnsblCheck(t *testing.T) {
	s := startDnsblZones(t)
	cfg := dnsblConfig(t, s.Addr, dnsblLists)
	// A dead resolver: nothing listens on this UDP port.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := pc.LocalAddr().String()
	pc.Close()
	for _, c := range []struct {
		name     string
		args     []string
		code     int
		out, err string
	}{
		{"domain, flags first", []string{"dnsbl", "check", "--config", cfg, "Spam.Example"}, 0,
			"dbl      domain  dbl.test  spam.example  LISTED spam, weight 4, answer 127.0.1.2", ""},
		{"health", []string{"dnsbl", "check", "good.example", "--health", "--config", cfg}, 0,
			"wl       not probed (health_check: false)", ""},
		{"not listed", []string{"dnsbl", "check", "192.0.2.5", "--config", cfg}, 0, "zen      ip    zen.test  192.0.2.5  not listed", ""},
		{"help", []string{"dnsbl", "--help"}, 0, "moat dnsbl check IP|DOMAIN", ""},
		{"check help", []string{"dnsbl", "check", "-h"}, 0, "Exits 0 when every list answered", ""},
		{"no key", []string{"dnsbl", "check", "--config", cfg}, 2, "", "want one IP address or domain"},
		{"two keys", []string{"dnsbl", "check", "a.example", "b.example"}, 2, "", "want one IP address or domain"},
		{"no subcommand", []string{"dnsbl"}, 2, "", "Usage:"},
		{"no lists", []string{"dnsbl", "check", "192.0.2.4"}, 1, "", "built-in default config has no ip or uri lists"},
		{"missing config", []string{"dnsbl", "check", "192.0.2.4", "--config", "/nonexistent.yaml"}, 2, "", "does not exist"},
		{"bad config", []string{"dnsbl", "check", "192.0.2.4", "--config",
			dnsblConfig(t, s.Addr, "    - {name: zen, zone: zen.test}\n    - {name: zen, zone: other.test}\n")}, 2,
			"", `dnsbl.lists[1].name: "zen" is already the name of dnsbl.lists[0]`},
		{"bad code", []string{"dnsbl", "check", "192.0.2.4", "--config",
			dnsblConfig(t, s.Addr, "    - {name: zen, zone: zen.test, codes: {\"127.0.0.[9..2]\": {}}}\n")}, 2,
			"", `dnsbl.lists[0].codes: "127.0.0.[9..2]": range is backwards`},
		{"failing list", []string{"dnsbl", "check", "192.0.2.4", "--config",
			dnsblConfig(t, dead, "    - {name: dead, zone: zen.test, on_error: closed}\n")}, 1,
			"dead  ip    zen.test  192.0.2.4  ERROR", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(c.args, &out, &errOut)
			if code != c.code || !strings.Contains(out.String(), c.out) || !strings.Contains(errOut.String(), c.err) {
				t.Errorf("exit %d (want %d)\nstdout:\n%s\nstderr:\n%s\nwant stdout %q, stderr %q", code, c.code, out.String(), errOut.String(), c.out, c.err)
			}
		})
	}
}
