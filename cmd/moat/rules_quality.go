package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"moat/internal/quality"
	"moat/rules"
)

// Filter quality on labelled mail: moat rules test and compare with
// --labels judge known spam and known ham and print how well the scores
// separate them (internal/quality computes the figures).

// judgeFunc judges one message of a corpus. The commands take it as a
// value, not a rule set, so that whatever scores a message — the rules
// today, an engine that adds a statistical classifier next — plugs in
// where the Set is built.
type judgeFunc func(name string, msg []byte) rules.Judgement

// maxHamRates are the rates of flagged ham the summary finds the lowest
// threshold for: 0.1 % and 0.5 %.
var maxHamRates = []float64{0.001, 0.005}

// labels is --labels spam=PATH[,PATH...],ham=PATH[,PATH...]: a path
// belongs to the label last named before it. The flag may repeat.
type labels struct{ spam, ham []string }

func (l *labels) String() string {
	if l == nil || l.spam == nil && l.ham == nil {
		return ""
	}
	return "spam=" + strings.Join(l.spam, ",") + ",ham=" + strings.Join(l.ham, ",")
}

func (l *labels) Set(v string) error {
	var cur *[]string
	for _, p := range strings.Split(v, ",") {
		switch {
		case strings.HasPrefix(p, "spam="):
			cur, p = &l.spam, strings.TrimPrefix(p, "spam=")
		case strings.HasPrefix(p, "ham="):
			cur, p = &l.ham, strings.TrimPrefix(p, "ham=")
		case cur == nil:
			return fmt.Errorf("%q: name the label first, spam=PATH or ham=PATH", p)
		}
		if p == "" {
			return errors.New("empty path")
		}
		*cur = append(*cur, p)
	}
	return nil
}

func (l *labels) set() bool { return len(l.spam)+len(l.ham) > 0 }

// check refuses captures: a capture holds transactions, not messages
// that one label fits.
func (l *labels) check() error {
	for _, p := range append(append([]string(nil), l.spam...), l.ham...) {
		if isCapture(p) {
			return fmt.Errorf("--labels: %s is a capture; label messages (.eml, mbox, Maildir, directories)", p)
		}
	}
	return nil
}

// read calls fn for every message under the spam paths, then the ham.
func (l *labels) read(fn func(name string, spam bool, msg []byte) error) error {
	for _, side := range []struct {
		paths []string
		spam  bool
	}{{l.spam, true}, {l.ham, false}} {
		err := rules.ReadCorpus(side.paths, func(name string, msg []byte) error { return fn(name, side.spam, msg) })
		if err != nil {
			return err
		}
	}
	return nil
}

// scored collects one judge's scores on labelled mail.
type scored struct {
	thresholds      []rules.Threshold
	samples         []quality.Sample
	notSpam, notHam int // messages not judged, by label
}

func (s *scored) add(spam bool, j rules.Judgement) {
	if j.Error != "" {
		if spam {
			s.notSpam++
		} else {
			s.notHam++
		}
		return
	}
	s.samples = append(s.samples, quality.Sample{Score: j.Score, Spam: spam})
}

// notJudged names on w a message that a judge could not judge; rules
// test passes its one judgement twice.
func notJudged(w io.Writer, name string, o, n rules.Judgement) {
	switch {
	case o.Error == "" && n.Error == "":
	case o.Error == n.Error:
		fmt.Fprintf(w, "moat rules: %s: not judged: %s\n", name, o.Error)
	case o.Error == "":
		fmt.Fprintf(w, "moat rules: %s: not judged by NEW: %s\n", name, n.Error)
	case n.Error == "":
		fmt.Fprintf(w, "moat rules: %s: not judged by OLD: %s\n", name, o.Error)
	default:
		fmt.Fprintf(w, "moat rules: %s: not judged: OLD: %s; NEW: %s\n", name, o.Error, n.Error)
	}
}

func (s *scored) summary() qualitySummary {
	named := make([]quality.NamedThreshold, len(s.thresholds))
	for i, t := range s.thresholds {
		named[i] = quality.NamedThreshold{Name: t.Action, Threshold: t.Score}
	}
	return qualitySummary{Report: quality.Evaluate(s.samples, named, maxHamRates), NotSpam: s.notSpam, NotHam: s.notHam}
}

