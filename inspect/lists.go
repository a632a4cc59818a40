package inspect

import (
	"context"
	"sync"
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
