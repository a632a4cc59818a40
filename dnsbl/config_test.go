package dnsbl

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"moat/internal/strictyaml"
)

// fileConfig is the part of moat's config file these tests decode.
type fileConfig struct {
	DNSBL Config `yaml:"dnsbl"`
}

// decodeConfig decodes a config file the way moat does and builds the
// Checker from it; the first error of either is returned.
func decodeConfig(text string) (*Checker, error) {
	var fc fileConfig
	if err := strictyaml.Decode("moat.yaml", []byte(text), &fc); err != nil {
		return nil, err
	}
	return New(fc.DNSBL, Deps{})
}

func TestConfig(t *testing.T) {
	c, err := decodeConfig(`
dnsbl:
  resolver: ["127.0.0.1:5353", "::1"]
  timeout: 1s
  cache_size: 50
  health_interval: 1m
  lists:
    - name: zen
      profile: spamhaus-zen
      codes:
        "127.0.0.[4..7]": {reason: exploit, weight: 9}
        "127.0.0.99": {reason: local}
      txt: true
      hide_zone: true
    - name: ps
      zone: zen.spamhaus.org.
      codes:
        "127.0.0.[2..11]": {weight: 3}
    - name: dbl-uri
      profile: spamhaus-dbl
      kind: uri
      timeout: 500ms
      on_error: closed
    - name: wl
      zone: list.dnswl.org
      allow: true
      health_check: false
`)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.resolvers, " "); got != "127.0.0.1:5353 [::1]:53" {
		t.Errorf("resolvers = %s", got)
	}
	if c.cacheSize != 50 || c.healthInterval != time.Minute {
		t.Errorf("cache_size %d, health_interval %v", c.cacheSize, c.healthInterval)
	}
	zen := c.lists[0]
	if zen.zone != "zen.spamhaus.org" || zen.fqdn != "zen.spamhaus.org." || zen.kind != KindIP || zen.timeout != time.Second || !zen.txt || !zen.hide {
		t.Errorf("zen = %+v", zen)
	}
	info, ok := c.List("zen")
	if !ok || strings.Join(info.Reasons, ",") != "sbl,css,exploit,drop,pbl,bcl,local" {
		t.Errorf("List(zen) = %+v, %v", info, ok)
	}
	if ps := c.lists[1]; ps.fqdn != "zen.spamhaus.org." || len(ps.codes) != 1 || ps.codes[0].Reason != "listed" || ps.codes[0].Weight != 3 {
		t.Errorf("ps = %+v", ps)
	}
	dbl := c.lists[2]
	if dbl.kind != KindURI || dbl.timeout != 500*time.Millisecond || !dbl.closed || dbl.testListed.name != "dbltest.com" {
		t.Errorf("dbl-uri = %+v", dbl)
	}
	if wl := c.lists[3]; !wl.allow || wl.health {
		t.Errorf("wl = %+v", wl)
	}
	if len(c.byKind[KindIP]) != 3 || len(c.byKind[KindURI]) != 1 {
		t.Errorf("byKind: %d ip, %d uri", len(c.byKind[KindIP]), len(c.byKind[KindURI]))
	}
	if _, ok := c.List("nope"); ok {
		t.Error("List(nope) found a list")
	}
}

// A config without a dnsbl section is valid and looks nothing up.
func TestConfigEmpty(t *testing.T) {
	c, err := decodeConfig("dnsbl:\n  resolver: 127.0.0.1\n")
	if err != nil {
		t.Fatal(err)
	}
	if rs := c.Lookup(t.Context(), KindIP, "192.0.2.1").Wait(t.Context()); len(rs) != 0 {
		t.Errorf("results without lists: %v", rs)
	}
}

