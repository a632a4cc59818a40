package smtp

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"strings"
)

// ParseAuthArg splits the argument of AUTH (RFC 4954 §4):
//
//	"AUTH" SP sasl-mech [SP initial-response]
//
// The mechanism is upper-cased (SASL mechanism names are, RFC 4422 §3.1);
// initial is the initial response as sent, "" when there is none and "="
// for an empty one (§4). Only the form is checked here: whether the
// response decodes is the mechanism's business.
func ParseAuthArg(arg string) (mech, initial string, err error) {
	mech, initial, _ = strings.Cut(arg, " ")
	if mech == "" || len(mech) > 20 || strings.Contains(initial, " ") {
		return "", "", fmt.Errorf("%w: AUTH mechanism [initial-response]", ErrSyntax)
	}
	for i := 0; i < len(mech); i++ {
		// RFC 4422 §3.1: upper-case letters, digits, hyphen, underscore.
		c := mech[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return "", "", fmt.Errorf("%w: AUTH mechanism name", ErrSyntax)
		}
	}
	return strings.ToUpper(mech), initial, nil
}

// SASLUser returns the user name in a client's SASL response, when the
// mechanism carries one in clear: PLAIN's authentication identity
// (RFC 4616 §2: authzid NUL authcid NUL passwd), LOGIN's first response,
// CRAM-MD5's name before the digest (RFC 2195 §2), XOAUTH2's user= and
// OAUTHBEARER's GS2 a= (RFC 7628 §3.1). step counts the client's
// responses from 0, the initial response included. resp is the base64
// text of the line. It never returns anything else of the response: the
// password must not be kept, logged or recorded anywhere.
//
// ok is false when the response carries no user name or it is not
// printable text of at most 256 bytes.
func SASLUser(mech string, step int, resp string) (user string, ok bool) {
	if resp == "=" || resp == "*" {
		return "", false
	}
	dec, err := base64.StdEncoding.DecodeString(resp)
	if err != nil {
		return "", false
	}
	switch mech {
	case "PLAIN":
		parts := bytes.SplitN(dec, []byte{0}, 3)
		if len(parts) == 3 {
			user = string(parts[1])
		}
	case "LOGIN":
		if step == 0 {
			user = string(dec)
		}
	case "CRAM-MD5":
		if i := bytes.LastIndexByte(dec, ' '); i > 0 {
			user = string(dec[:i])
		}
	case "XOAUTH2", "OAUTHBEARER":
		for _, kv := range bytes.Split(dec, []byte{1}) {
			if v, ok := bytes.CutPrefix(kv, []byte("user=")); ok {
				user = string(v)
			}
			if v, ok := bytes.CutPrefix(kv, []byte("n,a=")); ok {
				user, _, _ = strings.Cut(string(v), ",")
			}
		}
	}
	if user == "" || len(user) > 256 {
		return "", false
	}
	for i := 0; i < len(user); i++ {
		if user[i] < 0x20 || user[i] == 0x7f {
			return "", false
		}
	}
	return user, true
}
