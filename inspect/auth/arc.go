package auth

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// ARC, the Authenticated Received Chain (RFC 8617), lets an intermediary
// that changes a message (a mailing list adding a footer, a forwarder)
// vouch for what it saw before the change. Each hop that takes part adds
// an ARC set of three header fields with the same instance number i=:
//
//   - ARC-Authentication-Results (AAR): the hop's authentication results;
//   - ARC-Message-Signature (AMS): a DKIM-like signature over chosen
//     header fields and the body, as the hop passed the message on;
//   - ARC-Seal (AS): a signature over all ARC sets so far, with cv=, the
//     hop's verdict on the chain it received (none, pass or fail).
//
// A validator (RFC 8617 §5.2) checks the structure of the sets, that the
// newest AMS still verifies (the message is as the last hop sent it), and
// that every seal verifies (no set was changed or removed). It does not
// judge the hops: whether to trust a sealer is local policy, outside this
// package.
//
// Verification streams: the header fields are known first, so the key
// lookups start at once and overlap the body, whose hashes are computed
// as it is written; the result waits for the keys only at the end.

// arcMaxLookups bounds the key lookups in flight for one message.
const arcMaxLookups = 8

// arcSet is the three header fields of one instance, once the structure
// has been checked.
type arcSet struct {
	aar string  // the raw ARC-Authentication-Results
	ams *arcSig // the ARC-Message-Signature
	as  *arcSig // the ARC-Seal
}

// arcKeyLookup is one key being fetched; done is closed when key or err
// is set.
type arcKeyLookup struct {
	name string
	done chan struct{}
	key  arcKey
	err  error
}

// arcBodyHash is the body hash of one AMS canonicalization (c= body part
// and l=); AMSes that share both share it.
type arcBodyHash struct {
	canon *arcBodyCanon
	sum   []byte
	n     int64 // length of the canonical body
}

// arcVerifier verifies the ARC chain of one message. Its methods are
// called in order and never concurrently (one goroutine, or goroutines
// handing over with a happens-before edge): Write for each piece of the
// body, Close, Result. Only the key lookups run on goroutines of their
// own; they end when answered, when the context given to newARCVerifier
// is cancelled, or when Result returns, whichever comes first. Close
// leaves them running, since Result needs their answers.
type arcVerifier struct {
	ctx    context.Context
	cancel context.CancelFunc
	tracer *Tracer
	now    time.Time

	// done is set when the verdict needs no more than the header: no ARC
	// sets, or a broken structure. res holds it.
	done bool
	res  ARCResult

	sets   []arcSet            // by instance - 1, when the structure holds
	byName map[string][]string // header fields by lowercased name, in order
	keys   map[string]*arcKeyLookup
	bodies []*arcBodyHash // distinct body canonicalizations
	amsBH  []*arcBodyHash // by instance - 1; nil when the AMS is unusable

	// mu guards the body and the verdict: the message's feeder writes
	// and closes the body while a Wait that gives up may ask for the
	// verdict at the same time.
	mu     sync.Mutex
	closed bool
	final  *ARCResult
}

// newARCVerifier starts verifying the ARC chain of a message whose header
// fields (raw, in order, each including its CRLF and folded lines) are
// given; the body follows through Write; result after Close.
func newARCVerifier(ctx context.Context, r Resolver, header []string) *arcVerifier {
	return newARCVerifierAt(ctx, r, header, time.Now())
}

// newARCVerifierAt is newARCVerifier with the time against which t= is
// judged, for tests.
func newARCVerifierAt(ctx context.Context, r Resolver, header []string, now time.Time) *arcVerifier {
	a := &arcVerifier{tracer: NewTracer(r), now: now}
	a.ctx, a.cancel = context.WithCancel(ctx)
	if err := a.parseHeader(header); err != nil {
		a.decide(Fail, err.Error())
	}
	if a.done {
		a.cancel()
		return a
	}
	a.startLookups()
	return a
}

func (a *arcVerifier) decide(res Result, reason string) {
	a.done = true
	a.res.Result = res
	a.res.Reason = reason
}