// qualitySummary is a quality.Report and the messages left out of it.
type qualitySummary struct {
	quality.Report
	NotSpam, NotHam int
}

// runQualityTest judges labelled mail and prints its quality summary
// instead of the per-message table: on a corpus large enough to measure
// a rate of 0.1 %, the table would bury the summary (rules test without
// --labels still gives it), and --format json stays one object.
func runQualityTest(judge judgeFunc, thresholds []rules.Threshold, l *labels, format string, stdout, stderr io.Writer) error {
	p := &progress{w: stderr, start: time.Now()}
	s := &scored{thresholds: thresholds}
	err := l.read(func(name string, spam bool, msg []byte) error {
		j := judge(name, msg)
		s.add(spam, j)
		notJudged(stderr, name, j, j)
		p.tick()
		return nil
	})
	if err != nil {
		return err
	}
	sum := s.summary()
	if format == "json" {
		return json.NewEncoder(stdout).Encode(sum.view())
	}
	return qualityTable(stdout, []string{"VALUE"}, []qualitySummary{sum})
}

// runQualityCompare judges labelled mail with two judges. It prints the
// messages whose action changes, with their label — which spam a change
// newly catches and which ham it newly flags is what decides whether to
// keep it — then both quality summaries side by side. With --format
// json, one line per changed message and a last line {"quality": ...}.
func runQualityCompare(oldJudge, newJudge judgeFunc, oldT, newT []rules.Threshold, l *labels, format string, stdout, stderr io.Writer) error {
	p := &progress{w: stderr, start: time.Now()}
	enc := json.NewEncoder(stdout)
	tw := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
	if format == "table" {
		fmt.Fprintln(tw, "MESSAGE\tLABEL\tOLD\tNEW\tWHY")
	}
	oldS, newS := &scored{thresholds: oldT}, &scored{thresholds: newT}
	changed := 0
	err := l.read(func(name string, spam bool, msg []byte) error {
		o, n := oldJudge(name, msg), newJudge(name, msg)
		oldS.add(spam, o)
		newS.add(spam, n)
		notJudged(stderr, name, o, n)
		p.tick()
		if o.Action == n.Action {
			return nil
		}
		changed++
		label := "ham"
		if spam {
			label = "spam"
		}
		if format == "json" {
			return enc.Encode(map[string]any{"message": name, "label": label, "old": o, "new": n, "why": ruleDiff(o, n)})
		}
		fmt.Fprintf(tw, "%s\t%s\t%s %.1f\t%s %.1f\t%s\n", name, label, o.Action, o.Score, n.Action, n.Score, ruleDiff(o, n))
		return nil
	})
	if format == "table" {
		tw.Flush()
	}
	fmt.Fprintf(stderr, "moat rules: %d messages, %d change action\n", p.n, changed)
	if err != nil {
		return err
	}
	o, n := oldS.summary(), newS.summary()
	if format == "json" {
		return enc.Encode(map[string]any{"quality": map[string]any{"old": o.view(), "new": n.view()}})
	}
	fmt.Fprintln(stdout)
	return qualityTable(stdout, []string{"OLD", "NEW"}, []qualitySummary{o, n})
}

