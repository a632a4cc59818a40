package auth

// The Authentication-Results header field (RFC 8601) in plain words: a
// receiving server that checked SPF, DKIM, ARC and DMARC writes what it
// found into one field, named by its authserv-id, so that filters and
// mail readers downstream need not check again. Its grammar (§2.2):
//
//	authres-payload = [CFWS] authserv-id [ CFWS authres-version ]
//	                  ( no-result / 1*resinfo ) [CFWS] CRLF
//	resinfo         = [CFWS] ";" methodspec [ CFWS reasonspec ]
//	                  [ CFWS 1*propspec ]
//	methodspec      = [CFWS] method [CFWS] "=" [CFWS] result
//	reasonspec      = "reason" [CFWS] "=" [CFWS] value
//	propspec        = ptype [CFWS] "." [CFWS] property [CFWS] "=" pvalue
//
// Downstream readers trust a field only when it carries their own
// server's authserv-id, so a field with moat's id that arrives from
// outside is forged and is removed before the message is relayed (§5).

import (
	"strconv"
	"strings"

	"github.com/emersion/go-msgauth/authres"
)

// The results each method may report (RFC 8601 §2.7.1, §2.7.2;
// RFC 7489 §11.2; RFC 8617 §10.1). A check's result outside its set —
// Unknown above all — is not written.
var (
	arSPFResults   = []Result{None, Neutral, Pass, Fail, SoftFail, TempError, PermError}
	arDKIMResults  = []Result{None, Pass, Fail, Policy, Neutral, TempError, PermError}
	arARCResults   = []Result{None, Pass, Fail}
	arDMARCResults = []Result{None, Pass, Fail, TempError, PermError}
)

// Bounds on what one field carries.
const (
	// maxARDKIM bounds the dkim= results written; the checks bound the
	// signatures verified, this keeps the field readable whatever they
	// do.
	maxARDKIM = 16
	// maxARText bounds a reason or a quoted value, in bytes.
	maxARText = 200
)