func TestConfigErrors(t *testing.T) {
	list := func(s string) string {
		return "dnsbl:\n  lists:\n    - {name: ok, zone: ok.test}\n    - " + s + "\n"
	}
	for _, c := range []struct{ yaml, err string }{
		{list(`{name: a, zone: a.test, codes: {"127.0.0.[9..2]": {reason: x}}}`),
			`moat.yaml:4:38: dnsbl.lists[1].codes: "127.0.0.[9..2]": range is backwards`},
		{list(`{name: a, zone: a.test, codes: {"127.0.0.256": {}}}`),
			`dnsbl.lists[1].codes: "127.0.0.256": bad octet "256"`},
		{list(`{name: a, zone: a.test, codes: {"bit:0": {}}}`),
			`dnsbl.lists[1].codes: "bit:0": bit:N needs N from 1 to 255`},
		{list(`{name: a, zone: a.test, codes: {"127.0.0.2": {reason: x, score: 3}}}`),
			`dnsbl.lists[1].codes: "127.0.0.2": unknown key "score" (known: reason, weight, error)`},
		{list(`{name: a, zone: a.test, codes: {"127.0.0.2": {weight: lots}}}`),
			`dnsbl.lists[1].codes: "127.0.0.2": weight: cannot unmarshal string`},
		{list(`{name: a, zone: a.test, codes: {"127.0.0.2": {weight: .inf}}}`),
			`dnsbl.lists[1].codes: "127.0.0.2": weight: must be a finite number`},
		{list(`{name: a, zone: a.test, codes: {"127.0.0.2": {reason: "two words"}}}`),
			`dnsbl.lists[1].codes: "127.0.0.2": reason: reason "two words": use 1 to 63 letters`},
		{list(`{name: a, zone: a.test, codes: {"127.0.0.2": {error: true, weight: 3}}}`),
			`dnsbl.lists[1].codes: "127.0.0.2": an error code has no reason or weight`},
		{list(`{name: a, zone: a.test, codes: {"127.0.0.[2..3]": {}, "127.0.0.[2;3]": {}}}`),
			`dnsbl.lists[1].codes: "127.0.0.[2;3]": same answers as "127.0.0.[2..3]"`},
		{list(`{name: a, zone: a.test, codes: ["127.0.0.2"]}`),
			`dnsbl.lists[1].codes: expected a mapping`},
		{list(`{name: a, zone: a.test, kind: asn}`),
			`moat.yaml:4:37: dnsbl.lists[1].kind: "asn" is not ip, domain or uri`},
		{list(`{name: a, profile: spamhaus-zen-plus}`),
			`dnsbl.lists[1].profile: unknown profile "spamhaus-zen-plus" (known: barracuda, dnswl,`},
		{list(`{name: a, zone: a.test, on_error: maybe}`),
			`dnsbl.lists[1].on_error: "maybe" is not open or closed`},
		{list(`{name: a, zone: a.test, zonee: b.test}`),
			`moat.yaml:4:31: dnsbl.lists[1].zonee: unknown key`},
		{list(`{name: a, zone: a.test, timeout: soon}`),
			`dnsbl.lists[1].timeout:`},
		{"dnsbl:\n  resolver: dns.google\n",
			`moat.yaml:2:13: dnsbl.resolver[0]: "dns.google" is not IP or IP:port`},
		{"dnsbl:\n  resolver: [127.0.0.1, \"127.0.0.1:0\"]\n",
			`dnsbl.resolver[1]: "127.0.0.1:0" is not IP or IP:port`},
		{"dnsbl:\n  cache_size: -1\n", "dnsbl.cache_size: must be positive"},
		{"dnsbl:\n  timeout: -1s\n", "dnsbl.timeout: must be positive"},
		{list(`{name: ok, zone: b.test}`),
			`dnsbl.lists[1].name: "ok" is already the name of dnsbl.lists[0]`},
		{list(`{zone: b.test}`), "dnsbl.lists[1].name: required"},
		{list(`{name: "a b", zone: b.test}`), `dnsbl.lists[1].name: name "a b": use 1 to 63 letters`},
		{list(`{name: a}`), "dnsbl.lists[1].zone: required"},
		{list(`{name: a, zone: "a..test"}`), `dnsbl.lists[1].zone: "a..test" is not a domain name`},
		{list(`{name: a, zone: a.test, timeout: -1s}`), "dnsbl.lists[1].timeout: must be positive"},
		{list(`{name: a, zone: a.test, test_listed: example.com}`),
			`dnsbl.lists[1].test_listed: "example.com" is not a key for a list of kind ip`},
		{list(`{name: a, zone: a.test, kind: domain, test_unlisted: 127.0.0.1}`),
			`dnsbl.lists[1].test_unlisted: "127.0.0.1" is not a key for a list of kind domain`},
	} {
		_, err := decodeConfig(c.yaml)
		if err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("config\n%s\nerr = %v\nwant %q", c.yaml, err, c.err)
		}
	}
}

func TestParseResolver(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1":        "127.0.0.1:53",
		"127.0.0.1:5353":   "127.0.0.1:5353",
		"::1":              "[::1]:53",
		"[2001:db8::1]:53": "[2001:db8::1]:53",
	} {
		got, err := ParseResolver(in)
		if err != nil || string(got) != want {
			t.Errorf("ParseResolver(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "localhost", "localhost:53", "127.0.0.1:dns", "1.2.3.4:70000"} {
		if _, err := ParseResolver(in); err == nil {
			t.Errorf("ParseResolver(%q) accepted it", in)
		}
	}
}

// A Checker rebuilt on reload registers on the same registry and keeps
// counting in the same series.
func TestNewTwiceOneRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := Config{Resolver: []Resolver{"127.0.0.1:53"}, Lists: []ListConfig{{Name: "bl", Zone: "bl.test"}}}
	for i := 0; i < 2; i++ {
		if _, err := New(cfg, Deps{Registerer: reg}); err != nil {
			t.Fatalf("New #%d: %v", i+1, err)
		}
	}
	if g := metric(t, reg, "moat_dnsbl_list_healthy", "list", "bl"); g != 1 {
		t.Errorf("moat_dnsbl_list_healthy = %v", g)
	}
	// A clash with a foreign metric of the same name is an error, not a
	// panic.
	other := prometheus.NewRegistry()
	other.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "moat_dnsbl_queries_total"}))
	if _, err := New(cfg, Deps{Registerer: other}); err == nil {
		t.Error("New registered over a foreign metric")
	}
}
