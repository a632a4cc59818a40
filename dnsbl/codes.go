package dnsbl

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"net/netip"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// A CodeKey says which answers of a list a code rule matches. It has two
// forms. An address pattern is four dot-separated octets, each one of
//
//	N            the value N (0 to 255)
//	*            any value
//	[A..B]       a range, both ends included (postscreen's syntax)
//	[A;B;C..D]   a set of values and ranges (postscreen's syntax)
//
// so "127.0.0.2", "127.0.0.[4..7]", "127.0.0.[2..11]" (postscreen's
// zone=127.0.0.[2..11]*3 is {"127.0.0.[2..11]": {weight: 3}}) and dnswl's
// "127.0.*.3". A bitmask is "bit:N" with N from 1 to 255: the answer's last
// octet shares a bit with N, as SURBL and URIBL encode several sub-lists in
// one answer ("bit:8" is SURBL's phishing list, "bit:6" either of bits 2
// and 4).
//
// CodeKey is comparable; String gives its canonical form, which ParseCodeKey
// reads back to the same key.
type CodeKey struct {
	// octets[i] has bit v set when octet i may have value v. Unused for a
	// bitmask key.
	octets [4][4]uint64
	// mask is the bitmask of a "bit:N" key, 0 for an address pattern.
	mask uint8
}

// ParseCodeKey parses the key of a codes entry.
func ParseCodeKey(s string) (CodeKey, error) {
	var k CodeKey
	if rest, ok := strings.CutPrefix(s, "bit:"); ok {
		n, err := strconv.ParseUint(rest, 10, 8)
		if err != nil || n == 0 || strings.HasPrefix(rest, "+") {
			return k, fmt.Errorf("%q: bit:N needs N from 1 to 255", s)
		}
		k.mask = uint8(n)
		return k, nil
	}
	parts := splitOctets(s)
	if len(parts) != 4 {
		return k, fmt.Errorf("%q: want four octets like 127.0.0.[2..11], or bit:N", s)
	}
	for i, p := range parts {
		set, err := parseOctet(p)
		if err != nil {
			return k, fmt.Errorf("%q: %v", s, err)
		}
		k.octets[i] = set
	}
	return k, nil
}

// splitOctets splits s at the dots outside brackets: "127.0.0.[4..7]" is
// four octets.
func splitOctets(s string) []string {
	var parts []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '[':
			depth++
		case ']':
			depth--
		case '.':
			if depth == 0 {
				parts = append(parts, s[start:i])
				start = i + 1
			}
		}
	}
	return append(parts, s[start:])
}

func parseOctet(p string) ([4]uint64, error) {
	var set [4]uint64
	switch {
	case p == "*":
		return [4]uint64{^uint64(0), ^uint64(0), ^uint64(0), ^uint64(0)}, nil
	case strings.HasPrefix(p, "[") && strings.HasSuffix(p, "]") && len(p) > 2:
		for _, item := range strings.Split(p[1:len(p)-1], ";") {
			lo, hi := item, item
			if a, b, ok := strings.Cut(item, ".."); ok {
				lo, hi = a, b
			}
			l, err := octetValue(lo)
			if err != nil {
				return set, err
			}
			h, err := octetValue(hi)
			if err != nil {
				return set, err
			}
			if h < l {
				return set, errors.New("range is backwards")
			}
			for v := l; v <= h; v++ {
				set[v/64] |= 1 << (v % 64)
			}
		}
		return set, nil
	}
	v, err := octetValue(p)
	if err != nil {
		return set, err
	}
	set[v/64] |= 1 << (v % 64)
	return set, nil
}

func octetValue(s string) (int, error) {
	n, err := strconv.ParseUint(s, 10, 8)
	if err != nil || s == "" || s[0] == '+' || (len(s) > 1 && s[0] == '0') {
		return 0, fmt.Errorf("bad octet %q (want 0 to 255, *, [A..B] or [A;B])", s)
	}
	return int(n), nil
}

// Match reports whether answer a is one the key describes. Only IPv4
// answers match.
func (k CodeKey) Match(a netip.Addr) bool {
	if !a.Is4() {
		return false
	}
	b := a.As4()
	if k.mask != 0 {
		return b[3]&k.mask != 0
	}
	for i, v := range b {
		if k.octets[i][v/64]&(1<<(v%64)) == 0 {
			return false
		}
	}
	return true
}

// IsZero reports whether k is the zero CodeKey, which matches nothing.
func (k CodeKey) IsZero() bool { return k == CodeKey{} }

// String formats k in canonical form: "bit:N", or four octets where a
// single value is written alone, all values as "*", and anything else as a
// bracketed set of ascending values and ranges.
func (k CodeKey) String() string {
	if k.mask != 0 {
		return "bit:" + strconv.Itoa(int(k.mask))
	}
	var b strings.Builder
	for i, set := range k.octets {
		if i > 0 {
			b.WriteByte('.')
		}
		writeOctet(&b, set)
	}
	return b.String()
}

