package auth

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"moat/inspect/smtp"
)

// The three header fields of an ARC set (RFC 8617 §4.1) and how each is
// read: ARC-Authentication-Results only for its instance, ARC-Seal and
// ARC-Message-Signature as DKIM-like signatures.

// Lowercased header field names.
const (
	arcNameAAR = "arc-authentication-results"
	arcNameAMS = "arc-message-signature"
	arcNameAS  = "arc-seal"
)

// arcField is one header field of the message.
type arcField struct {
	raw  string // as received: folded lines, final CRLF
	name string // lowercased, WSP before the colon removed
}

// arcFieldName returns the lowercased name of a raw header field, "" when
// it has no colon.
func arcFieldName(raw string) string {
	name, _, ok := strings.Cut(raw, ":")
	if !ok {
		return ""
	}
	return smtp.LowerASCII(strings.TrimRight(name, " \t"))
}

// arcFieldValue returns what follows the colon, folding and all.
func arcFieldValue(raw string) string {
	_, v, _ := strings.Cut(raw, ":")
	return v
}

// arcMaxSets is the most ARC sets a message may carry (RFC 8617 §4.2.1:
// i= runs from 1 to 50).
const arcMaxSets = 50

var errInstance = errors.New("i= is not an instance from 1 to 50")

// arcParseInstance parses an instance value (RFC 8617 §4.2.1:
// i-value = 1*2DIGIT, from 1 to 50).
func arcParseInstance(v string) (int, error) {
	if len(v) == 0 || len(v) > 2 || !arcAllDigits(v) {
		return 0, errInstance
	}
	n, _ := strconv.Atoi(v)
	if n < 1 || n > arcMaxSets {
		return 0, errInstance
	}
	return n, nil
}

func arcAllDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// arcAARInstance reads the instance of an ARC-Authentication-Results
// field, whose value is "i=N;" followed by an Authentication-Results
// payload (RFC 8617 §4.1.1: arc-info = instance [CFWS] ";" authres-payload).
// The instance must come first and be followed by a semicolon.
func arcAARInstance(value string) (int, error) {
	v := trimFWS(value)
	if !strings.HasPrefix(v, "i") {
		return 0, errInstance
	}
	v = trimFWS(v[1:])
	if !strings.HasPrefix(v, "=") {
		return 0, errInstance
	}
	v = trimFWS(v[1:])
	n := 0
	for n < len(v) && '0' <= v[n] && v[n] <= '9' {
		n++
	}
	inst, err := arcParseInstance(v[:n])
	if err != nil {
		return 0, err
	}
	if rest := trimFWS(v[n:]); !strings.HasPrefix(rest, ";") {
		return 0, errInstance
	}
	return inst, nil
}

// arcSig is a parsed ARC-Seal or ARC-Message-Signature.
type arcSig struct {
	field    string // the raw header field
	tags     Tags
	instance int

	alg    string   // a=, lowercased
	sig    []byte   // b=
	domain string   // d=, lowercased
	sel    string   // s=, lowercased
	cv     string   // ARC-Seal: cv=, lowercased
	bh     []byte   // AMS: bh=
	hdrs   []string // AMS: h=, lowercased names
	hcanon arcCanon // AMS: c= header part
	bcanon arcCanon // AMS: c= body part
	limit  int64    // AMS: l=, -1 when absent

	// err says why the signature cannot verify, found while parsing.
	err error
}

// keyName is the DNS name of the signature's key (RFC 6376 §3.6.2.1).
func (s *arcSig) keyName() string { return s.sel + "._domainkey." + s.domain }

// arcFutureSlop is how far in the future a t= may lie before the
// signature is refused (RFC 6376 §3.5: verifiers MAY ignore signatures
// with a timestamp in the future); a day absorbs any sane clock error.
const arcFutureSlop = 24 * time.Hour

// arcParseSigTags reads the tags an ARC-Seal and an ARC-Message-Signature
// share (RFC 8617 §4.1.2, §4.1.3): a=, b=, d=, s= required, t= optional.
// The tag list and i= have been parsed already.
func (s *arcSig) parseCommon(now time.Time) error {
	a, ok := s.tags.Get("a")
	if !ok {
		return errors.New("a= missing")
	}
	switch s.alg = strings.ToLower(a); s.alg {
	case arcRSASHA256, arcEd25519SHA256:
	default:
		return fmt.Errorf("a=%s not accepted", a)
	}
	b, ok := s.tags.Get("b")
	if !ok {
		return errors.New("b= missing")
	}
	sig, err := base64.StdEncoding.DecodeString(StripFWS(b))
	if err != nil || len(sig) == 0 {
		return errors.New("b= is not base64")
	}
	s.sig = sig
	d, ok := s.tags.Get("d")
	if !ok || !arcValidName(d, true) {
		return errors.New("d= missing or not a domain name")
	}
	s.domain = smtp.LowerASCII(d)
	sel, ok := s.tags.Get("s")
	if !ok || !arcValidName(sel, false) {
		return errors.New("s= missing or not a selector")
	}
	s.sel = smtp.LowerASCII(sel)
	if t, ok := s.tags.Get("t"); ok {
		if len(t) > 12 || !arcAllDigits(t) {
			return errors.New("t= is not a timestamp")
		}
		sec, _ := strconv.ParseInt(t, 10, 64)
		if time.Unix(sec, 0).After(now.Add(arcFutureSlop)) {
			return errors.New("t= lies in the future")
		}
	}
	return nil
}

