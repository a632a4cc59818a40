package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"moat/rules"
)

const rulesUsage = `Usage:
  moat rules test [--rules FILE] [--config FILE] [--format table|json] MESSAGE|CAPTURE...
  moat rules compare [--config FILE] [--format table|json] OLD NEW MESSAGE|CAPTURE...
  moat rules default

test     runs the data-stage rules over messages and prints, per message, the
         score, the action and every matched rule with its score.
compare  runs two rule files over the same messages and prints the messages
         whose action changes, with the rules that differ.
default  prints the built-in rule set (a starting point for your own file).

MESSAGE is a file holding one message (.eml), an mbox file, a Maildir
folder or any directory of message files. DNS lists are not queried and
the envelope comes from the message's own headers, so rules of the
connect, helo, mail and rcpt stages do not apply. Progress goes to stderr.

A MESSAGE that is a pcap or pcapng capture (gzip-compressed too) is
analysed as moat analyze --dnsbl off does: every transaction is judged
stage by stage with its recorded client and envelope, so the rules of
every stage apply. compare lists the transactions whose action changes,
with the rules that cause it, and the totals per action (with
--format json, a last line {"totals": ...}).
`

func cmdRules(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || isHelp(args[0]) {
		w := stderr
		code := exitUsage
		if len(args) > 0 {
			w, code = stdout, 0
		}
		fmt.Fprint(w, rulesUsage)
		return code
	}
	fs := newFlagSet("moat rules "+args[0], rulesUsage, stderr)
	rulesFile := fs.String("rules", "", "rules `FILE` (default: the config's rules, else the built-in rules)")
	configPath := fs.String("config", "", "configuration `FILE` for DNS list names and rules")
	format := fs.String("format", "table", "output format: table or json")
	if ok, code := parseFlags(fs, args[1:], stdout); !ok {
		return code
	}
	if *format != "table" && *format != "json" {
		fmt.Fprintf(stderr, "moat rules: --format %q is not table or json\n", *format)
		return exitUsage
	}
	cfg, err := loadConfig(*configPath)
	if err != nil {
		return exitCode(stderr, err)
	}
	load := func(file string) (*rules.Set, error) {
		rc := cfg.Rules
		if file != "" {
			rc.File = file
		}
		rc.Mode = "enforce"
		s, err := rules.LoadConfigured(rc, rules.Options{Lists: listKinds(cfg), RateLimits: rateLimitStages(cfg)})
		if err != nil {
			return nil, &configError{err}
		}
		return s, nil
	}
	switch args[0] {
	case "default":
		stdout.Write(rules.DefaultYAML())
		return 0
	case "test":
		if fs.NArg() == 0 {
			fs.Usage()
			return exitUsage
		}
		set, err := load(*rulesFile)
		if err != nil {
			return exitCode(stderr, err)
		}
		captures, messages := splitCaptures(fs.Args())
		if len(messages) > 0 {
			if err := runRulesTest(set, messages, *format, stdout, stderr); err != nil || len(captures) == 0 {
				return exitCode(stderr, err)
			}
		}
		return exitCode(stderr, runCaptureTest(context.Background(), cfg, *rulesFile, captures, *format, stdout, stderr))
	case "compare":
		if fs.NArg() < 3 {
			fs.Usage()
			return exitUsage
		}
		oldSet, err := load(fs.Arg(0))
		if err != nil {
			return exitCode(stderr, err)
		}
		newSet, err := load(fs.Arg(1))
		if err != nil {
			return exitCode(stderr, err)
		}
		captures, messages := splitCaptures(fs.Args()[2:])
		if len(messages) > 0 {
			if err := runRulesCompare(oldSet, newSet, messages, *format, stdout, stderr); err != nil || len(captures) == 0 {
				return exitCode(stderr, err)
			}
		}
		return exitCode(stderr, runCaptureCompare(context.Background(), cfg, fs.Arg(0), fs.Arg(1), captures, *format, stdout, stderr))
	}
	fmt.Fprintf(stderr, "moat rules: unknown command %q\n\n%s", args[0], rulesUsage)
	return exitUsage
}