func writeOctet(b *strings.Builder, set [4]uint64) {
	n := 0
	for _, w := range set {
		n += bits.OnesCount64(w)
	}
	has := func(v int) bool { return set[v/64]&(1<<(v%64)) != 0 }
	switch n {
	case 256:
		b.WriteByte('*')
		return
	case 1:
		for v := 0; v < 256; v++ {
			if has(v) {
				b.WriteString(strconv.Itoa(v))
				return
			}
		}
	}
	b.WriteByte('[')
	first := true
	for v := 0; v < 256; v++ {
		if !has(v) {
			continue
		}
		end := v
		for end+1 < 256 && has(end+1) {
			end++
		}
		if !first {
			b.WriteByte(';')
		}
		first = false
		b.WriteString(strconv.Itoa(v))
		if end > v {
			b.WriteString("..")
			b.WriteString(strconv.Itoa(end))
		}
		v = end
	}
	b.WriteByte(']')
}

// CodeRule maps the answers a CodeKey matches to a reason and a weight, or
// marks them as the list reporting an error about the query itself.
type CodeRule struct {
	Key CodeKey
	// Reason names the listing in rules, metrics and reject texts.
	// Default "listed".
	Reason string
	// Weight is added to the result's weight when the rule matches (once
	// per rule, however many answers match it). On an allowlist it
	// counts as negative whatever its sign. Default 1.
	Weight float64
	// Error marks answers that are not listings but the list refusing the
	// query: over quota, queried through a public resolver, a typo in the
	// zone. Such an answer makes the whole result an error
	// (ErrKind "blocked_resolver"), never a listing.
	Error bool
}

// Codes is a list's code table, in the order written in the file (rules
// are evaluated in that order, so reasons come out in a stable order).
// In YAML it is a mapping from CodeKey to {reason, weight, error}:
//
//	codes:
//	  "127.0.0.2": {reason: sbl, weight: 4}
//	  "127.0.0.[4..7]": {reason: xbl, weight: 6}
//	  "bit:8": {reason: ph}
//	  "127.255.255.*": {error: true}
type Codes []CodeRule

// UnmarshalYAML implements yaml.Unmarshaler. Keys and values are checked
// here, so an error names the offending entry; unknown keys inside an
// entry are errors too.
func (c *Codes) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return errors.New(`expected a mapping like "127.0.0.2": {reason: sbl, weight: 4}`)
	}
	out := make(Codes, 0, len(n.Content)/2)
	seen := map[CodeKey]string{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := n.Content[i], n.Content[i+1]
		key, err := ParseCodeKey(kn.Value)
		if err != nil {
			return err
		}
		if prev, dup := seen[key]; dup {
			return fmt.Errorf("%q: same answers as %q", kn.Value, prev)
		}
		seen[key] = kn.Value
		r, err := decodeCodeValue(vn)
		if err != nil {
			return fmt.Errorf("%q: %v", kn.Value, err)
		}
		r.Key = key
		out = append(out, r)
	}
	*c = out
	return nil
}

func decodeCodeValue(n *yaml.Node) (CodeRule, error) {
	r := CodeRule{Weight: 1}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return r, nil
	}
	if n.Kind != yaml.MappingNode {
		return r, errors.New("expected {reason: NAME, weight: N} or {error: true}")
	}
	var hasReason, hasWeight bool
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		var err error
		switch k.Value {
		case "reason":
			hasReason = true
			err = v.Decode(&r.Reason)
			if err == nil {
				err = checkName("reason", r.Reason)
			}
		case "weight":
			hasWeight = true
			err = v.Decode(&r.Weight)
			if err == nil && (math.IsNaN(r.Weight) || math.IsInf(r.Weight, 0)) {
				err = errors.New("must be a finite number")
			}
		case "error":
			err = v.Decode(&r.Error)
		default:
			return r, fmt.Errorf("unknown key %q (known: reason, weight, error)", k.Value)
		}
		if err != nil {
			return r, fmt.Errorf("%s: %v", k.Value, cleanYAMLError(err))
		}
	}
	if r.Error && (hasReason || hasWeight) {
		return r, errors.New("an error code has no reason or weight")
	}
	if r.Reason == "" {
		r.Reason = "listed"
	}
	return r, nil
}

func cleanYAMLError(err error) string {
	s := err.Error()
	s = strings.TrimPrefix(s, "yaml: unmarshal errors:\n")
	s = strings.TrimSpace(s)
	if _, rest, ok := strings.Cut(s, ": "); ok && strings.HasPrefix(s, "line ") {
		s = rest
	}
	return strings.ReplaceAll(s, "!!str", "string")
}

// merge returns base with over's rules laid on top: a rule of over with
// the same key replaces base's, the others are appended in over's order.
func (base Codes) merge(over Codes) Codes {
	out := append(Codes(nil), base...)
	for _, r := range over {
		replaced := false
		for i := range out {
			if out[i].Key == r.Key {
				out[i], replaced = r, true
				break
			}
		}
		if !replaced {
			out = append(out, r)
		}
	}
	return out
}
