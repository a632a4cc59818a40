package dnsbl

import (
	"fmt"
	"strings"
	"testing"

	"moat/internal/rbldnstest"
)

// startRbldnsd serves the zones of these tests from a real rbldnsd:
//
//	zen.test    ip4set  Spamhaus ZEN-like codes, a range, an error code
//	v6.test     ip6trie an IPv6 prefix
//	dbl.test    dnset   Spamhaus DBL-like domains, a wildcard
//	surbl.test  dnset   SURBL bitmask answers for domains and a URL's IP
//	wl.test     ip4set  dnswl-like 127.0.C.T allowlist answers
//	refusing.test ip4set answers 127.255.255.254 (Spamhaus: public resolver) for the keys these tests ask
//	all.test    ip4set  lists all of 127/8: fails RFC 5782's 127.0.0.1 test
//	empty.test  ip4set  lacks RFC 5782's 127.0.0.2 test entry
func startRbldnsd(t *testing.T) *rbldnstest.Server {
	return rbldnstest.Start(t, map[string]rbldnstest.Zone{
		"zen.test": {Default: "127.0.0.2:Listed by zen.test: $", Entries: []rbldnstest.Entry{
			{Key: "127.0.0.2"}, // RFC 5782 §5 test entry
			{Key: "192.0.2.2", A: "127.0.0.2", TXT: "SBL listing $"},
			{Key: "192.0.2.3", A: "127.0.0.3"},
			{Key: "192.0.2.4", A: "127.0.0.4", TXT: "XBL $"},
			{Key: "192.0.2.7", A: "127.0.0.7"},
			{Key: "192.0.2.10", A: "127.0.0.10"},
			{Key: "192.0.2.99", A: "127.0.0.99"}, // a code outside the table
			{Key: "198.51.100.0/24", A: "127.0.0.9"},
			{Key: "203.0.113.254", A: "127.255.255.254"}, // "public resolver"
		}},
		"v6.test": {Type: "ip6trie", Entries: []rbldnstest.Entry{
			{Key: "2001:db8::/48", A: "127.0.0.2", TXT: "v6 listing $"},
		}},
		"dbl.test": {Type: "dnset", Entries: []rbldnstest.Entry{
			{Key: "dbltest.com", A: "127.0.1.2"},
			{Key: "spam.example", A: "127.0.1.2", TXT: "spam domain $"},
			{Key: "phish.example", A: "127.0.1.4"},
			{Key: ".bad.example", A: "127.0.1.2"},
			{Key: "abused.example", A: "127.0.1.102"},
		}},
		"surbl.test": {Type: "dnset", Entries: []rbldnstest.Entry{
			{Key: "evil.example", A: "127.0.0.24", TXT: "SURBL: $ on PH and MW"},
			{Key: "abuse.example", A: "127.0.0.64"},
			{Key: "7.2.0.192", A: "127.0.0.128"}, // http://192.0.2.7/
			{Key: "blocked.example", A: "127.0.0.1"},
			{Key: "refused.example", A: "127.255.255.254"}, // Spamhaus-style refusal
		}},
		"wl.test": {Entries: []rbldnstest.Entry{
			{Key: "127.0.0.2", A: "127.0.10.0"},
			{Key: "192.0.2.20", A: "127.0.5.3"},
			{Key: "192.0.2.21", A: "127.0.9.1"},
			{Key: "192.0.2.22", A: "127.0.0.255"},
		}},
		// A list refusing every query, as Spamhaus answers a public
		// resolver: 127.255.255.254 for any key, its test entries too.
		"refusing.test": {Entries: []rbldnstest.Entry{
			{Key: "127.0.0.0/8", A: "127.255.255.254"},
			{Key: "192.0.2.0/24", A: "127.255.255.254"},
		}},
		"all.test":   {Entries: []rbldnstest.Entry{{Key: "127.0.0.0/8"}}},
		"empty.test": {Entries: []rbldnstest.Entry{{Key: "192.0.2.200"}}},
	})
}

