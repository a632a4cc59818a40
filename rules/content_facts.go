package rules

import (
	"math"
	"strings"
	"unicode"

	"moat/inspect"
)

// contentFacts are the data-stage facts that come from parsing the
// message, each with the parse depth it needs.
var contentFacts = map[string]fact{
	"subject": cstr(inspect.DepthHeaders, "the Subject, RFC 2047-decoded", func(c *inspect.Content, f *inspect.Facts) []string {
		if _, ok := c.HeaderValue("Subject"); !ok {
			return nil
		}
		return []string{c.Subject}
	}),
	"subject_encoded": cflag(inspect.DepthHeaders, "the raw Subject uses RFC 2047 encoded words", func(c *inspect.Content, f *inspect.Facts) bool {
		for _, h := range c.Header {
			if strings.EqualFold(h.Name, "Subject") {
				return strings.Contains(h.Value, "=?")
			}
		}
		return false
	}),
	"subject_upper_ratio": cnum(inspect.DepthHeaders, "share of upper-case letters among the Subject's letters, 0 to 1", func(c *inspect.Content, f *inspect.Facts) (float64, bool) {
		var letters, upper int
		for _, r := range c.Subject {
			if unicode.IsLetter(r) {
				letters++
				if unicode.IsUpper(r) {
					upper++
				}
			}
		}
		if letters < 5 {
			return 0, false // too short to call shouting
		}
		return float64(upper) / float64(letters), true
	}),
	"from": cstr(inspect.DepthHeaders, "addresses of the From: header", func(c *inspect.Content, f *inspect.Facts) []string { return addrs(c.From) }),
	"from_name": cstr(inspect.DepthHeaders, "display names of the From: header, decoded", func(c *inspect.Content, f *inspect.Facts) []string {
		var out []string
		for _, a := range c.From {
			if a.Name != "" {
				out = append(out, a.Name)
			}
		}
		return out
	}),
	"from_domain":     cstr(inspect.DepthHeaders, "domains of the From: header", func(c *inspect.Content, f *inspect.Facts) []string { return domains(c.From) }),
	"reply_to":        cstr(inspect.DepthHeaders, "addresses of the Reply-To: header", func(c *inspect.Content, f *inspect.Facts) []string { return addrs(c.ReplyTo) }),
	"reply_to_domain": cstr(inspect.DepthHeaders, "domains of the Reply-To: header", func(c *inspect.Content, f *inspect.Facts) []string { return domains(c.ReplyTo) }),
	"to_count":        cnum(inspect.DepthHeaders, "addresses in To:", func(c *inspect.Content, f *inspect.Facts) (float64, bool) { return float64(len(c.To)), true }),
	"cc_count":        cnum(inspect.DepthHeaders, "addresses in Cc:", func(c *inspect.Content, f *inspect.Facts) (float64, bool) { return float64(len(c.Cc)), true }),
	"from_name_mentions_rcpt_domain": cflag(inspect.DepthHeaders, "the From: display name names a recipient's domain while the From: address is elsewhere (display-name spoofing)", func(c *inspect.Content, f *inspect.Facts) bool {
		for _, a := range c.From {
			name := strings.ToLower(a.Name)
			for _, d := range rcptDomains(f) {
				if name != "" && a.Domain != d && !strings.HasSuffix(a.Domain, "."+d) && strings.Contains(name, d) {
					return true
				}
			}
		}
		return false
	}),
	"date": cstr(inspect.DepthHeaders, "the Date: header as written", func(c *inspect.Content, f *inspect.Facts) []string {
		if v, ok := c.HeaderValue("Date"); ok {
			return []string{v}
		}
		return nil
	}),
	"date_valid": cflag(inspect.DepthHeaders, "the Date: header is present and parses", func(c *inspect.Content, f *inspect.Facts) bool { return !c.Date.IsZero() }),
	"date_skew": cnum(inspect.DepthHeaders, "seconds the Date: header is ahead of now (negative: in the past)", func(c *inspect.Content, f *inspect.Facts) (float64, bool) {
		if c.Date.IsZero() {
			return 0, false
		}
		return math.Round(c.Date.Sub(f.Now).Seconds()), true
	}),
	"message_id": cstr(inspect.DepthHeaders, "the Message-ID without angle brackets", func(c *inspect.Content, f *inspect.Facts) []string { return oneStr(c.MessageID) }),
	"message_id_valid": cflag(inspect.DepthHeaders, "the Message-ID looks like id-left@id-right", func(c *inspect.Content, f *inspect.Facts) bool {
		l, r, ok := strings.Cut(c.MessageID, "@")
		return ok && l != "" && r != "" && !strings.ContainsAny(c.MessageID, " \t<>")
	}),
	"received_count": cnum(inspect.DepthHeaders, "Received: headers in the message", func(c *inspect.Content, f *inspect.Facts) (float64, bool) {
		return float64(len(c.Received)), true
	}),
	"user_agent": cstr(inspect.DepthHeaders, "the X-Mailer or User-Agent header", func(c *inspect.Content, f *inspect.Facts) []string {
		for _, n := range []string{"User-Agent", "X-Mailer"} {
			if v, ok := c.HeaderValue(n); ok {
				return []string{v}
			}
		}
		return nil
	}),
	"header_count": cnum(inspect.DepthHeaders, "header fields in the message", func(c *inspect.Content, f *inspect.Facts) (float64, bool) {
		return float64(len(c.Header)), true
	}),

	// MIME
	"content_type": cstr(inspect.DepthMIME, "media types of every MIME part", func(c *inspect.Content, f *inspect.Facts) []string {
		out := make([]string, 0, len(c.Parts))
		for _, p := range c.Parts {
			out = append(out, p.ContentType)
		}
		return out
	}),
	"charset": cstr(inspect.DepthMIME, "charsets declared by MIME parts", func(c *inspect.Content, f *inspect.Facts) []string {
		var out []string
		for _, p := range c.Parts {
			if p.Charset != "" {
				out = append(out, p.Charset)
			}
		}
		return out
	}),
	"attachment_name": cstr(inspect.DepthMIME, "file names of attachments", func(c *inspect.Content, f *inspect.Facts) []string {
		var out []string
		for _, p := range c.Parts {
			if p.Filename != "" {
				out = append(out, p.Filename)
			}
		}
		return out
	}),
	"attachment_type": cstr(inspect.DepthMIME, "declared media types of parts with a file name", func(c *inspect.Content, f *inspect.Facts) []string {
		var out []string
		for _, p := range c.Parts {
			if p.Filename != "" {
				out = append(out, p.ContentType)
			}
		}
		return out
	}),
	"mime_depth":     cnum(inspect.DepthMIME, "deepest multipart nesting", func(c *inspect.Content, f *inspect.Facts) (float64, bool) { return float64(c.MaxDepth), true }),
	"mime_parts":     cnum(inspect.DepthMIME, "MIME parts in the message", func(c *inspect.Content, f *inspect.Facts) (float64, bool) { return float64(len(c.Parts)), true }),
	"mime_malformed": cflag(inspect.DepthMIME, "something in the message could not be parsed cleanly", func(c *inspect.Content, f *inspect.Facts) bool { return len(c.Malformed) > 0 }),
	"malformed":      cstr(inspect.DepthMIME, "reasons the message is malformed (header_syntax, base64_invalid, ...)", func(c *inspect.Content, f *inspect.Facts) []string { return c.Malformed }),

	// text
	"body": cstr(inspect.DepthText, "decoded text of the text/plain parts and visible text of the HTML parts", func(c *inspect.Content, f *inspect.Facts) []string {
		return []string{c.Text, c.HTMLText}
	}),
	"html": cstr(inspect.DepthText, "the decoded HTML parts", func(c *inspect.Content, f *inspect.Facts) []string { return oneStr(c.HTML) }),
	"url":  cstr(inspect.DepthText, "URLs in the text and HTML", func(c *inspect.Content, f *inspect.Facts) []string { return urls(c, false) }),
	"url_domain": cstr(inspect.DepthText, "host names and IPs of those URLs", func(c *inspect.Content, f *inspect.Facts) []string {
		return urls(c, true)
	}),
}

