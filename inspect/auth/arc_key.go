package auth

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// Public keys as DKIM publishes them in the DNS (RFC 6376 §3.6.1), which
// ARC-Seal and ARC-Message-Signature reuse (RFC 8617 §4.1.2, §4.1.3):
// a TXT record at selector._domainkey.domain holding a tag list.

// arcKey is a public key usable for verifying: exactly one of rsa and ed
// is set.
type arcKey struct {
	rsa *rsa.PublicKey
	ed  ed25519.PublicKey
}

// RSA key sizes accepted. RFC 8301 §3.2: verifiers MUST NOT consider
// signatures using RSA keys of less than 1024 bits valid. The upper bound
// is moat's: the domain of a signature picks its key, and verifying with
// a huge modulus costs time a spammer should not be able to spend.
const (
	arcMinRSABits = 1024
	arcMaxRSABits = 8192
)

// arcMaxKeyRecord bounds the TXT record parsed: a 8192-bit RSA key is
// about 1,400 characters of base64.
const arcMaxKeyRecord = 4096

// Errors of arcParseKey.
var (
	errKeyVersion  = errors.New("key record: v= is not DKIM1 or not the first tag")
	errKeyHash     = errors.New("key record: h= does not allow sha256")
	errKeyType     = errors.New("key record: unknown key type k=")
	errKeyRevoked  = errors.New("key record: key revoked (empty p=)")
	errKeyService  = errors.New("key record: s= does not include email")
	errKeyData     = errors.New("key record: p= is not a valid public key")
	errKeyTooLong  = errors.New("key record: too long")
	errKeyRSASmall = fmt.Errorf("key record: RSA key shorter than %d bits (RFC 8301 §3.2)", arcMinRSABits)
	errKeyRSALarge = fmt.Errorf("key record: RSA key longer than %d bits", arcMaxRSABits)
)

// arcParseKey parses a DKIM key record (RFC 6376 §3.6.1):
//
//	v=DKIM1     optional; if present, the first tag
//	h=sha256    optional colon list of hash algorithms the key may be used with
//	k=rsa       optional key type, rsa (default) or ed25519 (RFC 8463)
//	n=          notes, ignored
//	p=          the key, base64; empty means revoked
//	s=email     optional colon list of service types, "*" or "email" needed
//	t=y:s       optional flags, not applicable to ARC (no AUID) and ignored
//
// Unknown tags are ignored (§3.6.1: "Unrecognized tags MUST be ignored").
// An RSA p= is a DER SubjectPublicKeyInfo (§3.6.1); the bare RSAPublicKey
// that some publishers put there is accepted too. An ed25519 p= is the
// 32-byte key itself (RFC 8463 §4).
func arcParseKey(rec string) (arcKey, error) {
	if len(rec) > arcMaxKeyRecord {
		return arcKey{}, errKeyTooLong
	}
	tags, err := ParseTags(rec)
	if err != nil {
		return arcKey{}, fmt.Errorf("key record: %w", err)
	}
	if v, ok := tags.Get("v"); ok && (v != "DKIM1" || tags[0].Name != "v") {
		return arcKey{}, errKeyVersion
	}
	if h, ok := tags.Get("h"); ok && !arcColonListHas(h, "sha256") {
		return arcKey{}, errKeyHash
	}
	if s, ok := tags.Get("s"); ok && !arcColonListHas(s, "*") && !arcColonListHas(s, "email") {
		return arcKey{}, errKeyService
	}
	p, ok := tags.Get("p")
	if !ok {
		return arcKey{}, errKeyData
	}
	p = StripFWS(p)
	if p == "" {
		return arcKey{}, errKeyRevoked
	}
	der, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		return arcKey{}, errKeyData
	}
	k, _ := tags.Get("k")
	switch {
	case k == "" || strings.EqualFold(k, "rsa"):
		pub, err := arcParseRSA(der)
		if err != nil {
			return arcKey{}, err
		}
		return arcKey{rsa: pub}, nil
	case strings.EqualFold(k, "ed25519"):
		if len(der) != ed25519.PublicKeySize {
			return arcKey{}, errKeyData
		}
		return arcKey{ed: ed25519.PublicKey(der)}, nil
	}
	return arcKey{}, errKeyType
}

func arcParseRSA(der []byte) (*rsa.PublicKey, error) {
	var pub *rsa.PublicKey
	if k, err := x509.ParsePKIXPublicKey(der); err == nil {
		rk, ok := k.(*rsa.PublicKey)
		if !ok {
			return nil, errKeyData
		}
		pub = rk
	} else if rk, err := x509.ParsePKCS1PublicKey(der); err == nil {
		pub = rk
	} else {
		return nil, errKeyData
	}
	switch bits := pub.N.BitLen(); {
	case bits < arcMinRSABits:
		return nil, errKeyRSASmall
	case bits > arcMaxRSABits:
		return nil, errKeyRSALarge
	}
	return pub, nil
}

// arcColonListHas reports whether the colon-separated list (FWS allowed
// around the elements) contains want, compared case-insensitively.
func arcColonListHas(list, want string) bool {
	for _, e := range strings.Split(list, ":") {
		if strings.EqualFold(trimFWS(e), want) {
			return true
		}
	}
	return false
}

// The signature algorithms ARC accepts. RFC 8617 §4.1.3 asks for
// rsa-sha256; rsa-sha1 is refused (RFC 8301 §3.1: MUST NOT be used).
// ed25519-sha256 (RFC 8463) is accepted as DKIM accepts it.
const (
	arcRSASHA256     = "rsa-sha256"
	arcEd25519SHA256 = "ed25519-sha256"
)

var (
	errSigKeyType = errors.New("key type does not match a=")
	errSigBad     = errors.New("signature does not verify")
)

// verify checks sig over the SHA-256 digest of the canonical header data.
// For ed25519-sha256 the digest is what is signed (RFC 8463 §3).
func (k arcKey) verify(alg string, digest, sig []byte) error {
	switch alg {
	case arcRSASHA256:
		if k.rsa == nil {
			return errSigKeyType
		}
		if rsa.VerifyPKCS1v15(k.rsa, crypto.SHA256, digest, sig) != nil {
			return errSigBad
		}
		return nil
	case arcEd25519SHA256:
		if k.ed == nil {
			return errSigKeyType
		}
		if !ed25519.Verify(k.ed, digest, sig) {
			return errSigBad
		}
		return nil
	}
	return errSigKeyType
}
