package inspect

import (
	"net/mail"
	"strconv"
	"strings"
	"time"
)

// parseDate parses a Date field. strict reports that net/mail accepted it
// as RFC 5322 syntax; otherwise a tolerant reading tries the forms real
// mailers produce (no comma, asctime order, ISO 8601, a missing zone,
// dashes between the parts) and the zero time is returned when even that
// fails. Named zones get their RFC 5322 §4.3 offsets, which net/mail leaves
// at zero.
func parseDate(v string) (t time.Time, strict bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return time.Time{}, false
	}
	// The form nearly every mailer writes, tried first: mail.ParseDate
	// walks dozens of layouts and allocates an error for each miss.
	for _, layout := range [...]string{"Mon, 2 Jan 2006 15:04:05 -0700", "Mon, 2 Jan 2006 15:04:05 -0700 (MST)"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t, true
		}
	}
	if t, err := mail.ParseDate(v); err == nil {
		return fixZone(t), true
	}
	if len(v) > 200 {
		return time.Time{}, false // no date is this long
	}
	return lenientDate(v), false
}

// zoneOffsets are the obsolete named zones of RFC 5322 §4.3, plus the
// abbreviations mailers commonly write. Military single letters are
// treated as -0000 (unknown), as §4.3 asks, since RFC 822 had their signs
// backwards.
var zoneOffsets = map[string]int{
	"UT": 0, "UTC": 0, "GMT": 0, "Z": 0,
	"EST": -5, "EDT": -4, "CST": -6, "CDT": -5,
	"MST": -7, "MDT": -6, "PST": -8, "PDT": -7,
	"BST": 1, "CET": 1, "CEST": 2, "MET": 1, "MEST": 2,
	"EET": 2, "EEST": 3, "WET": 0, "WEST": 1, "MSK": 3,
	"JST": 9, "KST": 9, "HKT": 8, "SGT": 8, "AEST": 10, "AEDT": 11,
}

// fixZone gives a time parsed with a zone abbreviation the abbreviation's
// offset; Go's parser knows the name but not the offset.
func fixZone(t time.Time) time.Time {
	name, off := t.Zone()
	if off != 0 || name == "" {
		return t
	}
	h, ok := zoneOffsets[strings.ToUpper(name)]
	if !ok || h == 0 {
		return t
	}
	return time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), 0, time.FixedZone(name, h*3600))
}

// lenientDate reads a date from its parts in whatever order they come:
// a month name, a day, a year, hh:mm[:ss] and a zone.
func lenientDate(v string) time.Time {
	for _, layout := range []string{time.RFC3339, "2006-01-02 15:04:05 -0700", "2006-01-02 15:04:05", "2006-01-02T15:04:05"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t
		}
	}
	var (
		day, year, month  = -1, -1, 0
		hour, minute, sec = -1, 0, 0
		zone              *time.Location
		yearDigits        int
		numericZone       bool
	)
	for _, tok := range dateTokens(stripComments(v)) {
		switch {
		case strings.IndexByte(tok, ':') > 0 && hour < 0:
			hms := strings.Split(tok, ":")
			if len(hms) > 3 {
				return time.Time{}
			}
			var ok bool
			if hour, ok = atoiRange(hms[0], 0, 23); !ok {
				return time.Time{}
			}
			if minute, ok = atoiRange(hms[1], 0, 59); !ok {
				return time.Time{}
			}
			if len(hms) == 3 {
				if sec, ok = atoiRange(strings.SplitN(hms[2], ".", 2)[0], 0, 60); !ok {
					return time.Time{}
				}
				sec = min(sec, 59) // a leap second
			}
		case isOffset(tok) && !numericZone:
			// A numeric offset wins over a zone name ("GMT+0200").
			numericZone = true
			n, err := strconv.Atoi(tok[1:])
			if err != nil || n%100 > 59 {
				return time.Time{}
			}
			off := (n/100*60 + n%100) * 60
			if tok[0] == '-' {
				off = -off
			}
			zone = time.FixedZone("", off)
		case isDigits(tok):
			n, _ := strconv.Atoi(tok)
			switch {
			case len(tok) <= 2 && day < 0 && n >= 1 && n <= 31:
				day = n
			case year < 0 && len(tok) <= 4:
				year, yearDigits = n, len(tok)
			default:
				return time.Time{}
			}
		default:
			up := strings.ToUpper(tok)
			if m := monthIndex(up); m > 0 && month == 0 {
				month = m
			} else if h, ok := zoneOffsets[up]; ok && zone == nil {
				zone = time.FixedZone(up, h*3600)
			} else if len(up) == 1 && up[0] >= 'A' && up[0] <= 'Z' && zone == nil {
				zone = time.UTC // military zone: -0000
			}
			// Day names and other words are ignored.
		}
	}
	if day < 0 || year < 0 || month == 0 {
		return time.Time{}
	}
	// Two- and three-digit years (RFC 5322 §4.3).
	switch {
	case yearDigits <= 2 && year < 50:
		year += 2000
	case yearDigits <= 3 && year < 1000:
		year += 1900
	}
	if day > daysIn(time.Month(month), year) {
		return time.Time{}
	}
	if hour < 0 {
		hour = 0
	}
	if zone == nil {
		zone = time.UTC
	}
	return time.Date(year, time.Month(month), day, hour, minute, sec, 0, zone)
}

// dateTokens splits a date at spaces, commas and slashes, then splits
// "18-Oct-2012" at its dashes and "GMT+0200" before its offset, keeping
// offsets ("+0200", "-0700") whole.
func dateTokens(v string) []string {
	var toks []string
	for _, w := range strings.FieldsFunc(v, func(r rune) bool {
		return r == ' ' || r == '\t' || r == ',' || r == '/'
	}) {
		if isOffset(w) {
			toks = append(toks, w)
			continue
		}
		if i := strings.IndexAny(w, "+-"); i > 0 && isOffset(w[i:]) {
			toks = append(toks, w[:i], w[i:])
			continue
		}
		for _, part := range strings.Split(w, "-") {
			if part != "" {
				toks = append(toks, part)
			}
		}
	}
	return toks
}

// isOffset reports whether s is a numeric zone, "+hhmm" or "-hhmm".
func isOffset(s string) bool {
	return len(s) == 5 && (s[0] == '+' || s[0] == '-') && isDigits(s[1:])
}

var monthNames = [...]string{"JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"}

// monthIndex returns 1..12 for a month name or its abbreviation, else 0.
func monthIndex(up string) int {
	if len(up) < 3 {
		return 0
	}
	for i, m := range monthNames {
		if strings.HasPrefix(up, m) {
			return i + 1
		}
	}
	return 0
}

func daysIn(m time.Month, year int) int {
	return time.Date(year, m+1, 0, 0, 0, 0, 0, time.UTC).Day()
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// atoiRange parses a short decimal number within [lo, hi].
func atoiRange(s string, lo, hi int) (int, bool) {
	if !isDigits(s) || len(s) > 4 {
		return 0, false
	}
	n, _ := strconv.Atoi(s)
	return n, n >= lo && n <= hi
}