const rbldnsdLists = `
dnsbl:
  resolver: %q
  timeout: 2s
  lists:
    - {name: zen, profile: spamhaus-zen, zone: zen.test, txt: true}
    - name: ps    # postscreen's zen.spamhaus.org=127.0.0.[2..11]*3
      zone: zen.test
      codes:
        "127.0.0.[2..11]": {weight: 3}
    - {name: zen-hidden, profile: spamhaus-zen, zone: zen.test, txt: true, hide_zone: true}
    - {name: v6, zone: v6.test, txt: true}
    - {name: dbl, profile: spamhaus-dbl, zone: dbl.test, txt: true}
    - {name: surbl, profile: surbl, zone: surbl.test, txt: true}
    - {name: wl, profile: dnswl, zone: wl.test}
`

type want struct {
	listed  bool
	reasons string
	weight  float64
	txt     string
	errKind string
	answers string
}

func checkResults(t *testing.T, c *Checker, kind Kind, key string, wants map[string]want) {
	t.Helper()
	rs := c.Lookup(t.Context(), kind, key).Wait(t.Context())
	if len(rs) != len(c.byKind[kind]) {
		t.Fatalf("%s: %d results for %d lists", key, len(rs), len(c.byKind[kind]))
	}
	for i, r := range rs {
		if r.List != c.byKind[kind][i].name {
			t.Errorf("%s: result %d is %s's, out of configuration order", key, i, r.List)
		}
		w := wants[r.List] // absent: not listed
		got := want{r.Listed, strings.Join(r.Reasons, ","), r.Weight, r.TXT, r.ErrKind, ""}
		if w.answers != "" {
			got.answers = joinAddrs(r.Answers)
		}
		if got != w {
			t.Errorf("%s on %s: got %+v\nwant %+v (err %v)", key, r.List, got, w, r.Err)
		}
	}
}

