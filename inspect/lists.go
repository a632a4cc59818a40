package inspect

import (
	"context"
	"sync"

	"moat/inspect/smtp"
)

// ListKind is what a DNS list is queried with.
type ListKind uint8

// The kinds of lists (package dnsbl's ip, domain and uri).
const (
	KindIP     ListKind = iota + 1 // the client's address
	KindDomain                     // a domain: the HELO name, the sender's, the From: header's
	KindURI                        // hosts of URLs in the message
)

// ListResult is one list's answer about one key.
type ListResult struct {
	List    string   // the configured list name
	Key     string   // what was looked up
	Listed  bool     // on the list (for an allowlist: vouched for)
	Allow   bool     // the list is an allowlist
	Reasons []string // the reasons of the matching return codes
	Weight  float64  // the sum of their weights (negative for allowlists)
	Text    string   // the text for a reject reply ("listed (sbl)"), zone hidden if configured
	Err     error    // a temporary failure: never a listing
	ErrKind string   // timeout, servfail, unhealthy, ...
	// FailClosed: the list is configured on_error: closed, so a failed
	// lookup should tempfail rather than pass.
	FailClosed bool
}

// Blocklists is the DNS list client the engine asks (package dnsbl,
// adapted by the wiring in cmd/moat).
type Blocklists interface {
	// Lookup starts lookups of key on every list of kind and returns at
	// once; wait blocks for the answers, in configured list order.
	Lookup(ctx context.Context, kind ListKind, key string) (wait func(context.Context) []ListResult)
}

type listKey struct {
	kind ListKind
	key  string
}

// pendingList is a Lookup in flight, waited for at most once.
type pendingList struct {
	once    sync.Once
	wait    func(context.Context) []ListResult
	results []ListResult
}

func (p *pendingList) get(ctx context.Context) []ListResult {
	p.once.Do(func() { p.results = p.wait(ctx) })
	return p.results
}

// startKeys starts the lookups of every key on the lists of kind.
func (e *Engine) startKeys(s *Session, kind ListKind, keys []string) {
	for _, k := range keys {
		e.startLists(s, kind, k)
	}
}

// startLists starts the lookups of key on the lists of kind, once per
// session.
func (e *Engine) startLists(s *Session, kind ListKind, key string) {
	if e.blocks == nil || key == "" {
		return
	}
	st := e.state(s)
	k := listKey{kind, key}
	if _, ok := st.lists[k]; ok {
		return
	}
	if st.lists == nil {
		st.lists = make(map[listKey]*pendingList)
	}
	st.lists[k] = &pendingList{wait: e.blocks.Lookup(st.ctx, kind, key)}
}

// ListSource is where the key of a list lookup comes from. The engine
// starts lookups from the same sources, with the same normalisation, as
// the rules later ask for, so a lookup started early is the one a rule
// waits for (one query per key, never two spellings of one name).
type ListSource uint8

// The sources of list keys.
const (
	SourceClientIP ListSource = iota + 1 // the client's address (KindIP)
	SourceHelo                           // the HELO/EHLO name, when it is a domain
	SourceMailFrom                       // the envelope sender's domain
	SourceFrom                           // the From: header's domains
	SourceURL                            // the hosts of URLs in the message (KindURI)
)

// ListKeysFrom returns the lookup keys of src known at this point of the
// session, normalised: lower case, no trailing dot, no address literals.
func (f *Facts) ListKeysFrom(src ListSource) []string {
	return listKeys(f.Session, f.Tx, f.Content, src)
}

func listKeys(s *Session, t *Transaction, c *Content, src ListSource) []string {
	switch src {
	case SourceClientIP:
		if a := s.Client.Addr(); a.IsValid() {
			return []string{a.Unmap().String()}
		}
	case SourceHelo:
		if d := heloDomain(s.Helo); d != "" {
			return []string{d}
		}
	case SourceMailFrom:
		if t != nil && !t.From.IsNull() {
			if d := domainKey(t.From.Domain); d != "" {
				return []string{d}
			}
		}
	case SourceFrom:
		if c != nil {
			var keys []string
			for _, a := range c.From {
				if d := domainKey(a.Domain); d != "" && !containsString(keys, d) {
					keys = append(keys, d)
				}
			}
			return keys
		}
	case SourceURL:
		if c != nil {
			keys := make([]string, 0, len(c.URLs))
			for _, u := range c.URLs {
				if d := domainKey(u.Host); d != "" && !containsString(keys, d) {
					keys = append(keys, d)
				}
			}
			return keys
		}
	}
	return nil
}

// domainKey is a domain as a list key: ASCII lower case, without the
// trailing dot of an absolute name (RFC 1034 §3.1: both spell one name).
func domainKey(d string) string {
	for len(d) > 0 && d[len(d)-1] == '.' {
		d = d[:len(d)-1]
	}
	return smtp.LowerASCII(d)
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
