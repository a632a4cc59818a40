package auth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/emersion/go-msgauth/dkim"
)

// DKIM (RFC 6376) lets a domain take responsibility for a message: a
// signer hashes the body and chosen header fields and signs the hashes
// with a private key; the signature travels in a DKIM-Signature header
// field naming the domain (d=) and a selector (s=); the verifier fetches
// the public key from the TXT record s._domainkey.d and checks both
// hashes. RFC 8301 retired rsa-sha1 and keys under 1024 bits; RFC 8463
// added ed25519-sha256.
//
// The cryptography and canonicalization are go-msgauth's. This file adds
// what a proxy needs around it: the key lookups go through a Resolver and
// are traced, each signature's s= and a= are read from the field itself
// (go-msgauth does not return them), errors become RFC 8601 results, and
// only a bounded number of signatures is verified.

// dkimFieldName is the name go-msgauth matches, case-insensitively, after
// trimming space around it.
const dkimFieldName = "DKIM-Signature"

// dkimSig is one DKIM-Signature field of a message, as read by moat
// before go-msgauth verifies it.
type dkimSig struct {
	base    DKIMResult // Domain, Selector, Algorithm, Identifier from the tags
	tagErr  error      // the tag list does not parse (RFC 6376 §3.2)
	keyName string     // selector._domainkey.domain, lower case
	signed  int        // the number of names in h=
}

// isDKIMSignature reports whether a header field (its text, lines joined
// with CRLF) is a DKIM-Signature field, by exactly go-msgauth's test: the
// text before the first colon, trimmed, equals the name in any case. The
// results are matched to go-msgauth's verifications by position, so the
// two must never disagree on which fields are signatures.
func isDKIMSignature(text string) bool {
	k, _, _ := strings.Cut(text, ":")
	return strings.EqualFold(strings.TrimSpace(k), dkimFieldName)
}

// parseDKIMSig reads the identities of a DKIM-Signature field, for the
// result: go-msgauth verifies the field, this only names it.
func parseDKIMSig(text string) dkimSig {
	_, v, _ := strings.Cut(text, ":")
	var s dkimSig
	tags, err := ParseTags(v)
	if err != nil {
		s.tagErr = err
		return s
	}
	get := func(name string) string { v, _ := tags.Get(name); return StripFWS(v) }
	s.base = DKIMResult{
		Domain:     get("d"),
		Selector:   get("s"),
		Algorithm:  get("a"),
		Identifier: get("i"),
	}
	if s.base.Identifier == "" && s.base.Domain != "" {
		s.base.Identifier = "@" + s.base.Domain
	}
	if h := get("h"); h != "" {
		s.signed = strings.Count(h, ":") + 1
	}
	if s.base.Domain != "" && s.base.Selector != "" {
		s.keyName = strings.ToLower(s.base.Selector + "._domainkey." + s.base.Domain)
	}
	return s
}

// dkimVerifier runs go-msgauth over one message, which it reads from a
// pipe: the header section first (written whole, so that go-msgauth can
// start the key lookups), then the body as it arrives.
type dkimVerifier struct {
	sigs []dkimSig
	max  int // signatures verified; the rest are reported as policy
	keys *keyCache
	pw   *io.PipeWriter // nil when go-msgauth is not run

	// refused says why go-msgauth is not run on this header.
	refused string
	// run watches the body for runs of line ends; cut is set when one
	// grew too long and go-msgauth was given no more of the body.
	run lineEndRun
	cut atomic.Bool

	done chan struct{} // closed when go-msgauth has returned
	// Set before done is closed.
	verifs []*dkim.Verification
	err    error
}

// go-msgauth does some of its work in time that grows with the square of
// what the message holds; these bounds keep every message linear, far
// above what any real signer or message needs. Beyond them the
// signatures are reported with result policy (RFC 8601 §2.7.1: not
// acceptable to the ADMD) and the reason.
const (
	// maxFoldCost bounds the sum, over the header fields, of lines times
	// bytes: go-msgauth's readHeader appends each continuation line to
	// its field's string, copying the field every time (a field folded
	// over 200,000 lines took 25 s). A 2,000-recipient To: field folded
	// one address a line costs about 160 MB.
	maxFoldCost = 256 << 20
	// maxPickCost bounds, per signature, the names in h= times the
	// fields in the header: go-msgauth looks for each name from the
	// bottom of the header (50,000 names in a header of 50,000 fields
	// took 16 s). 500 names in a header of 2,000 fields fit.
	maxPickCost = 1 << 20
	// maxLineEndRun bounds a run of CR and LF bytes in the body:
	// go-msgauth's simple body canonicalization copies the whole pending
	// run of empty lines on every 4 KiB it reads, and its relaxed one
	// keeps the run in memory (8 MiB of CRLF took 19 s and 18 GB of
	// allocations).
	maxLineEndRun = 64 << 10
)

