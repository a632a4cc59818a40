package rules

import (
	"net/netip"
	"strings"

	"moat/inspect"
)

// tri is a three-valued truth: a condition over a failed lookup is
// unknown, and the rule's on_error decides what that means.
type tri uint8

const (
	tFalse tri = iota
	tTrue
	tUnknown
)

func triOf(b bool) tri {
	if b {
		return tTrue
	}
	return tFalse
}

// evalCtx carries one rule's evaluation.
type evalCtx struct {
	f         *inspect.Facts
	matched   func(rule string) bool // meta rules: did that rule match?
	unknownAs tri                    // tUnknown normally; tFalse under on_error: accept
	weight    float64                // DNS list weight of the lists that matched
	notes     []string               // what the DNS lists said, for the trace
	listTexts []string               // what they said in words fit for a reply
	closed    bool                   // a failed lookup on a fail-closed list
	scans     *scanCache             // shared by the rules of one evaluation
}

// cond is a compiled condition.
type cond interface {
	eval(c *evalCtx) tri
}

type allCond []cond

func (a allCond) eval(c *evalCtx) tri {
	r := tTrue
	for _, x := range a {
		switch x.eval(c) {
		case tFalse:
			return tFalse
		case tUnknown:
			r = tUnknown
		}
	}
	return r
}

type anyCond []cond

func (a anyCond) eval(c *evalCtx) tri {
	r := tFalse
	for _, x := range a {
		switch x.eval(c) {
		case tTrue:
			return tTrue
		case tUnknown:
			r = tUnknown
		}
	}
	return r
}

type notCond struct{ c cond }

func (n notCond) eval(c *evalCtx) tri {
	switch n.c.eval(c) {
	case tTrue:
		return tFalse
	case tFalse:
		return tTrue
	}
	return tUnknown
}

// ruleCond is a meta condition: another rule matched (SpamAssassin meta).
type ruleCond struct{ name string }

func (r ruleCond) eval(c *evalCtx) tri { return triOf(c.matched(r.name)) }

// strOp tests string values; the condition holds when any value passes.
type strOp struct {
	fact fact
	test func(v string) bool
	re   *matcher // matches, with its literal prefilter
	// exists: true tests presence, false absence (test is nil then).
	exists *bool
}

func (s strOp) eval(c *evalCtx) tri {
	vals, err := s.fact.strs(c.f)
	if err != nil {
		return c.unknownAs
	}
	if s.exists != nil {
		has := false
		for _, v := range vals {
			if v != "" {
				has = true
			}
		}
		return triOf(has == *s.exists)
	}
	for _, v := range vals {
		if s.re != nil && s.re.match(v, c.scans) || s.re == nil && s.test(v) {
			return tTrue
		}
	}
	return tFalse
}

type numOp struct {
	fact   fact
	test   func(v float64) bool
	exists *bool
}

func (n numOp) eval(c *evalCtx) tri {
	if n.fact.numErr != nil {
		v, err := n.fact.numErr(c.f)
		switch {
		case n.exists != nil:
			return triOf((err == nil) == *n.exists)
		case err != nil:
			return c.unknownAs
		}
		return triOf(n.test(v))
	}
	v, ok := n.fact.num(c.f)
	if n.exists != nil {
		return triOf(ok == *n.exists)
	}
	return triOf(ok && n.test(v))
}

type boolOp struct {
	fact fact
	want bool
}

func (b boolOp) eval(c *evalCtx) tri {
	v, err := b.fact.flag(c.f)
	if err != nil {
		return c.unknownAs
	}
	return triOf(v == b.want)
}

type ipOp struct {
	fact   fact
	test   func(a netip.Addr) bool
	exists *bool
}

func (o ipOp) eval(c *evalCtx) tri {
	a, ok := o.fact.ip(c.f)
	if o.exists != nil {
		return triOf(ok == *o.exists)
	}
	return triOf(ok && o.test(a.Unmap()))
}

// listCond tests the answers of a DNS list: listed, optionally with a
// reason and a weight bound.
type listCond struct {
	list   string
	kind   inspect.ListKind
	on     string // which key: client_ip, helo, mail_from, from, url
	reason string
	weight func(float64) bool
}

func (l listCond) eval(c *evalCtx) tri {
	keys := listKeys(c.f, l.kind, l.on)
	r := tFalse
	for _, k := range keys {
		for _, res := range c.f.Lists(l.kind, k) {
			if res.List != l.list {
				continue
			}
			if res.Err != nil {
				c.notes = append(c.notes, l.list+": "+k+" lookup failed ("+res.ErrKind+")")
				c.closed = c.closed || res.FailClosed
				if r == tFalse {
					r = c.unknownAs
				}
				continue
			}
			if !res.Listed || l.reason != "" && !contains(res.Reasons, l.reason) || l.weight != nil && !l.weight(res.Weight) {
				continue
			}
			c.weight += res.Weight
			c.notes = append(c.notes, l.list+": "+k+" "+res.Text)
			c.listTexts = append(c.listTexts, res.Text)
			return tTrue
		}
	}
	return r
}

// listKeys picks the lookup keys a list condition tests: the keys
// package inspect derives, with the same normalisation as the lookups the
// engine started early.
func listKeys(f *inspect.Facts, kind inspect.ListKind, on string) []string {
	if src, ok := listSources[on]; ok {
		return f.ListKeysFrom(src)
	}
	return f.ListKeys(kind)
}

// listSources maps a list condition's "on:" to where its keys come from.
var listSources = map[string]inspect.ListSource{
	"client_ip": inspect.SourceClientIP,
	"helo":      inspect.SourceHelo,
	"mail_from": inspect.SourceMailFrom,
	"from":      inspect.SourceFrom,
	"url":       inspect.SourceURL,
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// String operators. equals, contains, starts_with, ends_with and in
// compare case-insensitively — mail addresses, domains and header names
// are case-insensitive in practice; matches is RE2 as written (use (?i)).
func opEquals(want string) func(string) bool {
	return func(v string) bool { return strings.EqualFold(v, want) }
}

func opContains(want string) func(string) bool {
	w := strings.ToLower(want)
	return func(v string) bool { return strings.Contains(strings.ToLower(v), w) }
}

func opStartsWith(want string) func(string) bool {
	return func(v string) bool { return len(v) >= len(want) && strings.EqualFold(v[:len(want)], want) }
}

func opEndsWith(want string) func(string) bool {
	return func(v string) bool { return len(v) >= len(want) && strings.EqualFold(v[len(v)-len(want):], want) }
}

func opIn(set map[string]bool) func(string) bool {
	return func(v string) bool { return set[strings.ToLower(v)] }
}

func opCIDR(prefixes []netip.Prefix) func(netip.Addr) bool {
	return func(a netip.Addr) bool {
		for _, p := range prefixes {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
}