func TestRbldnsdIPLists(t *testing.T) {
	s := startRbldnsd(t)
	c, _ := newChecker(t, fmt.Sprintf(rbldnsdLists, s.Addr))
	for _, k := range []struct {
		key   string
		wants map[string]want
	}{
		{"192.0.2.2", map[string]want{
			"zen":        {listed: true, reasons: "sbl", weight: 4, txt: "SBL listing 192.0.2.2"},
			"ps":         {listed: true, reasons: "listed", weight: 3},
			"zen-hidden": {listed: true, reasons: "sbl", weight: 4, txt: "SBL listing 192.0.2.2"},
		}},
		{"192.0.2.3", map[string]want{
			"zen":        {listed: true, reasons: "css", weight: 3, txt: "Listed by zen.test: 192.0.2.3"},
			"ps":         {listed: true, reasons: "listed", weight: 3},
			"zen-hidden": {listed: true, reasons: "css", weight: 3, txt: "Listed by zen.test: 192.0.2.3"},
		}},
		{"192.0.2.7", map[string]want{
			"zen":        {listed: true, reasons: "xbl", weight: 6, txt: "Listed by zen.test: 192.0.2.7"},
			"ps":         {listed: true, reasons: "listed", weight: 3},
			"zen-hidden": {listed: true, reasons: "xbl", weight: 6, txt: "Listed by zen.test: 192.0.2.7"},
		}},
		{"192.0.2.10", map[string]want{
			"zen":        {listed: true, reasons: "pbl", weight: 2, txt: "Listed by zen.test: 192.0.2.10"},
			"ps":         {listed: true, reasons: "listed", weight: 3},
			"zen-hidden": {listed: true, reasons: "pbl", weight: 2, txt: "Listed by zen.test: 192.0.2.10"},
		}},
		// A range listing.
		{"198.51.100.77", map[string]want{
			"zen":        {listed: true, reasons: "drop", weight: 6, txt: "Listed by zen.test: 198.51.100.77"},
			"ps":         {listed: true, reasons: "listed", weight: 3},
			"zen-hidden": {listed: true, reasons: "drop", weight: 6, txt: "Listed by zen.test: 198.51.100.77"},
		}},
		// An answer outside the code table is no listing (postscreen's
		// filter semantics), but is reported.
		{"192.0.2.99", map[string]want{
			"zen":        {answers: "127.0.0.99"},
			"ps":         {answers: "127.0.0.99"},
			"zen-hidden": {answers: "127.0.0.99"},
		}},
		// Spamhaus's "public resolver" code: an error with the profile,
		// and without it too — 127.255.255.0/24 is about the query, and
		// the postscreen-style filter does not map it.
		{"203.0.113.254", map[string]want{
			"zen":        {errKind: ErrKindBlockedResolver},
			"ps":         {errKind: ErrKindBlockedResolver},
			"zen-hidden": {errKind: ErrKindBlockedResolver},
		}},
		// The allowlist: listed means good, the weight is negative.
		{"192.0.2.20", map[string]want{"wl": {listed: true, reasons: "hi", weight: -5}}},
		{"192.0.2.21", map[string]want{"wl": {listed: true, reasons: "low", weight: -1}}},
		{"192.0.2.22", map[string]want{"wl": {errKind: ErrKindBlockedResolver}}},
		{"192.0.2.200", nil},
		// IPv6 clients are asked as reversed nibbles (RFC 5782 §2.4).
		{"2001:db8::5", map[string]want{"v6": {listed: true, reasons: "listed", weight: 1, txt: "v6 listing 2001:db8::5"}}},
		{"2001:db8:1::5", nil},
		// An IPv4 client on a dual-stack socket.
		{"::ffff:192.0.2.4", map[string]want{
			"zen":        {listed: true, reasons: "xbl", weight: 6, txt: "XBL 192.0.2.4"},
			"ps":         {listed: true, reasons: "listed", weight: 3},
			"zen-hidden": {listed: true, reasons: "xbl", weight: 6, txt: "XBL 192.0.2.4"},
		}},
	} {
		checkResults(t, c, KindIP, k.key, k.wants)
	}
}

func TestRbldnsdDescribe(t *testing.T) {
	s := startRbldnsd(t)
	c, _ := newChecker(t, fmt.Sprintf(rbldnsdLists, s.Addr))
	rs := c.Lookup(t.Context(), KindIP, "192.0.2.4").Wait(t.Context())
	got := map[string]string{}
	for _, r := range rs {
		got[r.List] = r.Describe()
	}
	for list, want := range map[string]string{
		"zen":        "listed on zen.test (xbl): XBL 192.0.2.4",
		"zen-hidden": "listed (xbl)",
		"ps":         "listed on zen.test (listed)",
		"wl":         "not listed",
	} {
		if got[list] != want {
			t.Errorf("%s: Describe() = %q, want %q", list, got[list], want)
		}
	}
}

func TestRbldnsdDomainList(t *testing.T) {
	s := startRbldnsd(t)
	c, _ := newChecker(t, fmt.Sprintf(rbldnsdLists, s.Addr))
	for key, w := range map[string]map[string]want{
		"spam.example":    {"dbl": {listed: true, reasons: "spam", weight: 4, txt: "spam domain spam.example"}},
		"Phish.Example.":  {"dbl": {listed: true, reasons: "phish", weight: 6}},
		"bad.example":     {"dbl": {listed: true, reasons: "spam", weight: 4}},
		"www.bad.example": {"dbl": {listed: true, reasons: "spam", weight: 4}},
		"abused.example":  {"dbl": {listed: true, reasons: "abused-legit", weight: 2}},
		"good.example":    nil,
		"192.0.2.2":       nil, // not a domain: not asked
	} {
		checkResults(t, c, KindDomain, key, w)
	}
	if n := s.Count(t, "2.2.0.192.dbl.test"); n != 0 {
		t.Errorf("an IP was asked of a domain list %d times", n)
	}
}