// parseHeader finds the ARC sets and checks what the header alone can
// tell: RFC 8617 §5.2 steps 1 to 3, and the syntax of each signature.
// It returns the reason for a fail; a message without ARC sets is
// decided as none.
func (a *arcVerifier) parseHeader(header []string) error {
	a.byName = make(map[string][]string)
	type found struct {
		aar     []string
		ams, as []*arcSig
	}
	var byInst [arcMaxSets + 1]found
	arcFields, maxInst, distinct := 0, 0, 0
	var firstErr error
	for _, raw := range header {
		name := arcFieldName(raw)
		if name == "" {
			continue
		}
		a.byName[name] = append(a.byName[name], raw)
		if name != arcNameAAR && name != arcNameAMS && name != arcNameAS {
			continue
		}
		arcFields++
		if firstErr != nil {
			continue
		}
		if arcFields > 3*arcMaxSets {
			// More fields than 50 complete sets hold: too many sets
			// or duplicates, a fail either way (§5.2 steps 1, 3).
			firstErr = errors.New("more ARC header fields than 50 ARC sets hold")
			continue
		}
		var inst int
		var err error
		var sig *arcSig
		if name == arcNameAAR {
			inst, err = arcAARInstance(arcFieldValue(raw))
		} else {
			sig = &arcSig{field: raw}
			if sig.tags, err = ParseTags(arcFieldValue(raw)); err == nil {
				v, _ := sig.tags.Get("i")
				inst, err = arcParseInstance(v)
			}
		}
		if err != nil {
			firstErr = fmt.Errorf("%s: %v", arcDisplay(name), err)
			continue
		}
		slot := &byInst[inst]
		if len(slot.aar)+len(slot.ams)+len(slot.as) == 0 {
			distinct++
		}
		switch name {
		case arcNameAAR:
			slot.aar = append(slot.aar, raw)
		case arcNameAMS:
			slot.ams = append(slot.ams, sig)
		case arcNameAS:
			slot.as = append(slot.as, sig)
		}
		maxInst = max(maxInst, inst)
	}
	if arcFields == 0 {
		a.decide(None, "")
		return nil
	}
	a.res.Instances = distinct
	if firstErr != nil {
		return firstErr
	}
	// §5.2 step 2: a chain its newest sealer declared failed stays failed.
	if top := byInst[maxInst].as; len(top) == 1 {
		if cv, err := arcParseCV(top[0].tags); err == nil && cv == "fail" {
			return fmt.Errorf("ARC-Seal i=%d: cv=fail", maxInst)
		}
	}
	// §5.2 step 3: one AAR, AMS and AS for each of 1..N, and cv= none at
	// i=1, pass above.
	sets := make([]arcSet, maxInst)
	for i := 1; i <= maxInst; i++ {
		f := byInst[i]
		switch {
		case len(f.aar) == 0 && len(f.ams) == 0 && len(f.as) == 0:
			return fmt.Errorf("ARC set i=%d missing", i)
		case len(f.aar) != 1:
			return arcCountErr(arcNameAAR, i, len(f.aar))
		case len(f.ams) != 1:
			return arcCountErr(arcNameAMS, i, len(f.ams))
		case len(f.as) != 1:
			return arcCountErr(arcNameAS, i, len(f.as))
		}
		cv, err := arcParseCV(f.as[0].tags)
		if err != nil {
			return fmt.Errorf("ARC-Seal i=%d: %v", i, err)
		}
		want := "pass"
		if i == 1 {
			want = "none"
		}
		if cv != want {
			return fmt.Errorf("ARC-Seal i=%d: cv=%s where %s is required", i, cv, want)
		}
		f.as[0].instance, f.ams[0].instance, f.as[0].cv = i, i, cv
		sets[i-1] = arcSet{aar: f.aar[0], ams: f.ams[0], as: f.as[0]}
	}
	a.sets = sets
	a.res.Instances = maxInst
	for _, s := range sets {
		if err := s.as.parseSeal(a.now); err != nil {
			// Every seal must verify (§5.2 step 6): no need to ask.
			return fmt.Errorf("ARC-Seal i=%d: %v", s.as.instance, err)
		}
	}
	for _, s := range sets {
		a.res.Sealers = append(a.res.Sealers, s.as.domain)
	}
	a.res.Sealer = a.res.Sealers[maxInst-1]
	for _, s := range sets {
		s.ams.err = s.ams.parseAMS(a.now)
	}
	if err := sets[maxInst-1].ams.err; err != nil {
		// The newest AMS must verify (§5.2 step 4).
		return fmt.Errorf("ARC-Message-Signature i=%d: %v", maxInst, err)
	}
	return nil
}

func arcCountErr(name string, i, n int) error {
	if n == 0 {
		return fmt.Errorf("ARC set i=%d has no %s", i, arcDisplay(name))
	}
	return fmt.Errorf("ARC set i=%d has %d %s fields", i, n, arcDisplay(name))
}

func arcDisplay(name string) string {
	switch name {
	case arcNameAAR:
		return "ARC-Authentication-Results"
	case arcNameAMS:
		return "ARC-Message-Signature"
	}
	return "ARC-Seal"
}

