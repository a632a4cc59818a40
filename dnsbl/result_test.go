package dnsbl

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// Answers in 127.255.255.0/24 are a list refusing the query (Spamhaus:
// .252 typo in the zone, .254 public resolver, .255 excessive queries)
// unless the list's code table maps them with an address rule: a list
// error, never "not listed" and never "listed".
func TestClassifyRefusalRange(t *testing.T) {
	codes := func(keys ...string) Codes {
		var c Codes
		for _, k := range keys {
			if strings.HasPrefix(k, "error ") {
				c = append(c, errorRule(strings.TrimPrefix(k, "error ")))
			} else {
				c = append(c, rule(k, "r"+k, 1))
			}
		}
		return c
	}
	for _, tc := range []struct {
		name    string
		codes   Codes
		answers []string
		listed  bool
		errKind string
	}{
		{"postscreen-style filter", codes("127.0.0.[2..11]"), []string{"127.255.255.254"}, false, ErrKindBlockedResolver},
		{"filter, typo code", codes("127.0.0.[2..11]"), []string{"127.255.255.252"}, false, ErrKindBlockedResolver},
		{"filter, over quota", codes("127.0.0.[2..11]"), []string{"127.255.255.255"}, false, ErrKindBlockedResolver},
		{"filter, with a listing too", codes("127.0.0.[2..11]"), []string{"127.0.0.2", "127.255.255.254"}, false, ErrKindBlockedResolver},
		{"no codes", nil, []string{"127.255.255.254"}, false, ErrKindBlockedResolver},
		{"only error codes", codes("error 127.0.0.255"), []string{"127.255.255.254"}, false, ErrKindBlockedResolver},
		// A bitmask is read from 127.0.0.x answers; 254 would set
		// nearly every bit.
		{"bitmask", codes("error bit:1", "bit:2", "bit:4", "bit:8"), []string{"127.255.255.254"}, false, ErrKindBlockedResolver},
		// The list's own table may say otherwise.
		{"mapped exactly", codes("127.255.255.254"), []string{"127.255.255.254"}, true, ""},
		{"mapped by pattern", codes("127.*.*.*"), []string{"127.255.255.254"}, true, ""},
		{"error code of the table", codes("127.0.0.2", "error 127.255.255.*"), []string{"127.255.255.254"}, false, ErrKindBlockedResolver},
		// Outside the range nothing changes.
		{"unmapped elsewhere", codes("127.0.0.2"), []string{"127.0.0.99"}, false, ""},
		{"unmapped near", codes("127.0.0.2"), []string{"127.255.254.254"}, false, ""},
		{"no codes elsewhere", nil, []string{"127.0.0.99"}, true, ""},
		{"listed", codes("127.0.0.2"), []string{"127.0.0.2"}, true, ""},
	} {
		l := &list{name: "l", zone: "l.test", codes: tc.codes}
		for _, r := range tc.codes {
			l.listing = l.listing || !r.Error
		}
		res := l.base("192.0.2.1")
		for _, a := range tc.answers {
			res.Answers = append(res.Answers, netip.MustParseAddr(a))
		}
		kind, err := l.classify(&res)
		if kind != "" {
			l.fail(&res, kind, err)
		}
		if res.Listed != tc.listed || res.ErrKind != tc.errKind {
			t.Errorf("%s: answers %v: listed %v, error %q (%v); want listed %v, error %q",
				tc.name, tc.answers, res.Listed, res.ErrKind, res.Err, tc.listed, tc.errKind)
		}
		if tc.errKind != "" && !errors.Is(res.Err, ErrBlocked) {
			t.Errorf("%s: error %v does not wrap ErrBlocked", tc.name, res.Err)
		}
	}
}
