package capture

import (
	"net/netip"
	"regexp"
	"strings"

	"moat/inspect"
)

// fillHeaders copies the top-level header fields Zeek's smtp.log reports
// into rec (base/protocols/smtp/main.zeek, mime_one_header): raw unfolded
// values, the last of a repeated field winning as in Zeek, To and Cc
// split into addresses, the Received chain into the transmission path.
func fillHeaders(rec *Record, c *inspect.Content) {
	if c == nil {
		return
	}
	path := []string{rec.RespH, rec.OrigH}
	for _, h := range c.Header {
		v := strings.TrimSpace(h.Value)
		switch strings.ToUpper(h.Name) {
		case "MESSAGE-ID":
			rec.MsgID = v
		case "RECEIVED":
			if rec.FirstReceived != "" {
				rec.SecondReceived = rec.FirstReceived
			}
			rec.FirstReceived = v
			if ip := receivedAddr(v); ip != "" && path[len(path)-1] != ip && len(path) < maxPathRecord {
				path = append(path, ip)
			}
		case "IN-REPLY-TO":
			rec.InReplyTo = v
		case "SUBJECT":
			rec.Subject = v
		case "FROM":
			rec.From = v
		case "REPLY-TO":
			rec.ReplyTo = v
		case "DATE":
			rec.Date = v
		case "TO":
			rec.To = addAddrs(rec.To, v)
		case "CC":
			rec.Cc = addAddrs(rec.Cc, v)
		case "X-ORIGINATING-IP":
			if ips := ipPattern.FindAllString(v, 1); len(ips) > 0 {
				if a, err := netip.ParseAddr(strings.Trim(ips[0], "[]")); err == nil {
					rec.XOriginatingIP = a.String()
				}
			}
		case "X-MAILER", "USER-AGENT", "X-USER-AGENT":
			rec.UserAgent = v
		}
	}
	rec.Path = path
}

// addAddrs adds the comma-separated parts of an address header, commas
// inside quotes, comments or angle brackets not counting (Zeek's
// split_mime_email_addresses), each once.
func addAddrs(set []string, v string) []string {
	depth, quoted, start := 0, false, 0
	add := func(p string) {
		p = strings.TrimSpace(p)
		if p == "" || len(set) >= maxAddrRecord {
			return
		}
		for _, q := range set {
			if q == p {
				return
			}
		}
		set = append(set, p)
	}
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '\\' && quoted:
			i++
		case c == '"':
			quoted = !quoted
		case quoted:
		case c == '(' || c == '<':
			depth++
		case (c == ')' || c == '>') && depth > 0:
			depth--
		case c == ',' && depth == 0:
			add(v[start:i])
			start = i + 1
		}
	}
	add(v[start:])
	return set
}

var ipPattern = regexp.MustCompile(`\b(?:\d{1,3}\.){3}\d{1,3}\b|\[IPv6:[0-9A-Fa-f:.]+\]`)

// receivedAddr is the address Zeek takes from a Received field: the
// second address in it when there are several (the first is usually the
// client's claimed name's), else the first.
func receivedAddr(v string) string {
	ips := ipPattern.FindAllString(v, 3)
	var addrs []string
	for _, s := range ips {
		s = strings.TrimPrefix(strings.TrimSuffix(s, "]"), "[IPv6:")
		if a, err := netip.ParseAddr(s); err == nil {
			addrs = append(addrs, a.String())
		}
	}
	switch {
	case len(addrs) > 1:
		return addrs[1]
	case len(addrs) == 1:
		return addrs[0]
	}
	return ""
}
