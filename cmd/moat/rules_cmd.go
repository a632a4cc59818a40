package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"moat/inspect"
	"moat/rules"
)

const rulesUsage = `Usage:
  moat rules test [--rules FILE] [--config FILE] [--format table|json] MESSAGE|CAPTURE...
  moat rules test [--rules FILE] [--config FILE] [--format table|json] --labels spam=PATH,...,ham=PATH,...
  moat rules compare [--config FILE] [--format table|json] OLD NEW MESSAGE|CAPTURE...
  moat rules compare [--config FILE] [--format table|json] --labels spam=PATH,...,ham=PATH,... OLD NEW
  moat rules default

test     runs the data-stage rules over messages and prints, per message, the
         score, the action and every matched rule with its score.
compare  runs two rule files over the same messages and prints the messages
         whose action changes, with the rules that differ.
default  prints the built-in rule set (a starting point for your own file).

With classifier.enabled in the configuration, or --state DIR|redis://...,
messages are judged with the classifier model of that state store too
(read from a copy, never changed), so the CLASSIFIER_* rules apply.

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

--labels names known spam and known ham (each PATH a MESSAGE as above;
a path belongs to the label last named before it) and measures the rules
on them by score: for each threshold of the rules (tag, tempfail,
reject), the spam caught and the ham flagged (score >= threshold); the
lowest threshold that flags at most 0.1 % and at most 0.5 % of the ham,
and the spam caught there (equal scores are flagged together, so it is
"none" when even the top score flags too much ham); and 1-ROCA%, 100 ×
(1 − area under the ROC curve): 0 separates perfectly, 50 is a coin
toss. Actions of single rules (reject, accept) are not seen there. test
prints this summary instead of the per-message table (with --format
json, one object); compare prints the messages whose action changes,
with their label, then both summaries side by side (with --format json,
a last line {"quality": {"old": ..., "new": ...}}). Input that is not
a message (no header field) is not judged: it is named on stderr and
counted.
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
	var lab labels
	fs.Var(&lab, "labels", "measure on labelled mail: `spam=PATH[,PATH...],ham=PATH[,PATH...]`")
	stateSpec := fs.String("state", "", "judge with the classifier model of this store: a state `DIR` or redis://HOST:PORT[/DB] (default: the configuration's, when classifier.enabled)")
	if ok, code := parseFlags(fs, args[1:], stdout); !ok {
		return code
	}
	if *format != "table" && *format != "json" {
		fmt.Fprintf(stderr, "moat rules: --format %q is not table or json\n", *format)
		return exitUsage
	}
	if err := lab.check(); err != nil {
		fmt.Fprintf(stderr, "moat rules: %v\n", err)
		return exitUsage
	}
	cfg, err := loadConfig(*configPath)
	if err != nil {
		return exitCode(stderr, err)
	}
	var ec inspect.Config
	if args[0] != "default" {
		if ec.Classifier, err = toolClassifier(cfg, *stateSpec); err != nil {
			return exitCode(stderr, err)
		}
	}
	load := func(file string) (*rules.Set, error) {
		rc := cfg.Rules
		if file != "" {
			rc.File = file
		}
		rc.Mode = "enforce"
		s, err := rules.LoadConfigured(rc, rules.Options{Lists: listKinds(cfg), RateLimits: rateLimitStages(cfg),
			Classifier: ec.Classifier != nil})
		if err != nil {
			return nil, &configError{err}
		}
		return s, nil
	}
	judge := func(s *rules.Set) judgeFunc {
		return func(name string, msg []byte) rules.Judgement { return s.JudgeMessageWith(ec, name, msg) }
	}
	switch args[0] {
	case "default":
		stdout.Write(rules.DefaultYAML())
		return 0
	case "test":
		if fs.NArg() > 0 && lab.set() {
			fmt.Fprintln(stderr, "moat rules test: --labels names the messages; give no MESSAGE")
			return exitUsage
		}
		if fs.NArg() == 0 && !lab.set() {
			fs.Usage()
			return exitUsage
		}
		set, err := load(*rulesFile)
		if err != nil {
			return exitCode(stderr, err)
		}
		if lab.set() {
			return exitCode(stderr, runQualityTest(judge(set), set.Thresholds(), &lab, *format, stdout, stderr))
		}
		captures, messages := splitCaptures(fs.Args())
		if len(messages) > 0 {
			if err := runRulesTest(judge(set), messages, *format, stdout, stderr); err != nil || len(captures) == 0 {
				return exitCode(stderr, err)
			}
		}
		return exitCode(stderr, runCaptureTest(context.Background(), cfg, *rulesFile, captures, *format, stdout, stderr))
	case "compare":
		if lab.set() && fs.NArg() != 2 {
			fmt.Fprintln(stderr, "moat rules compare: --labels names the messages; give OLD and NEW only")
			return exitUsage
		}
		if fs.NArg() < 3 && !lab.set() {
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
		if lab.set() {
			return exitCode(stderr, runQualityCompare(judge(oldSet), judge(newSet),
				oldSet.Thresholds(), newSet.Thresholds(), &lab, *format, stdout, stderr))
		}
		captures, messages := splitCaptures(fs.Args()[2:])
		if len(messages) > 0 {
			if err := runRulesCompare(judge(oldSet), judge(newSet), messages, *format, stdout, stderr); err != nil || len(captures) == 0 {
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

func runRulesTest(judge judgeFunc, paths []string, format string, stdout, stderr io.Writer) error {
	p := &progress{w: stderr, start: time.Now()}
	enc := json.NewEncoder(stdout)
	tw := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
	if format == "table" {
		fmt.Fprintln(tw, "MESSAGE\tSCORE\tACTION\tRULES")
	}
	counts := map[string]int{}
	err := rules.ReadCorpus(paths, func(name string, msg []byte) error {
		j := judge(name, msg)
		counts[j.Action]++
		p.tick()
		if format == "json" {
			return enc.Encode(j)
		}
		if j.Error != "" {
			fmt.Fprintf(tw, "%s\t-\tnot judged\t%s\n", name, j.Error)
			return nil
		}
		fmt.Fprintf(tw, "%s\t%.1f\t%s\t%s\n", name, j.Score, j.Action, hitList(j))
		return nil
	})
	if format == "table" {
		tw.Flush()
		fmt.Fprintf(stderr, "moat rules: %d messages: %d accept, %d tag, %d tempfail, %d reject",
			p.n, counts["accept"], counts["tag"], counts["tempfail"], counts["reject"])
		if counts[""] > 0 {
			fmt.Fprintf(stderr, ", %d not judged", counts[""])
		}
		fmt.Fprintln(stderr)
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

func runRulesCompare(oldJudge, newJudge judgeFunc, paths []string, format string, stdout, stderr io.Writer) error {
	p := &progress{w: stderr, start: time.Now()}
	enc := json.NewEncoder(stdout)
	tw := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
	if format == "table" {
		fmt.Fprintln(tw, "MESSAGE\tOLD\tNEW\tWHY")
	}
	changed := 0
	err := rules.ReadCorpus(paths, func(name string, msg []byte) error {
		o, n := oldJudge(name, msg), newJudge(name, msg)
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