// startLookups asks for the key of every seal and usable AMS, at most
// arcMaxLookups at a time, and sets up the body hashes.
func (a *arcVerifier) startLookups() {
	a.keys = make(map[string]*arcKeyLookup)
	var order []*arcKeyLookup
	want := func(s *arcSig) {
		name := s.keyName()
		if _, ok := a.keys[name]; ok {
			return
		}
		l := &arcKeyLookup{name: name, done: make(chan struct{})}
		a.keys[name] = l
		order = append(order, l)
	}
	// Newest first: the verdict needs the newest AMS and every seal;
	// older AMSes only the oldest-pass figure.
	n := len(a.sets)
	want(a.sets[n-1].ams)
	for i := n - 1; i >= 0; i-- {
		want(a.sets[i].as)
	}
	a.amsBH = make([]*arcBodyHash, n)
	for i := n - 1; i >= 0; i-- {
		s := a.sets[i].ams
		if s.err != nil {
			continue
		}
		want(s)
		a.amsBH[i] = a.bodyHash(s.bcanon, s.limit)
	}
	sem := make(chan struct{}, arcMaxLookups)
	for _, l := range order {
		go a.lookup(l, sem)
	}
}

// bodyHash returns the shared body hash for a canonicalization and l=.
func (a *arcVerifier) bodyHash(c arcCanon, limit int64) *arcBodyHash {
	for _, b := range a.bodies {
		if b.canon.relaxed == (c == arcRelaxed) && b.canon.limit == limit {
			return b
		}
	}
	b := &arcBodyHash{canon: newARCBodyCanon(c, sha256.New(), limit)}
	a.bodies = append(a.bodies, b)
	return b
}

// arcMaxKeyRecords bounds the TXT records looked at for one key.
const arcMaxKeyRecords = 4

func (a *arcVerifier) lookup(l *arcKeyLookup, sem chan struct{}) {
	defer close(l.done)
	select {
	case sem <- struct{}{}:
		defer func() { <-sem }()
	case <-a.ctx.Done():
		l.err = a.ctx.Err()
		return
	}
	txts, err := a.tracer.LookupTXT(a.ctx, l.name)
	switch {
	case IsNotFound(err):
		l.err = fmt.Errorf("no key at %s", l.name)
		return
	case err != nil:
		l.err = fmt.Errorf("temporary DNS failure looking up %s: %v", l.name, err)
		return
	case len(txts) == 0:
		l.err = fmt.Errorf("no key at %s", l.name)
		return
	}
	// RFC 6376 §3.6.2.2: with several records a verifier may pick one;
	// the first that parses is taken.
	for i, txt := range txts {
		if i == arcMaxKeyRecords {
			break
		}
		k, err := arcParseKey(txt)
		if err == nil {
			l.key, l.err = k, nil
			return
		}
		if l.err == nil {
			l.err = fmt.Errorf("%s: %v", l.name, err)
		}
	}
}

// Write hashes a piece of the body for every AMS.
func (a *arcVerifier) Write(body []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return 0, errors.New("arc: write after close")
	}
	for _, b := range a.bodies {
		b.canon.Write(body)
	}
	return len(body), nil
}

// Close ends the body. The key lookups go on: Result needs them.
func (a *arcVerifier) Close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closeLocked()
}

func (a *arcVerifier) closeLocked() {
	if a.closed {
		return
	}
	a.closed = true
	for _, b := range a.bodies {
		b.n = b.canon.Close()
		b.sum = b.canon.h.Sum(nil)
	}
}

// Result returns the verdict, waiting for the keys it needs until ctx
// ends; a key not had by then makes its signature fail. The lookups still
// running are cancelled when it returns. Result closes the body if Close
// was not called; calling it again returns the same verdict.
func (a *arcVerifier) Result(ctx context.Context) ARCResult {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.final != nil {
		return *a.final
	}
	a.closeLocked()
	res := a.res
	if !a.done {
		res = a.evaluate(ctx)
	}
	a.cancel()
	res.Lookups = a.tracer.Lookups()
	a.final = &res
	return res
}

// evaluate runs the signature checks of RFC 8617 §5.2 on a chain whose
// structure holds.
func (a *arcVerifier) evaluate(ctx context.Context) ARCResult {
	res := a.res
	n := len(a.sets)
	fail := func(format string, args ...any) ARCResult {
		res.Result = Fail
		res.Reason = fmt.Sprintf(format, args...)
		return res
	}
	// Step 4: the newest AMS verifies, or the message was changed since
	// the last hop sealed it.
	if err := a.verifyAMS(ctx, n); err != nil {
		return fail("ARC-Message-Signature i=%d: %v", n, err)
	}
	// Step 6: every seal verifies, newest first.
	for i := n; i >= 1; i-- {
		if err := a.verifySeal(ctx, i); err != nil {
			return fail("ARC-Seal i=%d: %v", i, err)
		}
	}
	// Step 5 (optional, done last since it cannot change the verdict):
	// oldest-pass, the lowest instance from which every AMS up to the
	// newest still verifies.
	res.OldestPass = n
	for i := n - 1; i >= 1; i-- {
		if a.verifyAMS(ctx, i) != nil {
			break
		}
		res.OldestPass = i
	}
	res.Result = Pass
	return res
}