// lineEndRun counts consecutive CR and LF bytes across writes.
type lineEndRun struct{ n int }

// exceeds reports whether b makes the run longer than maxLineEndRun.
func (r *lineEndRun) exceeds(b []byte) bool {
	for _, c := range b {
		if c != '\r' && c != '\n' {
			r.n = 0
		} else if r.n++; r.n > maxLineEndRun {
			return true
		}
	}
	return false
}

// tooCostly says why a header would cost go-msgauth too much, or "".
// fields are the header fields as go-msgauth gets them.
func tooCostly(fields []string, sigs []dkimSig, max int) string {
	fold := 0
	for _, f := range fields {
		fold += strings.Count(f, "\n") * len(f)
		if fold > maxFoldCost {
			return "header fields folded over too many lines: not verified"
		}
	}
	for i, s := range sigs[:min(len(sigs), max)] {
		if s.signed*len(fields) > maxPickCost {
			return fmt.Sprintf("signature %d names %d fields in a header of %d: not verified", i+1, s.signed, len(fields))
		}
	}
	return ""
}

// errVerifierPanic stands for a recovered panic in the verifier.
var errVerifierPanic = errors.New("internal error in DKIM verification")

// startDKIM starts verifying sigs (every DKIM-Signature field, in header
// order) of the message whose header fields are fields (each with its
// CRLFs) and whose bytes will be written to the returned verifier's pipe.
// It returns nil when there is no signature to verify.
func startDKIM(ctx context.Context, r Resolver, fields []string, sigs []dkimSig, max int) *dkimVerifier {
	if len(sigs) == 0 {
		return nil
	}
	d := &dkimVerifier{
		sigs:    sigs,
		max:     max,
		keys:    &keyCache{ctx: ctx, r: r, m: map[string]*keyEntry{}},
		refused: tooCostly(fields, sigs, max),
		done:    make(chan struct{}),
	}
	if d.refused != "" {
		close(d.done)
		return d
	}
	pr, pw := io.Pipe()
	d.pw = pw
	go func() {
		defer close(d.done)
		// Whatever go-msgauth has not read is refused from now on, so
		// that the feeder never blocks on a reader that has returned
		// (with one signature, go-msgauth returns as soon as it knows
		// the verdict, without reading the rest of the body).
		defer pr.Close()
		defer func() {
			if v := recover(); v != nil {
				messagePanics.Add(1)
				d.verifs, d.err = nil, errVerifierPanic
			}
		}()
		d.verifs, d.err = dkim.VerifyWithOptions(pr, &dkim.VerifyOptions{
			LookupTXT:        d.keys.lookup,
			MaxVerifications: max,
		})
	}()
	return d
}

// results turns go-msgauth's verifications into one result per
// signature. finished says go-msgauth has returned; complete that it was
// given the whole message.
func (d *dkimVerifier) results(finished, complete bool) []DKIMResult {
	out := make([]DKIMResult, len(d.sigs))
	checked := min(len(d.sigs), d.max)
	// go-msgauth returns one verification per signature field, in header
	// order, for the first MaxVerifications of them; with any other
	// error (which only a failing reader could cause, and ours never
	// fails) the verifications cannot be trusted: parallelVerify clears
	// the Err of the one that failed.
	usable := finished && len(d.verifs) == checked &&
		(d.err == nil || errors.Is(d.err, dkim.ErrTooManySignatures))
	for i, s := range d.sigs {
		res := s.base
		switch {
		case i >= checked:
			// RFC 6376 §6.1 lets a verifier limit the signatures it
			// checks. RFC 8601 §2.7.1 "policy": the message was signed
			// but some aspect of the signatures was not acceptable to the
			// ADMD, which is what the limit is; "neutral" would claim the
			// signature itself could not be processed.
			res.Result, res.Reason = Policy, "too many signatures"
		case s.tagErr != nil:
			// RFC 6376 §3.2, §6.1.1: a tag list that does not parse makes
			// the signature PERMFAIL, whatever a laxer parser made of it.
			res.Result, res.Reason = PermError, "signature syntax error: "+s.tagErr.Error()
		case d.refused != "":
			res.Result, res.Reason = Policy, d.refused
		case !finished:
			res.Result, res.Reason = TempError, "verification did not finish"
		case !usable:
			reason := "verification failed"
			if d.err != nil {
				reason = trimDKIMError(d.err)
			}
			res.Result, res.Reason = TempError, reason
		default:
			v := d.verifs[i]
			res.Result, res.Reason = dkimResult(v.Err)
			if res.Domain == "" {
				res.Domain = v.Domain
			}
			if v.Identifier != "" {
				res.Identifier = v.Identifier
			}
			if d.cut.Load() && (res.Result == Pass || res.Result == Fail) {
				// The body was cut short at a run of line ends.
				res.Result, res.Reason = Policy, fmt.Sprintf("body has a run of more than %d line-end bytes: not verified", maxLineEndRun)
			} else if !complete && res.Result != PermError {
				// The body was cut short by cancellation: a fail (or a
				// pass) would be about bytes the signer never signed.
				res.Result, res.Reason = TempError, "message not read to its end"
			}
		}
		if i < checked {
			res.Lookups = d.keys.lookups(s.keyName)
		}
		out[i] = res
	}
	return out
}