// parseSeal reads the tags of an ARC-Seal (RFC 8617 §4.1.3): cv= is
// required, h= is not allowed (the seal covers the ARC sets, not a
// choice of fields).
func (s *arcSig) parseSeal(now time.Time) error {
	if _, ok := s.tags.Get("h"); ok {
		return errors.New("h= is not allowed in an ARC-Seal")
	}
	return s.parseCommon(now)
}

// arcParseCV reads cv= (RFC 8617 §4.1.3: none, fail or pass).
func arcParseCV(tags Tags) (string, error) {
	cv, ok := tags.Get("cv")
	if !ok {
		return "", errors.New("cv= missing")
	}
	switch cv = strings.ToLower(cv); cv {
	case "none", "pass", "fail":
		return cv, nil
	}
	return "", errors.New("cv= is not none, pass or fail")
}

// parseAMS reads the tags of an ARC-Message-Signature (RFC 8617 §4.1.2:
// those of a DKIM-Signature but v= and with i= the instance): bh= and h=
// required, c= and l= optional.
func (s *arcSig) parseAMS(now time.Time) error {
	if err := s.parseCommon(now); err != nil {
		return err
	}
	bh, ok := s.tags.Get("bh")
	if !ok {
		return errors.New("bh= missing")
	}
	sum, err := base64.StdEncoding.DecodeString(StripFWS(bh))
	if err != nil || len(sum) != sha256.Size {
		return errors.New("bh= is not a base64 SHA-256 hash")
	}
	s.bh = sum
	h, ok := s.tags.Get("h")
	if !ok {
		return errors.New("h= missing")
	}
	if h = StripFWS(h); h != "" {
		for _, name := range strings.Split(h, ":") {
			name = smtp.LowerASCII(name)
			// RFC 8617 §4.1.2: the ARC-Seal MUST NOT be signed by
			// the AMS (the seal of the same set comes after it).
			if name == arcNameAS {
				return errors.New("h= includes ARC-Seal")
			}
			s.hdrs = append(s.hdrs, name)
		}
	}
	s.hcanon, s.bcanon = arcSimple, arcSimple // RFC 6376 §3.5: the default
	if c, ok := s.tags.Get("c"); ok {
		if s.hcanon, s.bcanon, err = arcParseCanon(c); err != nil {
			return errors.New("c= is not a canonicalization")
		}
	}
	s.limit = -1
	if l, ok := s.tags.Get("l"); ok {
		if len(l) > 76 || !arcAllDigits(l) { // RFC 6376 §3.5: 1*76DIGIT
			return errors.New("l= is not a length")
		}
		n, err := strconv.ParseInt(l, 10, 64)
		if err != nil {
			n = 1<<63 - 1 // longer than any body: fails the length check
		}
		s.limit = n
	}
	return nil
}

// arcValidName reports whether s is a domain name as DKIM takes it
// (RFC 6376 §3.5, d= and s=: sub-domains of letters, digits and hyphens,
// separated by dots). Underscores are tolerated in selectors, which some
// publishers use. A trailing dot is not part of the syntax.
func arcValidName(s string, domain bool) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			switch {
			case 'a' <= c|0x20 && c|0x20 <= 'z', '0' <= c && c <= '9', c == '-':
			case c == '_' && !domain:
			default:
				return false
			}
		}
	}
	return true
}

// arcHashAMS returns the digest an ARC-Message-Signature signs (RFC 6376
// §3.7 with RFC 8617 §4.1.2): the fields named in h=, each taken from the
// bottom of the header up (§5.4.2; a name with no field left adds
// nothing), canonicalized, then the AMS itself with b= emptied and no
// final CRLF.
func arcHashAMS(s *arcSig, byName map[string][]string) []byte {
	h := sha256.New()
	used := make(map[string]int, len(s.hdrs))
	for _, name := range s.hdrs {
		fields := byName[name]
		k := used[name]
		if k >= len(fields) {
			continue
		}
		used[name] = k + 1
		h.Write([]byte(arcCanonHeader(fields[len(fields)-1-k], s.hcanon)))
	}
	h.Write([]byte(strings.TrimSuffix(arcCanonHeader(arcStripB(s.field), s.hcanon), "\r\n")))
	return h.Sum(nil)
}

// arcHashSeal returns the digest the ARC-Seal of instance i signs (RFC
// 8617 §5.1.1): the ARC sets 1..i in instance order, each as its AAR,
// AMS and AS, relaxed; the AS of instance i last with b= emptied and no
// final CRLF.
func arcHashSeal(sets []arcSet, i int) []byte {
	h := sha256.New()
	for j := 1; j <= i; j++ {
		set := sets[j-1]
		h.Write([]byte(arcCanonHeader(set.aar, arcRelaxed)))
		h.Write([]byte(arcCanonHeader(set.ams.field, arcRelaxed)))
		if j < i {
			h.Write([]byte(arcCanonHeader(set.as.field, arcRelaxed)))
		}
	}
	h.Write([]byte(strings.TrimSuffix(arcCanonHeader(arcStripB(sets[i-1].as.field), arcRelaxed), "\r\n")))
	return h.Sum(nil)
}
