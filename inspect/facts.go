package inspect

import (
	"context"
	"time"

	"moat/inspect/auth"
	"moat/inspect/classifier"
)

// Facts is everything known at one stage, handed to the Judge. Fields of
// later stages are nil before them.
type Facts struct {
	Stage   Stage
	Session *Session
	Tx      *Transaction // from mail on
	Rcpt    *Recipient   // at rcpt: the recipient being judged
	Message *Message     // at data
	Content *Content     // at data, parsed as deep as the rules need
	Now     time.Time
	// Auth is the sender authentication of the message, at data (nil
	// when it is not configured).
	Auth *auth.Results

	ctx        context.Context
	engine     *Engine
	classified *classified     // the message's classification, once computed
	doc        *classifier.Doc // the message as the classifier reads it, once made
}

// RDNS returns the client's reverse DNS name and whether it is
// forward-confirmed (FCrDNS), waiting for the lookup started at connect.
// ok is false when no name could be found; err is set when the lookup
// failed rather than answered.
func (f *Facts) RDNS() (name string, confirmed bool, err error) {
	st := f.Session.engine
	if st == nil || st.rdns == nil {
		return "", false, errNoResolver
	}
	select {
	case <-st.rdns.done:
	case <-f.ctx.Done():
		return "", false, f.ctx.Err()
	}
	return st.rdns.name, st.rdns.confirmed, st.rdns.err
}

// Lists returns the answers of every list of kind about key, waiting for
// lookups in flight (and starting them if the engine has not yet).
func (f *Facts) Lists(kind ListKind, key string) []ListResult {
	if f.engine == nil || f.engine.blocks == nil || key == "" {
		return nil
	}
	f.engine.startLists(f.Session, kind, key)
	return f.Session.engine.lists[listKey{kind, key}].get(f.ctx)
}

// ListKeys returns the keys of kind to look up at this stage: the client
// address for ip lists; the HELO name, the sender domain and the From:
// domain for domain lists, as far as known; URL hosts for uri lists.
func (f *Facts) ListKeys(kind ListKind) []string {
	switch kind {
	case KindIP:
		return f.ListKeysFrom(SourceClientIP)
	case KindDomain:
		var keys []string
		for _, src := range []ListSource{SourceHelo, SourceMailFrom, SourceFrom} {
			for _, k := range f.ListKeysFrom(src) {
				if !containsString(keys, k) {
					keys = append(keys, k)
				}
			}
		}
		return keys
	case KindURI:
		return f.ListKeysFrom(SourceURL)
	}
	return nil
}

type constError string

func (e constError) Error() string { return string(e) }

const errNoResolver = constError("no resolver configured")