// dkimResult maps a go-msgauth verification error to an RFC 8601 §2.7.1
// result and a reason.
func dkimResult(err error) (Result, string) {
	switch {
	case err == nil:
		return Pass, ""
	case dkim.IsTempFail(err):
		return TempError, trimDKIMError(err)
	case dkim.IsPermFail(err):
		return PermError, trimDKIMError(err)
	default:
		// A signature or body hash that does not verify, and l= (which
		// go-msgauth refuses outright: it lets anyone append to the
		// body).
		return Fail, trimDKIMError(err)
	}
}

func trimDKIMError(err error) string { return strings.TrimPrefix(err.Error(), "dkim: ") }

// keyCache asks for each key record once per message, through a Tracer,
// and keeps the lookups for the results of the signatures that named it.
type keyCache struct {
	ctx context.Context
	r   Resolver
	mu  sync.Mutex
	m   map[string]*keyEntry
}

type keyEntry struct {
	done    chan struct{}
	txt     []string
	err     error
	lookups []Lookup
}

// errInvalidKeyName is refused without asking: d= and s= must make a DNS
// name (RFC 6376 §3.5: d= is a domain name, s= a sub-domain sequence).
var errInvalidKeyName = errors.New("invalid key record name")

// keyNotFound is what go-msgauth is given for a record that does not
// exist: any error that is not a temporary net.Error makes it PERMFAIL
// "no key for signature" (RFC 6376 §6.1.2).
type keyNotFound struct{ name string }

func (e keyNotFound) Error() string { return e.name + ": no key record" }

// lookup is go-msgauth's LookupTXT. go-msgauth turns a net.Error whose
// Temporary() is true into TEMPFAIL and every other error into PERMFAIL,
// so a failed lookup is handed over as a temporary *net.DNSError.
func (k *keyCache) lookup(name string) ([]string, error) {
	if !validKeyName(name) {
		return nil, errInvalidKeyName
	}
	lname := strings.ToLower(name)
	k.mu.Lock()
	e, ok := k.m[lname]
	if !ok {
		e = &keyEntry{done: make(chan struct{})}
		k.m[lname] = e
	}
	k.mu.Unlock()
	if !ok {
		tr := NewTracer(k.r)
		e.txt, e.err = tr.LookupTXT(k.ctx, name)
		e.lookups = tr.Lookups()
		close(e.done)
	} else {
		select {
		case <-e.done:
		case <-k.ctx.Done():
			return nil, &net.DNSError{Err: k.ctx.Err().Error(), Name: name, IsTemporary: true}
		}
	}
	switch {
	case e.err == nil:
		return e.txt, nil
	case IsNotFound(e.err):
		return nil, keyNotFound{name}
	default:
		return nil, &net.DNSError{Err: e.err.Error(), Name: name, IsTemporary: true}
	}
}

// lookups returns the questions asked for name, once answered.
func (k *keyCache) lookups(name string) []Lookup {
	k.mu.Lock()
	e := k.m[name]
	k.mu.Unlock()
	if e == nil {
		return nil
	}
	select {
	case <-e.done:
		return e.lookups
	default:
		return nil
	}
}

// validKeyName reports whether name is a DNS name moat will ask for:
// at most 253 octets, labels of 1 to 63 letters, digits, hyphens and
// underscores (_domainkey has one).
func validKeyName(name string) bool {
	if len(name) == 0 || len(name) > 253 {
		return false
	}
	for _, label := range strings.Split(name, ".") {
		if len(label) == 0 || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !isAlpha(c) && !('0' <= c && c <= '9') && c != '-' && c != '_' {
				return false
			}
		}
	}
	return true
}