func TestRbldnsdURIList(t *testing.T) {
	s := startRbldnsd(t)
	c, _ := newChecker(t, fmt.Sprintf(rbldnsdLists, s.Addr))
	for key, w := range map[string]map[string]want{
		// SURBL's bitmask: 24 = 8 (PH) + 16 (MW).
		"evil.example":    {"surbl": {listed: true, reasons: "ph,mw", weight: 10, txt: "SURBL: evil.example on PH and MW"}},
		"abuse.example":   {"surbl": {listed: true, reasons: "abuse", weight: 5}},
		"192.0.2.7":       {"surbl": {listed: true, reasons: "cr", weight: 5}},
		"blocked.example": {"surbl": {errKind: ErrKindBlockedResolver}},
		// 127.255.255.254 is a refusal, not the bits 2 to 128 at once.
		"refused.example": {"surbl": {errKind: ErrKindBlockedResolver}},
		"clean.example":   nil,
	} {
		checkResults(t, c, KindURI, key, w)
	}
}

// A second lookup is served from the cache: rbldnsd is not asked again.
func TestRbldnsdCache(t *testing.T) {
	s := startRbldnsd(t)
	c, reg := newChecker(t, fmt.Sprintf(rbldnsdLists, s.Addr))
	rs := c.Lookup(t.Context(), KindDomain, "spam.example").Wait(t.Context())
	if !rs[0].Listed || rs[0].Cached {
		t.Fatalf("first lookup: %+v", rs[0])
	}
	asked := s.Count(t, "spam.example.dbl.test")
	if asked != 2 { // A and TXT
		t.Errorf("rbldnsd asked %d times, want 2 (A, TXT): %q", asked, s.Queries(t))
	}
	rs = c.Lookup(t.Context(), KindDomain, "SPAM.example").Wait(t.Context())
	if !rs[0].Listed || !rs[0].Cached || rs[0].TXT != "spam domain spam.example" {
		t.Errorf("second lookup: %+v", rs[0])
	}
	if n := s.Count(t, "spam.example.dbl.test"); n != asked {
		t.Errorf("the second lookup asked rbldnsd again (%d queries)", n)
	}
	for name, want := range map[string]float64{
		"moat_dnsbl_cache_hits_total":        1,
		"moat_dnsbl_cache_misses_total":      1,
		"moat_dnsbl_queries_total":           1,
		"moat_dnsbl_lookup_duration_seconds": 1,
	} {
		if got := metric(t, reg, name, "list", "dbl"); got != want {
			t.Errorf("%s{list=dbl} = %v, want %v", name, got, want)
		}
	}
	if got := metric(t, reg, "moat_dnsbl_listings_total", "list", "dbl", "reason", "spam"); got != 1 {
		t.Errorf("moat_dnsbl_listings_total{list=dbl,reason=spam} = %v, want 1", got)
	}
}

