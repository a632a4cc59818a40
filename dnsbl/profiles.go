package dnsbl

import (
	"slices"
)

// profile is a built-in description of a well-known list: its zone, kind,
// return codes with reasons and weights, the codes by which it reports an
// error instead of a listing, and its health test entries. The weights are
// starting points on the scale of DESIGN.md's thresholds (tag 5, reject 10);
// a list's own codes override them entry by entry.
type profile struct {
	zone  string
	kind  Kind
	allow bool
	codes Codes
	// testListed and testUnlisted override RFC 5782 §5's test entries
	// where a list documents others.
	testListed, testUnlisted string
}

// spamhausErrors are the error codes of every Spamhaus zone on the public
// mirrors. Spamhaus reserves 127.255.255.0/24 for answers about the query,
// never about the queried key ("Spamhaus DNSBL return codes: technical
// update", 2019): 127.255.255.252 a typo in the zone name, .254 a query
// through a public/open resolver, .255 an excessive number of queries
// (docs.spamhaus.com, "Available Zones" and "Using our public mirrors?
// Check your return codes now").
var spamhausErrors = Codes{errorRule("127.255.255.*")}

// profiles are the built-in profiles by name.
var profiles = map[Profile]profile{
	// Spamhaus ZEN = SBL + CSS + XBL + PBL (+ DROP, BCL), per
	// docs.spamhaus.com "Available Zones": 127.0.0.2 SBL, .3 CSS, .4 XBL
	// (.5–.7 formerly CBL, kept in the XBL range), .9 DROP, .10–.11 PBL,
	// .30 BCL.
	"spamhaus-zen": {
		zone: "zen.spamhaus.org",
		kind: KindIP,
		codes: append(Codes{
			rule("127.0.0.2", "sbl", 4),
			rule("127.0.0.3", "css", 3),
			rule("127.0.0.[4..7]", "xbl", 6),
			rule("127.0.0.9", "drop", 6),
			rule("127.0.0.[10..11]", "pbl", 2),
			rule("127.0.0.30", "bcl", 6),
		}, spamhausErrors...),
	},
	// Spamhaus DBL, per docs.spamhaus.com "Available Zones": 127.0.1.2
	// low-reputation (spam) domain, .4 phishing, .5 malware, .6 botnet
	// C&C; .102–.106 legitimate domains abused for spam, redirection,
	// phishing, malware, C&C; 127.0.1.255 is an error ("IP queries
	// prohibited"). Test entry dbltest.com (Spamhaus DBL FAQ, "How can I
	// test the DBL?"). Usable as a domain list (sender domains) and as a
	// uri list (body URLs): set kind: uri for the latter.
	"spamhaus-dbl": {
		zone: "dbl.spamhaus.org",
		kind: KindDomain,
		codes: append(Codes{
			rule("127.0.1.2", "spam", 4),
			rule("127.0.1.4", "phish", 6),
			rule("127.0.1.5", "malware", 6),
			rule("127.0.1.6", "botnet", 6),
			rule("127.0.1.102", "abused-legit", 2),
			rule("127.0.1.103", "abused-redirector", 2),
			rule("127.0.1.104", "abused-phish", 4),
			rule("127.0.1.105", "abused-malware", 4),
			rule("127.0.1.106", "abused-botnet", 4),
			errorRule("127.0.1.255"),
		}, spamhausErrors...),
		testListed: "dbltest.com",
	},
	// SpamCop Blocking List: one code, 127.0.0.2.
	"spamcop": {
		zone:  "bl.spamcop.net",
		kind:  KindIP,
		codes: Codes{rule("127.0.0.2", "spamcop", 3)},
	},
	// Barracuda Reputation Block List: one code, 127.0.0.2. Barracuda
	// answers only resolvers registered with it.
	"barracuda": {
		zone:  "b.barracudacentral.org",
		kind:  KindIP,
		codes: Codes{rule("127.0.0.2", "barracuda", 3)},
	},
	// Mailspike BL = z.mailspike.net (127.0.0.2, part of a distributed
	// spam wave) + rep.mailspike.net levels L5–L3 (127.0.0.10–.12), per
	// mailspike.org/usage.html and rspamd's rbl.conf.
	"mailspike-bl": {
		zone: "bl.mailspike.net",
		kind: KindIP,
		codes: Codes{
			rule("127.0.0.2", "wave", 4),
			rule("127.0.0.10", "l5", 4),
			rule("127.0.0.11", "l4", 3),
			rule("127.0.0.12", "l3", 2),
		},
	},
	// Mailspike WL: reputation levels H2–H5 (127.0.0.17–.20), per
	// mailspike.org/usage.html. An allowlist.
	"mailspike-wl": {
		zone:  "wl.mailspike.net",
		kind:  KindIP,
		allow: true,
		codes: Codes{
			rule("127.0.0.17", "h2", 1),
			rule("127.0.0.18", "h3", 2),
			rule("127.0.0.19", "h4", 3),
			rule("127.0.0.20", "h5", 4),
		},
	},
	// DNSWL answers 127.0.C.T: C a category (2 financial, 3 ESP ...),
	// T the trust, 0 none, 1 low, 2 medium, 3 high (dnswl.org return
	// codes; its test entry 127.0.0.2 answers 127.0.10.0). 127.0.0.255
	// means the querier is blocked for exceeding the fair-use limit
	// (dnswl.org's "parentblock", also rspamd's DNSWL_BLOCKED). An
	// allowlist.
	"dnswl": {
		zone:  "list.dnswl.org",
		kind:  KindIP,
		allow: true,
		codes: Codes{
			errorRule("127.0.0.255"),
			rule("127.0.*.0", "none", 0),
			rule("127.0.*.1", "low", 1),
			rule("127.0.*.2", "med", 2),
			rule("127.0.*.3", "hi", 5),
		},
	},
	// SURBL multi: a bitmask in the last octet, 8 PH (phishing), 16 MW
	// (malware), 64 ABUSE, 128 CR (cracked sites); the other bits are
	// retired. 127.0.0.1 (bit 1) answers a blocked querier (rspamd's
	// SURBL_BLOCKED, SpamAssassin's SURBL_BLOCKED). Test entry
	// test.surbl.org is on every list.
	"surbl": {
		zone: "multi.surbl.org",
		kind: KindURI,
		codes: Codes{
			errorRule("bit:1"),
			rule("bit:8", "ph", 5),
			rule("bit:16", "mw", 5),
			rule("bit:64", "abuse", 5),
			rule("bit:128", "cr", 5),
		},
		testListed: "test.surbl.org",
	},
	// URIBL multi: a bitmask in the last octet, 2 black, 4 grey, 8 red;
	// "All queries that we refuse, we return a 127.0.0.1 response to, as
	// bit 0x1 is not used for domain classification"
	// (uribl.com/refused.shtml). Test entry test.uribl.com.
	"uribl": {
		zone: "multi.uribl.com",
		kind: KindURI,
		codes: Codes{
			errorRule("bit:1"),
			rule("bit:2", "black", 5),
			rule("bit:4", "grey", 2),
			rule("bit:8", "red", 3),
		},
		testListed: "test.uribl.com",
	},
}

// ProfileNames returns the names of the built-in profiles, sorted.
func ProfileNames() []string {
	names := make([]string, 0, len(profiles))
	for p := range profiles {
		names = append(names, string(p))
	}
	slices.Sort(names)
	return names
}

func rule(key, reason string, weight float64) CodeRule {
	return CodeRule{Key: mustCodeKey(key), Reason: reason, Weight: weight}
}

func errorRule(key string) CodeRule {
	return CodeRule{Key: mustCodeKey(key), Error: true}
}

func mustCodeKey(s string) CodeKey {
	k, err := ParseCodeKey(s)
	if err != nil {
		panic(err)
	}
	return k
}