// progress reports on stderr every thousand messages.
type progress struct {
	w     io.Writer
	n     int
	start time.Time
}

func (p *progress) tick() {
	if p.n++; p.n%1000 == 0 {
		fmt.Fprintf(p.w, "moat rules: %d messages (%.0f/s)\n", p.n, float64(p.n)/time.Since(p.start).Seconds())
	}
}

func runRulesTest(set *rules.Set, paths []string, format string, stdout, stderr io.Writer) error {
	p := &progress{w: stderr, start: time.Now()}
	enc := json.NewEncoder(stdout)
	tw := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
	if format == "table" {
		fmt.Fprintln(tw, "MESSAGE\tSCORE\tACTION\tRULES")
	}
	counts := map[string]int{}
	err := rules.ReadCorpus(paths, func(name string, msg []byte) error {
		j := set.JudgeMessage(name, msg)
		counts[j.Action]++
		p.tick()
		if format == "json" {
			return enc.Encode(j)
		}
		fmt.Fprintf(tw, "%s\t%.1f\t%s\t%s\n", name, j.Score, j.Action, hitList(j))
		return nil
	})
	if format == "table" {
		tw.Flush()
		fmt.Fprintf(stderr, "moat rules: %d messages: %d accept, %d tag, %d tempfail, %d reject\n",
			p.n, counts["accept"], counts["tag"], counts["tempfail"], counts["reject"])
	}
	return err
}

func hitList(j rules.Judgement) string {
	s := make([]string, len(j.Hits))
	for i, h := range j.Hits {
		s[i] = fmt.Sprintf("%s(%.1f)", h.Rule, h.Score)
		if h.Shadow {
			s[i] = "shadow:" + s[i]
		}
	}
	return strings.Join(s, " ")
}

func runRulesCompare(oldSet, newSet *rules.Set, paths []string, format string, stdout, stderr io.Writer) error {
	p := &progress{w: stderr, start: time.Now()}
	enc := json.NewEncoder(stdout)
	tw := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
	if format == "table" {
		fmt.Fprintln(tw, "MESSAGE\tOLD\tNEW\tWHY")
	}
	changed := 0
	err := rules.ReadCorpus(paths, func(name string, msg []byte) error {
		o, n := oldSet.JudgeMessage(name, msg), newSet.JudgeMessage(name, msg)
		p.tick()
		if o.Action == n.Action {
			return nil
		}
		changed++
		why := ruleDiff(o, n)
		if format == "json" {
			return enc.Encode(map[string]any{"message": name, "old": o, "new": n, "why": why})
		}
		fmt.Fprintf(tw, "%s\t%s %.1f\t%s %.1f\t%s\n", name, o.Action, o.Score, n.Action, n.Score, why)
		return nil
	})
	if format == "table" {
		tw.Flush()
	}
	fmt.Fprintf(stderr, "moat rules: %d messages, %d change action\n", p.n, changed)
	return err
}

// ruleDiff names the rules matched by only one side.
func ruleDiff(o, n rules.Judgement) string {
	in := func(hs []inspectHit, name string) bool {
		for _, h := range hs {
			if h.Rule == name {
				return true
			}
		}
		return false
	}
	var parts []string
	for _, h := range n.Hits {
		if !in(o.Hits, h.Rule) {
			parts = append(parts, fmt.Sprintf("+%s(%.1f)", h.Rule, h.Score))
		}
	}
	for _, h := range o.Hits {
		if !in(n.Hits, h.Rule) {
			parts = append(parts, fmt.Sprintf("-%s(%.1f)", h.Rule, h.Score))
		}
	}
	if len(parts) == 0 {
		return "same rules, different scores or thresholds"
	}
	return strings.Join(parts, " ")
}
