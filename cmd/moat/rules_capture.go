package main

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"moat/capture"
)

// Captures as a rules corpus: moat rules test and compare take pcap and
// pcapng files next to messages. A capture is run through the Analyzer,
// stage by stage as the proxy judges (with --dnsbl off: list conditions
// are unknown, never "not listed"), so connect, helo, mail and rcpt rules
// apply too, with the recorded client and envelope — unlike messages,
// which only the data stage judges.

// isCapture reports whether path is a pcap or pcapng file, gzip-compressed
// or not, by its first bytes: the pcap magic numbers (microsecond and
// nanosecond, either byte order) or the pcapng Section Header Block type.
func isCapture(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return false
	}
	br := bufio.NewReader(f)
	head, _ := br.Peek(4)
	if len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return false
		}
		var b [4]byte
		n, _ := io.ReadFull(zr, b[:])
		head = b[:n]
	}
	if len(head) < 4 {
		return false
	}
	switch binary.BigEndian.Uint32(head) {
	case 0xa1b2c3d4, 0xd4c3b2a1, // pcap, microseconds
		0xa1b23c4d, 0x4d3cb2a1, // pcap, nanoseconds
		0x0a0d0d0a: // pcapng
		return true
	}
	return false
}

// splitCaptures separates the captures among paths from the messages.
func splitCaptures(paths []string) (captures, messages []string) {
	for _, p := range paths {
		if isCapture(p) {
			captures = append(captures, p)
		} else {
			messages = append(messages, p)
		}
	}
	return captures, messages
}

// txVerdict is what one rule set made of one transaction.
type txVerdict struct {
	Verdict string   `json:"verdict"`
	Score   float64  `json:"score"`
	Stage   string   `json:"stage,omitempty"`
	Reason  string   `json:"reason,omitempty"`
	Rules   []string `json:"rules,omitempty"`
}

func verdictOf(r *capture.Record) txVerdict {
	v := txVerdict{Verdict: r.Verdict, Score: r.Score, Stage: r.Stage, Reason: r.Reason, Rules: r.Rules}
	if v.Verdict == "" {
		v.Verdict = "none" // no stage judged: a session that never greeted
	}
	return v
}

func (v txVerdict) String() string {
	s := fmt.Sprintf("%s %.1f", v.Verdict, v.Score)
	if v.Stage != "" && v.Verdict != "accept" {
		s += " @" + v.Stage
	}
	if v.Reason != "" && v.Verdict != "accept" {
		s += " (" + v.Reason + ")"
	}
	return s
}

// txRef names a transaction of a capture: its session's uid and its place
// in the session (trans_depth repeats when a transaction moves no
// message), with the fields an operator recognises it by.
type txRef struct {
	ID        string        `json:"id"`
	UID       string        `json:"uid"`
	TS        capture.Epoch `json:"ts"`
	Client    string        `json:"id.orig_h"`
	Helo      string        `json:"helo,omitempty"`
	MailFrom  string        `json:"mailfrom,omitempty"`
	RcptTo    []string      `json:"rcptto,omitempty"`
	Subject   string        `json:"subject,omitempty"`
	LastReply string        `json:"last_reply,omitempty"`
}