// AuthResultsValue formats the value of the Authentication-Results field
// moat adds (RFC 8601 §2.2): the authserv-id, then in this order
//
//   - spf= for the MAIL FROM identity, with smtp.mailfrom= (smtp.helo=
//     when the result is for the HELO identity, a null sender's);
//   - a second spf= with smtp.helo= for the HELO identity (RFC 8601
//     §2.7.2 allows both), only when it says something the first does
//     not: it is not none (most HELO names publish no SPF record, and
//     "none" there tells a reader nothing) and not the same identity
//     and domain as the first;
//   - one dkim= per signature, with header.d=, header.s=, header.a=
//     (RFC 8601 §2.7.1) and header.i= when the signature's i= is more
//     than "@" + d=; dkim=none when the message has no signature;
//   - arc=, with header.oldest-pass= (RFC 8617 §10.1) and a comment
//     giving the number of sets and the newest sealer;
//   - dmarc=, with header.from= and a comment giving the policy and, if
//     pct= sampling lowered it, the published one. RFC 7489 §11.2
//     registers no property for the policy, hence the comment.
//
// A reason="…" follows every result other than pass that has one.
//
// A check whose result is Unknown (offline, a DNS answer not recorded)
// or empty (not run) is left out: "none" would be a claim — no policy
// published, no signature — and RFC 8601 §2.2 reports the methods that
// were applied, not the others. With nothing to report the value is
// "authserv-id; none" (§2.2, no-result).
//
// Everything taken from the message or the DNS — domains, selectors,
// identities, reasons — is sanitized: the value is one line of printable
// US-ASCII, with no CR or LF (no header injection), and a reason or an
// odd domain is a quoted-string in which ';', '=', '(', ')', '"' and '\'
// are replaced, so that no reader, however naive its parser, sees a
// result or a property moat did not write. The writer of the field folds
// it (RFC 5322 §2.2.3) where it is long; every "; " is a place to fold.
func AuthResultsValue(authservID string, r Results) string {
	var infos []string
	add := func(method string, res Result, comment, reason string, props ...string) {
		s := method + "=" + string(res)
		if comment != "" {
			s += " (" + comment + ")"
		}
		if reason != "" && res != Pass {
			s += " reason=" + arQuoted(reason)
		}
		for i := 0; i+1 < len(props); i += 2 {
			if props[i+1] != "" {
				s += " " + props[i] + "=" + props[i+1]
			}
		}
		infos = append(infos, s)
	}

	firstSPF := ""
	if arReported(arSPFResults, r.SPF.Result) {
		prop := "smtp.mailfrom"
		if r.SPF.Identity == "helo" {
			prop = "smtp.helo"
		}
		d := arDomainPvalue(r.SPF.Domain)
		firstSPF = prop + "=" + d
		add("spf", r.SPF.Result, "", r.SPF.Reason, prop, d)
	}
	if arReported(arSPFResults, r.HELO.Result) && r.HELO.Result != None {
		d := arDomainPvalue(r.HELO.Domain)
		if firstSPF != "smtp.helo="+d {
			add("spf", r.HELO.Result, "", r.HELO.Reason, "smtp.helo", d)
		}
	}

	if len(r.DKIM) == 0 {
		// Finding no DKIM-Signature field needs no DNS, so "none" is
		// known even offline.
		add("dkim", None, "", "")
	}
	n := 0
	for _, k := range r.DKIM {
		if n == maxARDKIM {
			break
		}
		if !arReported(arDKIMResults, k.Result) {
			continue
		}
		n++
		d := arDomainPvalue(k.Domain)
		i := ""
		if id := strings.TrimSpace(k.Identifier); id != "" && !strings.EqualFold(strings.TrimSuffix(id, "."), "@"+strings.TrimSuffix(k.Domain, ".")) {
			i = arPvalue(id)
		}
		add("dkim", k.Result, "", k.Reason,
			"header.d", d, "header.s", arPvalue(k.Selector), "header.a", arPvalue(k.Algorithm), "header.i", i)
	}

	if arReported(arARCResults, r.ARC.Result) {
		var comment, oldest string
		if r.ARC.Instances > 0 {
			comment = strconv.Itoa(r.ARC.Instances) + " set"
			if r.ARC.Instances > 1 {
				comment += "s"
			}
			if s, ok := aLabelDomain(r.ARC.Sealer); ok {
				comment += ", sealer " + s
			}
		}
		if r.ARC.OldestPass > 0 {
			oldest = strconv.Itoa(r.ARC.OldestPass)
		}
		add("arc", r.ARC.Result, comment, r.ARC.Reason, "header.oldest-pass", oldest)
	}

	if arReported(arDMARCResults, r.DMARC.Result) {
		var comment string
		if p := arPolicyWord(r.DMARC.Policy); p != "" {
			comment = "policy " + p
			if pub := arPolicyWord(r.DMARC.Published); pub != "" && pub != p {
				comment += ", sampled down from " + pub
			}
		}
		add("dmarc", r.DMARC.Result, comment, r.DMARC.Reason, "header.from", arDomainPvalue(r.DMARC.Domain))
	}

	id := authservToken(authservID)
	if len(infos) == 0 {
		return id + "; none"
	}
	return id + "; " + strings.Join(infos, "; ")
}

// arReported reports whether res is a result the method can be reported
// with.
func arReported(set []Result, res Result) bool {
	for _, s := range set {
		if s == res {
			return true
		}
	}
	return false
}

// arPolicyWord is a DMARC policy as a comment may hold it.
func arPolicyWord(p string) string {
	switch p {
	case "none", "quarantine", "reject":
		return p
	}
	return ""
}

// authservToken is the authserv-id as written: an RFC 2045 token (RFC
// 8601 §2.2: authserv-id = value), everything else dropped. The
// configuration is expected to give a host name; "moat" stands in for an
// id with nothing usable, so the field stays well-formed.
func authservToken(id string) string {
	var b strings.Builder
	for i := 0; i < len(id); i++ {
		if arTokenChar(id[i]) {
			b.WriteByte(id[i])
		}
	}
	if b.Len() == 0 {
		return "moat"
	}
	return b.String()
}

// arTokenChar: RFC 2045 token, any US-ASCII character except SPACE, CTLs
// and tspecials.
func arTokenChar(c byte) bool {
	return c > 0x20 && c < 0x7f && !strings.ContainsRune(`()<>@,;:\"/[]?=`, rune(c))
}

// arDomainPvalue writes a domain name as a pvalue: the normalized A-label
// form when it is a domain name, otherwise (a hostile d=, say) sanitized
// and quoted.
func arDomainPvalue(s string) string {
	if strings.TrimSpace(s) == "" {
		return ""
	}
	if d, ok := aLabelDomain(s); ok {
		return d
	}
	return arQuoted(s)
}