func (a *arcVerifier) key(ctx context.Context, s *arcSig) (arcKey, error) {
	l := a.keys[s.keyName()]
	select {
	case <-l.done:
		return l.key, l.err
	case <-ctx.Done():
		return arcKey{}, fmt.Errorf("looking up %s: %v", l.name, ctx.Err())
	}
}

func (a *arcVerifier) verifyAMS(ctx context.Context, i int) error {
	s := a.sets[i-1].ams
	if s.err != nil {
		return s.err
	}
	bh := a.amsBH[i-1]
	if s.limit > bh.n {
		// RFC 6376 §6.1.3: l= beyond the body's end fails.
		return errors.New("l= is longer than the body")
	}
	if !bytes.Equal(bh.sum, s.bh) {
		return errors.New("body hash does not match bh=")
	}
	k, err := a.key(ctx, s)
	if err != nil {
		return err
	}
	return k.verify(s.alg, arcHashAMS(s, a.byName), s.sig)
}

func (a *arcVerifier) verifySeal(ctx context.Context, i int) error {
	s := a.sets[i-1].as
	k, err := a.key(ctx, s)
	if err != nil {
		return err
	}
	return k.verify(s.alg, arcHashSeal(a.sets, i), s.sig)
}

// arcMaxHeader bounds the header VerifyARC reads.
const arcMaxHeader = 1 << 20

// VerifyARC verifies the ARC chain of a whole message (RFC 8617 §5.2), for
// tests and `moat auth check`. The message is taken as stored in a file:
// lines may end in LF alone, which counts as CRLF, the form it had on the
// wire.
func VerifyARC(ctx context.Context, r Resolver, message io.Reader) ARCResult {
	return verifyARCAt(ctx, r, message, time.Now())
}

func verifyARCAt(ctx context.Context, r Resolver, message io.Reader, now time.Time) ARCResult {
	br := bufio.NewReader(message)
	var header []string
	var field strings.Builder // the field being read, continuation lines and all
	size := 0
	for {
		line, err := arcReadLine(br, arcMaxHeader-size)
		if errors.Is(err, bufio.ErrBufferFull) {
			return ARCResult{Result: Fail, Reason: "header too large"}
		}
		if line == "" && err != nil {
			break
		}
		size += len(line)
		if strings.HasSuffix(line, "\n") && !strings.HasSuffix(line, "\r\n") {
			line = line[:len(line)-1] + "\r\n"
		} else if !strings.HasSuffix(line, "\n") {
			line += "\r\n" // the last line of a message with no body
		}
		if line == "\r\n" {
			break
		}
		if line[0] != ' ' && line[0] != '\t' && field.Len() > 0 {
			header = append(header, field.String())
			field.Reset()
		}
		field.WriteString(line)
		if err != nil {
			break
		}
	}
	if field.Len() > 0 {
		header = append(header, field.String())
	}
	v := newARCVerifierAt(ctx, r, header, now)
	if !v.done {
		io.Copy(&arcCRLFWriter{w: v}, br)
	}
	v.Close()
	return v.Result(ctx)
}

// arcReadLine reads a line of at most limit bytes, or returns
// bufio.ErrBufferFull.
func arcReadLine(br *bufio.Reader, limit int) (string, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		if len(line)+len(frag) > limit {
			return "", bufio.ErrBufferFull
		}
		line = append(line, frag...)
		if err != bufio.ErrBufferFull {
			return string(line), err
		}
	}
}

// arcCRLFWriter turns every LF not preceded by CR into CRLF.
type arcCRLFWriter struct {
	w      io.Writer
	lastCR bool
	buf    []byte
}

func (c *arcCRLFWriter) Write(p []byte) (int, error) {
	c.buf = c.buf[:0]
	for _, ch := range p {
		if ch == '\n' && !c.lastCR {
			c.buf = append(c.buf, '\r')
		}
		c.buf = append(c.buf, ch)
		c.lastCR = ch == '\r'
	}
	if _, err := c.w.Write(c.buf); err != nil {
		return 0, err
	}
	return len(p), nil
}