// judgeCaptures runs the captures through the Analyzer with the rules of
// rulesFile ("" for the configuration's) and calls fn with every record.
func judgeCaptures(ctx context.Context, cfg *Config, rulesFile string, files []string, stderr io.Writer, fn func(txRef, *capture.Record) error) error {
	c := *cfg
	if rulesFile != "" {
		c.Rules.File = rulesFile
	}
	c.Rules.Mode = "enforce" // what the rules would do, as for messages
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	engine, _, closeEngine, err := analyzeEngine(ctx, &c, "off", files, engineDeps{Log: log})
	if err != nil {
		return err
	}
	defer closeEngine()
	an, err := capture.New(capture.Config{}, capture.Deps{Engine: engine, Session: c.Config.SequencerConfig(), Logger: log})
	if err != nil {
		return err
	}
	srcs := make([]capture.Source, 0, len(files))
	for _, name := range files {
		s, err := capture.OpenFile(name)
		if err != nil {
			for _, o := range srcs {
				o.Close()
			}
			return err
		}
		srcs = append(srcs, s)
	}
	src := capture.Merge(srcs...)
	defer src.Close()
	st, err := an.Run(ctx, src, func(s *capture.Session) error {
		for i := range s.Records {
			r := &s.Records[i]
			ref := txRef{ID: fmt.Sprintf("%s#%d", s.UID, i+1), UID: s.UID, TS: r.TS, Client: r.OrigH, Helo: r.Helo,
				MailFrom: r.MailFrom, RcptTo: r.RcptTo, Subject: r.Subject, LastReply: r.LastReply}
			if err := fn(ref, r); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil && st.Panics > 0 {
		err = fmt.Errorf("%d sessions were lost to an internal error (a bug: please report it)", st.Panics)
	}
	return err
}

// runCaptureTest is moat rules test over captures: every transaction with
// its verdict.
func runCaptureTest(ctx context.Context, cfg *Config, rulesFile string, files []string, format string, stdout, stderr io.Writer) error {
	enc := json.NewEncoder(stdout)
	tw := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
	if format == "table" {
		fmt.Fprintln(tw, "TRANSACTION\tFROM\tSUBJECT\tSCORE\tACTION\tSTAGE\tRULES")
	}
	counts := map[string]int{}
	n := 0
	err := judgeCaptures(ctx, cfg, rulesFile, files, stderr, func(ref txRef, r *capture.Record) error {
		v := verdictOf(r)
		counts[v.Verdict]++
		n++
		if format == "json" {
			return enc.Encode(struct {
				Transaction txRef `json:"transaction"`
				txVerdict
			}{ref, v})
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.1f\t%s\t%s\t%s\n", ref.ID, clipText(ref.MailFrom, 30), clipText(ref.Subject, 40),
			v.Score, v.Verdict, v.Stage, strings.Join(v.Rules, " "))
		return nil
	})
	if format == "table" {
		tw.Flush()
		fmt.Fprintf(stderr, "moat rules: %d transactions in %s: %d accept, %d tag, %d tempfail, %d reject (DNS lists not queried)\n",
			n, plural(len(files), "capture"), counts["accept"], counts["tag"], counts["tempfail"], counts["reject"])
	}
	return err
}

// actionOrder lists the actions in the totals, mildest first; "none" is a
// session never judged (it never greeted).
var actionOrder = []string{"accept", "tag", "tempfail", "reject", "none"}

// compareTotals counts what each rule set did with the transactions.
type compareTotals struct {
	Transactions int            `json:"transactions"`
	Changed      int            `json:"changed"`
	Old          map[string]int `json:"old"`
	New          map[string]int `json:"new"`
	// Delta is New minus Old per action: how many more rejects, tags,
	// tempfails the new rules give.
	Delta map[string]int `json:"delta"`
}

// runCaptureCompare is moat rules compare over captures: each capture is
// analysed once with each rule set, and the transactions whose action
// changes are listed with the rules that make the difference.
func runCaptureCompare(ctx context.Context, cfg *Config, oldFile, newFile string, files []string, format string, stdout, stderr io.Writer) error {
	old := make(map[string]txVerdict)
	err := judgeCaptures(ctx, cfg, oldFile, files, stderr, func(ref txRef, r *capture.Record) error {
		old[ref.ID] = verdictOf(r)
		return nil
	})
	if err != nil {
		return err
	}
	tot := compareTotals{Old: map[string]int{}, New: map[string]int{}, Delta: map[string]int{}}
	enc := json.NewEncoder(stdout)
	tw := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
	if format == "table" {
		fmt.Fprintln(tw, "TRANSACTION\tFROM\tSUBJECT\tOLD\tNEW\tWHY")
	}
	err = judgeCaptures(ctx, cfg, newFile, files, stderr, func(ref txRef, r *capture.Record) error {
		n := verdictOf(r)
		o, ok := old[ref.ID]
		if !ok {
			// Both runs reconstruct the same sessions; this cannot
			// happen unless the capture changed in between.
			return fmt.Errorf("transaction %s is not in the first run", ref.ID)
		}
		tot.Transactions++
		tot.Old[o.Verdict]++
		tot.New[n.Verdict]++
		if o.Verdict == n.Verdict {
			return nil
		}
		tot.Changed++
		why := verdictDiff(o, n)
		if format == "json" {
			return enc.Encode(struct {
				Transaction txRef     `json:"transaction"`
				Old         txVerdict `json:"old"`
				New         txVerdict `json:"new"`
				Why         string    `json:"why"`
			}{ref, o, n, why})
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", ref.ID, clipText(ref.MailFrom, 30), clipText(ref.Subject, 40), o, n, why)
		return nil
	})
	if format == "table" {
		tw.Flush()
	}
	if err != nil {
		return err
	}
	for _, a := range actionOrder {
		tot.Delta[a] = tot.New[a] - tot.Old[a]
	}
	if format == "json" {
		if err := enc.Encode(map[string]any{"totals": tot}); err != nil {
			return err
		}
	}
	fmt.Fprintf(stderr, "moat rules: %d transactions in %s, %d change action (DNS lists not queried)\n",
		tot.Transactions, plural(len(files), "capture"), tot.Changed)
	fmt.Fprintf(stderr, "  %-9s %6s %6s %7s\n", "action", "old", "new", "change")
	for _, a := range actionOrder {
		if a == "none" && tot.Old[a] == 0 && tot.New[a] == 0 {
			continue
		}
		fmt.Fprintf(stderr, "  %-9s %6d %6d %+7d\n", a, tot.Old[a], tot.New[a], tot.Delta[a])
	}
	return nil
}

// verdictDiff names the rules only one side matched, or says that the
// difference lies in scores or thresholds.
func verdictDiff(o, n txVerdict) string {
	var parts []string
	for _, r := range n.Rules {
		if !slices.Contains(o.Rules, r) {
			parts = append(parts, "+"+r)
		}
	}
	for _, r := range o.Rules {
		if !slices.Contains(n.Rules, r) {
			parts = append(parts, "-"+r)
		}
	}
	if len(parts) == 0 {
		return "same rules, different scores or thresholds"
	}
	return strings.Join(parts, " ")
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// clipText shortens s for a table column.
func clipText(s string, n int) string {
	if len([]rune(s)) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}
