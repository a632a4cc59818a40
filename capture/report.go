package capture

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// Writer writes sessions' records in one of the report formats.
type Writer interface {
	Write(s *Session) error
	// Flush writes out what is buffered.
	Flush() error
}

// NewWriter returns a Writer for format "jsonl" (one JSON object per
// record) or "table" (aligned columns for people).
func NewWriter(w io.Writer, format string) (Writer, error) {
	switch format {
	case "jsonl", "json":
		bw := bufio.NewWriterSize(w, 64<<10)
		enc := json.NewEncoder(bw)
		enc.SetEscapeHTML(false)
		return &jsonWriter{w: bw, enc: enc}, nil
	case "table":
		tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "TIME\tCLIENT\tHELO\tMAIL FROM\tRCPTS\tSUBJECT\tLAST REPLY\tVERDICT\tSCORE\tSTAGE\tFLAGS")
		return &tableWriter{w: tw}, nil
	}
	return nil, fmt.Errorf("format %q is not jsonl or table", format)
}

type jsonWriter struct {
	w   *bufio.Writer
	enc *json.Encoder
}

func (j *jsonWriter) Write(s *Session) error {
	for i := range s.Records {
		if err := j.enc.Encode(&s.Records[i]); err != nil {
			return err
		}
	}
	return nil
}

func (j *jsonWriter) Flush() error { return j.w.Flush() }

type tableWriter struct {
	w *tabwriter.Writer
	n int
}

func (t *tableWriter) Write(s *Session) error {
	for _, r := range s.Records {
		var flags []string
		if r.TLS {
			flags = append(flags, "tls")
		}
		if r.Authenticated {
			flags = append(flags, "auth")
		}
		if r.Smuggling {
			flags = append(flags, "SMUGGLING")
		}
		flags = append(flags, r.Problems...)
		verdict := r.Verdict
		if verdict == "" {
			verdict = "-"
		}
		if r.WouldBe != "" {
			verdict += "(" + r.WouldBe + ")"
		}
		fmt.Fprintf(t.w, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%.1f\t%s\t%s\n",
			r.TS.Time().UTC().Format("2006-01-02 15:04:05"), clip(r.OrigH, 39), clip(r.Helo, 30), clip(r.MailFrom, 40),
			len(r.RcptTo), clip(r.Subject, 40), clip(r.LastReply, 30), verdict, r.Score, r.Stage, strings.Join(flags, ","))
		// A table is read as it grows: flush every few hundred rows.
		if t.n++; t.n%256 == 0 {
			t.w.Flush()
		}
	}
	return nil
}

func (t *tableWriter) Flush() error { return t.w.Flush() }

// clip shortens s to n runes for a table cell, with control characters
// (tabs would break the columns) replaced.
func clip(s string, n int) string {
	r := []rune(s)
	if len(r) > n {
		r = append(r[:n-1], '…')
	}
	for i, c := range r {
		if c < 0x20 || c == 0x7f {
			r[i] = '?'
		}
	}
	if len(r) == 0 {
		return "-"
	}
	return string(r)
}

// maxTally bounds the distinct keys a summary counts per table; past it
// new keys go to "(other)".
const maxTally = 100000

type tally map[string]int

func (t tally) add(k string) {
	if _, ok := t[k]; !ok && len(t) >= maxTally {
		k = "(other)"
	}
	t[k]++
}

// top returns the n most frequent keys, ties by name.
func (t tally) top(n int) []string {
	keys := make([]string, 0, len(t))
	for k := range t {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if t[keys[i]] != t[keys[j]] {
			return t[keys[i]] > t[keys[j]]
		}
		return keys[i] < keys[j]
	})
	if len(keys) > n {
		keys = keys[:n]
	}
	return keys
}

// Summary is the human summary at the end of a report.
type Summary struct {
	Sessions     int    `json:"sessions"`
	Transactions int    `json:"transactions"` // records with a MAIL, RCPT or message
	Messages     int    `json:"messages"`     // records with a message
	TLS          int    `json:"tls_sessions"`
	ImplicitTLS  int    `json:"implicit_tls_sessions"`
	Auth         int    `json:"authenticated_sessions"`
	Smuggling    int    `json:"smuggling_sessions"`
	Incomplete   int    `json:"incomplete_sessions"` // with a gap in either direction
	Verdicts     tally  `json:"verdicts"`
	Stages       tally  `json:"stages"`
	Rules        tally  `json:"rules"`
	Senders      tally  `json:"senders"`
	Helos        tally  `json:"helos"`
	Problems     tally  `json:"problems"`
	DNSBL        string `json:"dnsbl,omitempty"`
	Stats        *Stats `json:"stats,omitempty"`
}

// NewSummary returns an empty summary.
func NewSummary() *Summary {
	return &Summary{Verdicts: tally{}, Stages: tally{}, Rules: tally{}, Senders: tally{}, Helos: tally{}, Problems: tally{}}
}

// Add counts one session.
func (s *Summary) Add(sess *Session) {
	s.Sessions++
	switch {
	case sess.ImplicitTLS:
		s.ImplicitTLS++
		s.TLS++
	case sess.TLS:
		s.TLS++
	}
	if sess.Authenticated {
		s.Auth++
	}
	if sess.Smuggling {
		s.Smuggling++
	}
	for _, p := range sess.Problems {
		s.Problems.add(p)
		if strings.HasPrefix(p, "gap_") {
			s.Incomplete++
		}
	}
	if sess.Helo != "" {
		s.Helos.add(sess.Helo)
	}
	for _, r := range sess.Records {
		if r.MailFrom != "" || len(r.RcptTo) > 0 || r.Size > 0 {
			s.Transactions++
		}
		if r.Size > 0 || r.Subject != "" || r.From != "" {
			s.Messages++
		}
		if r.Verdict != "" {
			s.Verdicts.add(r.Verdict)
		}
		if r.Stage != "" && r.Verdict != "" && r.Verdict != "accept" {
			s.Stages.add(r.Stage)
		}
		for _, rule := range r.Rules {
			s.Rules.add(rule)
		}
		if r.MailFrom != "" {
			s.Senders.add(r.MailFrom)
		}
	}
}