func cstr(d inspect.Depth, doc string, get func(c *inspect.Content, f *inspect.Facts) []string) fact {
	return fact{stage: inspect.StageData, kind: kString, depth: d, doc: doc, strs: func(f *inspect.Facts) ([]string, error) {
		if f.Content == nil {
			return nil, nil
		}
		return get(f.Content, f), nil
	}}
}

func cnum(d inspect.Depth, doc string, get func(c *inspect.Content, f *inspect.Facts) (float64, bool)) fact {
	return fact{stage: inspect.StageData, kind: kNumber, depth: d, doc: doc, num: func(f *inspect.Facts) (float64, bool) {
		if f.Content == nil {
			return 0, false
		}
		return get(f.Content, f)
	}}
}

func cflag(d inspect.Depth, doc string, get func(c *inspect.Content, f *inspect.Facts) bool) fact {
	return fact{stage: inspect.StageData, kind: kBool, depth: d, doc: doc, flag: func(f *inspect.Facts) (bool, error) {
		if f.Content == nil {
			return false, nil
		}
		return get(f.Content, f), nil
	}}
}

// lookupFact finds a fact by name.
func lookupFact(name string) (fact, bool) {
	if f, ok := facts[name]; ok {
		return f, true
	}
	f, ok := contentFacts[name]
	return f, ok
}

// headerFact is the parameterised "header: {name: X}" fact.
func headerFact(name string) fact {
	return cstr(inspect.DepthHeaders, "", func(c *inspect.Content, f *inspect.Facts) []string {
		var out []string
		for _, h := range c.Header {
			if strings.EqualFold(h.Name, name) {
				out = append(out, h.Decoded)
			}
		}
		return out
	})
}

func oneStr(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}

func addrs(as []inspect.Address) []string {
	out := make([]string, 0, len(as))
	for _, a := range as {
		out = append(out, a.Addr)
	}
	return out
}

func domains(as []inspect.Address) []string {
	out := make([]string, 0, len(as))
	for _, a := range as {
		if a.Domain != "" {
			out = append(out, a.Domain)
		}
	}
	return out
}

func urls(c *inspect.Content, hosts bool) []string {
	out := make([]string, 0, len(c.URLs))
	for _, u := range c.URLs {
		if hosts {
			out = append(out, u.Host)
		} else {
			out = append(out, u.Raw)
		}
	}
	return out
}