// RFC 5782 §5 health probes against real zones: a zone listing all of
// 127/8 and a zone without its test entry are unhealthy, and their
// lookups are not sent; the others are healthy.
func TestRbldnsdHealth(t *testing.T) {
	s := startRbldnsd(t)
	c, reg := newChecker(t, fmt.Sprintf(`
dnsbl:
  resolver: %q
  lists:
    - {name: zen, profile: spamhaus-zen, zone: zen.test}
    - {name: all, zone: all.test}
    - {name: empty, zone: empty.test}
    - {name: dbl, profile: spamhaus-dbl, zone: dbl.test}
    - {name: surbl, profile: surbl, zone: surbl.test, test_listed: evil.example}
    - {name: wl, profile: dnswl, zone: wl.test}
    - {name: v6, zone: v6.test, health_check: false}
`, s.Addr))
	health := c.CheckHealth(t.Context())
	problems := map[string]string{}
	for _, h := range health {
		problems[h.List] = h.Problem
		if h.Healthy != (h.Problem == "") {
			t.Errorf("%+v", h)
		}
		if h.Skipped != (h.List == "v6") {
			t.Errorf("%s: Skipped = %v", h.List, h.Skipped)
		}
	}
	for list, want := range map[string]string{
		"zen": "", "dbl": "", "surbl": "", "wl": "", "v6": "",
		"all":   "test entry 127.0.0.1 is listed (127.0.0.2): the list lists everything",
		"empty": "test entry 127.0.0.2 is not listed: the list answers nothing",
	} {
		if problems[list] != want {
			t.Errorf("%s: problem %q, want %q", list, problems[list], want)
		}
		healthy := 1.0
		if want != "" {
			healthy = 0
		}
		if g := metric(t, reg, "moat_dnsbl_list_healthy", "list", list); g != healthy {
			t.Errorf("moat_dnsbl_list_healthy{list=%s} = %v", list, g)
		}
	}
	before := s.Count(t, "2.2.0.192.all.test")
	for _, r := range c.Lookup(t.Context(), KindIP, "192.0.2.2").Wait(t.Context()) {
		if (r.List == "all" || r.List == "empty") != (r.ErrKind == ErrKindUnhealthy) {
			t.Errorf("%s: %+v", r.List, r)
		}
		if r.ErrKind == ErrKindUnhealthy && (r.Listed || r.OnErrorClosed) {
			t.Errorf("%s: an unhealthy list's result counts: %+v", r.List, r)
		}
	}
	if s.Count(t, "2.2.0.192.all.test") != before {
		t.Error("the unhealthy list was asked")
	}
}

// A list answering 127.255.255.254 — Spamhaus's answer to a query through
// a public resolver — is refusing the query. Whatever its code table, as
// long as the table does not map that answer, the lookup is a list error
// (counted in moat_dnsbl_errors_total{kind="blocked_resolver"}), and the
// health probe, which gets the same answer for its test entries, marks
// the list unhealthy for that reason (moat_dnsbl_list_healthy 0).
func TestRbldnsdRefusalRange(t *testing.T) {
	s := startRbldnsd(t)
	c, reg := newChecker(t, fmt.Sprintf(`
dnsbl:
  resolver: %q
  timeout: 2s
  lists:
    - name: filter
      zone: refusing.test
      codes:
        "127.0.0.[2..11]": {weight: 3}
    - {name: plain, zone: refusing.test}
    - name: mapped   # a list whose own table says what .254 means
      zone: refusing.test
      codes:
        "127.255.255.254": {reason: special}
`, s.Addr))
	checkResults(t, c, KindIP, "192.0.2.1", map[string]want{
		"filter": {errKind: ErrKindBlockedResolver},
		"plain":  {errKind: ErrKindBlockedResolver},
		"mapped": {listed: true, reasons: "special", weight: 1},
	})
	for _, list := range []string{"filter", "plain"} {
		if got := metric(t, reg, "moat_dnsbl_errors_total", "list", list, "kind", ErrKindBlockedResolver); got != 1 {
			t.Errorf("moat_dnsbl_errors_total{list=%s,kind=blocked_resolver} = %v, want 1", list, got)
		}
	}

	problems := map[string]string{}
	for _, h := range c.CheckHealth(t.Context()) {
		problems[h.List] = h.Problem
	}
	const refused = "the list refuses our queries (answer 127.255.255.254 for test entry 127.0.0."
	for list, wantRefused := range map[string]bool{"filter": true, "plain": true, "mapped": false} {
		if got := strings.HasPrefix(problems[list], refused); got != wantRefused {
			t.Errorf("%s: health problem %q; want it to say the list refuses our queries: %v", list, problems[list], wantRefused)
		}
		if wantRefused {
			if g := metric(t, reg, "moat_dnsbl_list_healthy", "list", list); g != 0 {
				t.Errorf("moat_dnsbl_list_healthy{list=%s} = %v, want 0", list, g)
			}
		}
	}
}