// qualityTable prints summaries side by side, one column each. The
// threshold rows follow the first summary's actions; a summary without
// that action shows "-".
func qualityTable(w io.Writer, columns []string, sums []qualitySummary) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	row := func(name string, cell func(qualitySummary) string) {
		cells := make([]string, len(sums))
		for i, s := range sums {
			cells[i] = cell(s)
		}
		fmt.Fprintf(tw, "%s\t%s\n", name, strings.Join(cells, "\t"))
	}
	count := func(n, of int) string {
		if of == 0 {
			return fmt.Sprint(n)
		}
		return fmt.Sprintf("%d (%.2f%%)", n, 100*float64(n)/float64(of))
	}
	fmt.Fprintf(tw, "QUALITY\t%s\n", strings.Join(columns, "\t"))
	row("spam judged", func(s qualitySummary) string { return fmt.Sprint(s.Spam) })
	row("ham judged", func(s qualitySummary) string { return fmt.Sprint(s.Ham) })
	row("spam not judged", func(s qualitySummary) string { return fmt.Sprint(s.NotSpam) })
	row("ham not judged", func(s qualitySummary) string { return fmt.Sprint(s.NotHam) })
	var actions []string
	for _, s := range sums {
		for _, t := range s.Thresholds {
			if !slices.Contains(actions, t.Name) {
				actions = append(actions, t.Name)
			}
		}
	}
	for _, a := range actions {
		at := func(s qualitySummary) (quality.AtThreshold, bool) {
			for _, t := range s.Thresholds {
				if t.Name == a {
					return t, true
				}
			}
			return quality.AtThreshold{}, false
		}
		cell := func(f func(s qualitySummary, t quality.AtThreshold) string) func(qualitySummary) string {
			return func(s qualitySummary) string {
				t, ok := at(s)
				if !ok {
					return "-"
				}
				return f(s, t)
			}
		}
		row(a+" threshold", cell(func(_ qualitySummary, t quality.AtThreshold) string { return fmt.Sprintf("%g", t.Threshold) }))
		row("  spam caught", cell(func(s qualitySummary, t quality.AtThreshold) string { return count(t.SpamCaught, s.Spam) }))
		row("  ham flagged", cell(func(s qualitySummary, t quality.AtThreshold) string { return count(t.HamFlagged, s.Ham) }))
	}
	for i, m := range maxHamRates {
		row(fmt.Sprintf("threshold for ham <= %g%%", 100*m), func(s qualitySummary) string {
			if t := s.AtFPR[i].Threshold; !math.IsInf(t, 1) {
				return fmt.Sprintf("%g", t)
			}
			return "none"
		})
		row("  spam caught", func(s qualitySummary) string { return count(s.AtFPR[i].SpamCaught, s.Spam) })
		row("  ham flagged", func(s qualitySummary) string { return count(s.AtFPR[i].HamFlagged, s.Ham) })
	}
	row("1-ROCA%", func(s qualitySummary) string {
		if math.IsNaN(s.OneMinusROCA) {
			return "n/a"
		}
		return fmt.Sprintf("%.4g", s.OneMinusROCA)
	})
	return tw.Flush()
}

// qualityJSON is the JSON form of a summary. A threshold that no score
// reaches and an undefined 1-ROCA% (no spam or no ham) are null.
type qualityJSON struct {
	Spam         labelCount        `json:"spam"`
	Ham          labelCount        `json:"ham"`
	Thresholds   []atThresholdJSON `json:"thresholds"`
	AtHamRate    []atHamRateJSON   `json:"at_ham_rate"`
	OneMinusROCA *float64          `json:"one_minus_roca_percent"`
}

type labelCount struct {
	Judged    int `json:"judged"`
	NotJudged int `json:"not_judged"`
}

type atThresholdJSON struct {
	Action     string  `json:"action"`
	Threshold  float64 `json:"threshold"`
	SpamCaught int     `json:"spam_caught"`
	HamFlagged int     `json:"ham_flagged"`
	Recall     float64 `json:"recall"`
	HamRate    float64 `json:"ham_rate"`
}

type atHamRateJSON struct {
	MaxHamRate float64  `json:"max_ham_rate"`
	Threshold  *float64 `json:"threshold"`
	SpamCaught int      `json:"spam_caught"`
	HamFlagged int      `json:"ham_flagged"`
	Recall     float64  `json:"recall"`
	HamRate    float64  `json:"ham_rate"`
}

func (s qualitySummary) view() qualityJSON {
	finite := func(f float64) *float64 {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil
		}
		return &f
	}
	v := qualityJSON{
		Spam:         labelCount{s.Spam, s.NotSpam},
		Ham:          labelCount{s.Ham, s.NotHam},
		Thresholds:   []atThresholdJSON{},
		AtHamRate:    []atHamRateJSON{},
		OneMinusROCA: finite(s.OneMinusROCA),
	}
	for _, t := range s.Thresholds {
		v.Thresholds = append(v.Thresholds, atThresholdJSON{t.Name, t.Threshold, t.SpamCaught, t.HamFlagged, t.Recall, t.FPR})
	}
	for _, a := range s.AtFPR {
		v.AtHamRate = append(v.AtHamRate, atHamRateJSON{a.MaxFPR, finite(a.Threshold), a.SpamCaught, a.HamFlagged, a.Recall, a.FPR})
	}
	return v
}