// WriteText writes the summary for people.
func (s *Summary) WriteText(w io.Writer) error {
	bw := bufio.NewWriter(w)
	pct := func(n, of int) string {
		if of == 0 {
			return "0%"
		}
		return strconv.FormatFloat(100*float64(n)/float64(of), 'f', 1, 64) + "%"
	}
	fmt.Fprintf(bw, "\n== moat analyze summary\n")
	if st := s.Stats; st != nil {
		span := ""
		if !st.First.IsZero() {
			span = fmt.Sprintf(", %s to %s", st.First.UTC().Format(time.RFC3339), st.Last.UTC().Format(time.RFC3339))
		}
		fmt.Fprintf(bw, "packets:       %d (%d bytes%s), %d TCP connections\n", st.Packets, st.Bytes, span, st.Connections)
		for _, e := range st.ReadErrors {
			fmt.Fprintf(bw, "read error:    %s\n", e)
		}
		if st.Panics > 0 {
			fmt.Fprintf(bw, "BUG:           %d sessions lost to a recovered panic\n", st.Panics)
		}
	}
	fmt.Fprintf(bw, "sessions:      %d (TLS %d = %s, of which implicit %d; authenticated %d)\n",
		s.Sessions, s.TLS, pct(s.TLS, s.Sessions), s.ImplicitTLS, s.Auth)
	fmt.Fprintf(bw, "transactions:  %d (%d with a message)\n", s.Transactions, s.Messages)
	if s.DNSBL != "" {
		fmt.Fprintf(bw, "DNS lists:     %s\n", s.DNSBL)
	}
	if len(s.Verdicts) > 0 {
		fmt.Fprintf(bw, "verdicts:     ")
		for _, a := range []string{"accept", "tag", "tempfail", "reject"} {
			fmt.Fprintf(bw, " %s %d (%s)", a, s.Verdicts[a], pct(s.Verdicts[a], sumTally(s.Verdicts)))
		}
		fmt.Fprintln(bw)
	}
	if len(s.Stages) > 0 {
		fmt.Fprintf(bw, "acted at:     ")
		for _, st := range []string{"connect", "helo", "mail", "rcpt", "data"} {
			if n := s.Stages[st]; n > 0 {
				fmt.Fprintf(bw, " %s %d", st, n)
			}
		}
		fmt.Fprintln(bw)
	}
	fmt.Fprintf(bw, "smuggling:     %d sessions where a lenient parser ends DATA earlier\n", s.Smuggling)
	fmt.Fprintf(bw, "incomplete:    %d sessions with bytes missing from the capture\n", s.Incomplete)
	list := func(title string, t tally, n int) {
		if len(t) == 0 {
			return
		}
		fmt.Fprintf(bw, "%s\n", title)
		for _, k := range t.top(n) {
			fmt.Fprintf(bw, "  %7d  %s\n", t[k], clip(k, 100))
		}
	}
	list("top rules:", s.Rules, 10)
	list("top senders:", s.Senders, 10)
	list("top HELO names:", s.Helos, 10)
	list("parse problems (sessions):", s.Problems, 20)
	return bw.Flush()
}

func sumTally(t tally) int {
	n := 0
	for _, v := range t {
		n += v
	}
	return n
}

// Extractor writes every message to a directory as an .eml file named
// after the session and the transaction ("C3p3e54eyg5b6w73rx-1.eml"), so
// that `moat rules test DIR` can be run on them.
type Extractor struct {
	Dir string
	mu  sync.Mutex
	err error
}

// Extract is a Deps.Extract function.
func (e *Extractor) Extract(s *Session, rec *Record, body io.ReaderAt, size int64) string {
	name := filepath.Join(e.Dir, fmt.Sprintf("%s-%d.eml", s.UID, rec.TransDepth))
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		e.fail(err)
		return ""
	}
	_, err = io.Copy(f, io.NewSectionReader(body, 0, size))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		e.fail(err)
		return ""
	}
	return name
}

func (e *Extractor) fail(err error) {
	e.mu.Lock()
	if e.err == nil {
		e.err = err
	}
	e.mu.Unlock()
}

// Err returns the first error writing a file, if any.
func (e *Extractor) Err() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}

// CollectDNS reads src for the DNS answers it holds (UDP and TCP port
// 53), for --dnsbl recorded. It returns the read errors it met.
func CollectDNS(src Source, d *DNSAnswers) []error {
	dec := newDecoder()
	var errs []error
	for {
		p, err := src.Next()
		if err == io.EOF {
			return errs
		}
		if err != nil {
			errs = append(errs, err)
			if _, ok := err.(*ReadError); ok {
				continue
			}
			return errs
		}
		seg, ok := dec.decode(p)
		if !ok {
			continue
		}
		ts := p.Info.Timestamp
		switch {
		case !seg.tcp && (dec.udp.SrcPort == 53 || dec.udp.DstPort == 53):
			d.add(ts, dec.udp.Payload)
		case seg.tcp && (dec.tcp.SrcPort == 53 || dec.tcp.DstPort == 53):
			d.addTCP(ts, dec.tcp.Payload)
		}
	}
}