// arPvalue writes a property value: bare when it is made of characters
// that every reader takes for a domain or an address, else a sanitized
// quoted-string (RFC 8601 §2.2: pvalue = [CFWS] ( value /
// [ [ local-part ] "@" ] domain-name ) [CFWS]).
func arPvalue(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return ""
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._@+", c) >= 0) {
			return arQuoted(s)
		}
	}
	if len(s) > maxARText {
		return arQuoted(s)
	}
	return s
}

// arQuoted makes s a quoted-string that is safe for every reader: printable
// US-ASCII only (controls, CR and LF become spaces; other characters '?',
// a few common ones spelled out), runs of spaces collapsed, and the
// characters a naive parser would take for syntax replaced — ';' ends a
// resinfo, '=' makes a property, '(' and ')' a comment, '"' and '\' end
// or escape the string. At most maxARText bytes.
func arQuoted(s string) string {
	var b strings.Builder
	space := true // drop leading spaces
	for _, r := range s {
		if b.Len() >= maxARText {
			b.WriteString("...")
			break
		}
		var rep string
		switch {
		case r < 0x20 || r == 0x7f || r == ' ':
			if !space {
				b.WriteByte(' ')
				space = true
			}
			continue
		case r == ';':
			rep = ","
		case r == '=':
			rep = ":"
		case r == '(':
			rep = "["
		case r == ')':
			rep = "]"
		case r == '"':
			rep = "'"
		case r == '\\':
			rep = "/"
		case r == '§':
			rep = "section "
		case r == '…':
			rep = "..."
		case r == '—' || r == '–':
			rep = "-"
		case r >= 0x80:
			rep = "?"
		default:
			rep = string(r)
		}
		b.WriteString(rep)
		space = false
	}
	return `"` + strings.TrimRight(b.String(), " ") + `"`
}

// HasAuthservID reports whether an Authentication-Results field value
// names authservID. RFC 8601 §5: a receiver "MUST ... delete or otherwise
// obscure any instance of this header field that claims, by virtue of
// its authentication service identifier, to have been added within its
// trust boundary but that did not come directly from another trusted
// MTA or MSA"; so such a field arriving from outside is forged and is
// removed before relaying.
//
// A forger need not be well-formed, and a field left in place is worse
// than one removed too many, so the value names authservID when any
// reasonable reading finds it: the authserv-id after CFWS (comments and
// folding skipped, a quoted-string decoded, RFC 8601 §2.2), what
// authres.Parse finds, or the first word. The comparison ignores case
// and a trailing dot ("MX.Example.COM." names mx.example.com); a longer
// name ("mx.example.com.evil") does not.
func HasAuthservID(value, authservID string) bool {
	if strings.TrimSpace(authservID) == "" {
		return false
	}
	want := strings.TrimSuffix(authservToken(authservID), ".")
	match := func(id string) bool {
		id = strings.TrimSuffix(id, ".")
		return id != "" && strings.EqualFold(id, want)
	}
	if match(leadingAuthservID(value)) {
		return true
	}
	if id, _, _ := authres.Parse(value); match(id) {
		return true
	}
	if f := strings.FieldsFunc(value, func(r rune) bool {
		return r == ';' || r == ' ' || r == '\t' || r == '\r' || r == '\n'
	}); len(f) > 0 && match(f[0]) {
		return true
	}
	return false
}

// leadingAuthservID reads the authserv-id at the start of a field value:
// CFWS skipped, then a quoted-string (decoded) or a token.
func leadingAuthservID(v string) string {
	i := arSkipCFWS(v, 0)
	if i < len(v) && v[i] == '"' {
		var b strings.Builder
		for i++; i < len(v) && v[i] != '"'; i++ {
			if v[i] == '\\' && i+1 < len(v) {
				i++
			}
			if v[i] != '\r' && v[i] != '\n' {
				b.WriteByte(v[i])
			}
		}
		return strings.TrimSpace(b.String())
	}
	j := i
	for j < len(v) && (arTokenChar(v[j]) || v[j] >= 0x80) {
		j++
	}
	return v[i:j]
}

// arSkipCFWS returns the index after the folding white space and comments
// (RFC 5322 §3.2.2, nested, with quoted-pairs) that start at i.
func arSkipCFWS(v string, i int) int {
	depth := 0
	for ; i < len(v); i++ {
		switch c := v[i]; {
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case c == '\\' && depth > 0:
			i++
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
		case depth > 0:
		default:
			return i
		}
	}
	return i
}
