package rules

import (
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"moat/inspect"
	"moat/inspect/smtp"
)

// action is what a rule does when it matches, besides its score.
type action uint8

const (
	actNone     action = iota
	actTag             // tag the message
	actGreylist        // greylist: the engine decides with the state store
	actTempfail        // refuse with 4xx
	actReject          // refuse with 5xx
	actAccept          // allowlist: accept and stop judging
)

func parseAction(s string) (action, bool) {
	switch s {
	case "tag":
		return actTag, true
	case "greylist":
		return actGreylist, true
	case "tempfail":
		return actTempfail, true
	case "reject":
		return actReject, true
	case "accept":
		return actAccept, true
	}
	return actNone, false
}

type onError uint8

const (
	onErrorSkip     onError = iota // a rule over a failed lookup is skipped
	onErrorAccept                  // the failed lookup counts as "not listed"
	onErrorTempfail                // the stage tempfails, so the client retries
)

// rule is one compiled rule.
type rule struct {
	name        string
	description string
	stage       inspect.Stage
	cond        cond
	score       *float64
	action      action
	reply       smtp.Reply
	replyNode   *yaml.Node
	shadow      bool
	onError     onError
	deps        []string
	depth       inspect.Depth
	rdns        bool
	rcpts       bool // reads the recipients accepted so far (rcpt_count)
	classifier  bool // reads a classifier fact: its score is the classifier's own
	line        int
}

type thresholds struct{ tag, tempfail, reject *float64 }

// Set is a compiled rules file. It is immutable and safe for concurrent
// use; a reload compiles a new Set.
type Set struct {
	file       string
	mode       string
	thresholds thresholds
	tag        struct {
		subjectPrefix string
		cleanHeader   bool
	}
	replies struct{ reject, tempfail smtp.Reply }
	stages  [inspect.StageData + 1][]*rule
	needs   [inspect.StageData + 1]inspect.Needs
	byName  map[string]*rule
	metrics *Metrics
	lits    *literals // prefilter literals of the matches operators
}

func newSet(file string, opts Options) *Set {
	mode := opts.Mode
	if mode == "" {
		mode = "enforce"
	}
	return &Set{file: file, mode: mode, metrics: opts.Metrics}
}

// File names the file the set was loaded from.
func (s *Set) File() string { return s.file }

// Threshold is the total score from which an action is taken.
type Threshold struct {
	Action string // "tag", "tempfail" or "reject"
	Score  float64
}

// Thresholds lists the thresholds the rules file sets, in the order tag,
// tempfail, reject; an action without a threshold is left out. Tag
// applies at the data stage only.
func (s *Set) Thresholds() []Threshold {
	var ts []Threshold
	for _, t := range []struct {
		action string
		score  *float64
	}{{"tag", s.thresholds.tag}, {"tempfail", s.thresholds.tempfail}, {"reject", s.thresholds.reject}} {
		if t.score != nil {
			ts = append(ts, Threshold{t.action, *t.score})
		}
	}
	return ts
}

// Greylists reports whether some rule has action greylist: the engine
// then needs a state store to decide it.
func (s *Set) Greylists() bool {
	for _, st := range s.stages {
		for _, r := range st {
			if r.action == actGreylist {
				return true
			}
		}
	}
	return false
}

// Len is the number of rules.
func (s *Set) Len() int {
	n := 0
	for _, st := range s.stages {
		n += len(st)
	}
	return n
}

// Needs implements inspect.Judge.
func (s *Set) Needs(stage inspect.Stage) inspect.Needs { return s.needs[stage] }

// Evaluate implements inspect.Judge: it runs the stage's rules in order
// (meta rules after the rules they name), adds up the scores on top of
// the earlier stages', and maps the result to a verdict. Per-rule actions
// come first (reject over tempfail over tag); then the thresholds.
func (s *Set) Evaluate(stage inspect.Stage, f *inspect.Facts) inspect.Verdict {
	start := time.Now()
	v := s.evaluate(stage, f)
	if s.metrics != nil {
		s.metrics.observe(stage, v, time.Since(start))
	}
	return v
}

func (s *Set) evaluate(stage inspect.Stage, f *inspect.Facts) inspect.Verdict {
	// What the earlier stages concluded; a stage run again (EHLO after
	// STARTTLS) builds on them, never on its own earlier result.
	before := inspect.Before(stage, f.Session, f.Tx)
	if before.Allowlisted {
		return inspect.Verdict{Action: inspect.Accept, WouldBe: inspect.Accept, Reason: "allowlisted", Score: before.Score}
	}
	var (
		matched  []string
		score    float64
		trace    []string
		act      action
		actRule  *rule
		tempfail *rule
		hits     []inspect.Hit
		actTexts []string // what the deciding rule's DNS lists said
	)
	matchedBefore := func(name string) bool {
		return contains(before.Rules, name) || contains(matched, name) ||
			stage == inspect.StageData && rcptMatched(f.Tx, name)
	}
	var scans *scanCache
	if s.needs[stage].Depth >= inspect.DepthHeaders && s.lits != nil {
		scans = newScanCache(s.lits)
	}
	// One evaluation context, reset per rule: it escapes to the heap
	// through the cond interface, so per-rule copies cost an allocation.
	ctx := &evalCtx{f: f, matched: matchedBefore, scans: scans}
	for _, r := range s.stages[stage] {
		ctx.unknownAs, ctx.weight, ctx.closed = tUnknown, 0, false
		ctx.notes, ctx.listTexts = ctx.notes[:0], nil
		if r.onError == onErrorAccept {
			ctx.unknownAs = tFalse
		}
		res := r.cond.eval(ctx)
		if res == tUnknown {
			trace = append(trace, r.name+": unknown ("+strings.Join(ctx.notes, "; ")+")")
			if s.metrics != nil {
				s.metrics.ruleError(r.name)
			}
			if (r.onError == onErrorTempfail || ctx.closed) && !r.shadow && tempfail == nil {
				tempfail = r
			}
			continue
		}
		if res != tTrue {
			continue
		}
		sc := ctx.weight
		if r.score != nil {
			sc = *r.score
		}
		note := r.name + "=" + formatScore(sc)
		if len(ctx.notes) > 0 {
			note += " (" + strings.Join(ctx.notes, "; ") + ")"
		}
		hits = append(hits, inspect.Hit{Rule: r.name, Score: sc, Shadow: r.shadow, Classifier: r.classifier})
		if r.shadow {
			trace = append(trace, "shadow "+note)
			if s.metrics != nil {
				s.metrics.hit(r.name, "shadow")
			}
			continue
		}
		if s.metrics != nil {
			s.metrics.hit(r.name, "enforce")
		}
		trace = append(trace, note)
		matched = append(matched, r.name)
		score += sc
		if r.action == actAccept {
			act, actRule = actAccept, r
			break
		}
		if r.action > act {
			act, actRule, actTexts = r.action, r, ctx.listTexts
		}
		if act == actReject {
			break // nothing can make it harsher
		}
	}

	// This stage's own result goes back to the front end, which keeps
	// it for the later stages (inspect.Session.Keep); the totals are the
	// earlier stages' plus this one's.
	total := before.Score + score
	v := inspect.Verdict{Score: total, Rules: append(before.Rules, matched...), Trace: trace, Hits: hits,
		Result: inspect.StageResult{Score: score, Rules: matched, Allowlisted: act == actAccept}}

	if act == actAccept {
		v.Action, v.WouldBe, v.Reason = inspect.Accept, inspect.Accept, "allowlisted:"+actRule.name
		return v
	}
	switch {
	case act == actReject:
		v.Action, v.Reason, v.Reply = inspect.Reject, "rule:"+actRule.name, listReply(actRule.reply, actTexts, stage, inspect.Reject)
	case act == actTempfail:
		v.Action, v.Reason, v.Reply = inspect.Tempfail, "rule:"+actRule.name, listReply(actRule.reply, actTexts, stage, inspect.Tempfail)
	case s.thresholds.reject != nil && total >= *s.thresholds.reject:
		v.Action, v.Reason, v.Reply = inspect.Reject, "score", s.replies.reject
	case tempfail != nil:
		v.Action, v.Reason = inspect.Tempfail, "lookup_failed:"+tempfail.name
		v.Reply = smtp.Replyf(451, "4.4.3", "Temporary lookup failure, try again later")
	case s.thresholds.tempfail != nil && total >= *s.thresholds.tempfail:
		v.Action, v.Reason, v.Reply = inspect.Tempfail, "score", s.replies.tempfail
	case stage == inspect.StageData && (s.thresholds.tag != nil && total >= *s.thresholds.tag || s.taggedByRule(v.Rules)):
		v.Action, v.Reason = inspect.Tag, "score"
		if act == actTag || s.taggedByRule(v.Rules) {
			v.Reason = "rule"
		}
	}
	if act == actGreylist && v.Action < inspect.Tempfail {
		// The rules ask; the engine decides with the store whether this
		// is a first attempt (and then makes the verdict a 451).
		v.Greylist = true
		if v.Reason == "" {
			v.Reason = "rule:" + actRule.name
		}
	}
	if v.Action >= inspect.Tempfail {
		v.Reply = s.withRef(stage, v, f.Session.ID)
	}
	if stage == inspect.StageData {
		s.headers(&v)
	}
	v.WouldBe = v.Action
	if s.mode == "monitor" && v.Action != inspect.Accept {
		// Monitor mode: judged, logged, counted as would-have; the mail
		// goes through untouched.
		v.Action, v.Headers, v.SubjectPrefix = inspect.Accept, nil, ""
	}
	if s.mode == "monitor" && v.Greylist {
		// Greylisting writes the store and refuses: monitor mode does
		// neither, it only reports.
		v.Greylist = false
		v.Trace = append(v.Trace, "monitor: would greylist ("+v.Reason+")")
	}
	return v
}

// rcptMatched reports whether rule name matched any recipient the
// transaction accepted: data-stage meta rules may name rcpt-stage rules.
func rcptMatched(tx *inspect.Transaction, name string) bool {
	if tx == nil {
		return false
	}
	for i := range tx.Rcpts {
		if contains(tx.Rcpts[i].Result.Rules, name) {
			return true
		}
	}
	return false
}

func (s *Set) taggedByRule(names []string) bool {
	for _, n := range names {
		if r := s.find(n); r != nil && r.action == actTag {
			return true
		}
	}
	return false
}

func (s *Set) find(name string) *rule { return s.byName[name] }

// withRef makes the refusal's text carry the session ID, so an operator
// can find the full trace in the log when a sender complains.
func (s *Set) withRef(stage inspect.Stage, v inspect.Verdict, id string) smtp.Reply {
	r := v.WireReply(stage)
	r.Lines = append([]string(nil), r.Lines...)
	if len(r.Lines) == 0 {
		r.Lines = []string{""}
	}
	r.Lines[len(r.Lines)-1] += " (ref " + id + ")"
	return r
}

// headers adds SpamAssassin's X-Spam-* headers, which downstream filters
// already understand: on a tag, Flag, Score and Status "Yes"; otherwise,
// when configured, Status "No".
func (s *Set) headers(v *inspect.Verdict) {
	required := 0.0
	if s.thresholds.tag != nil {
		required = *s.thresholds.tag
	} else if s.thresholds.reject != nil {
		required = *s.thresholds.reject
	}
	status := func(yes string) string {
		return yes + ", score=" + formatScore(v.Score) + " required=" + strconv.FormatFloat(required, 'f', 1, 64) +
			" tests=" + strings.Join(v.Rules, ",")
	}
	switch {
	case v.Action == inspect.Tag:
		v.Headers = []inspect.HeaderField{
			{Name: "X-Spam-Flag", Value: "YES"},
			{Name: "X-Spam-Score", Value: formatScore(v.Score)},
			{Name: "X-Spam-Status", Value: status("Yes")},
		}
		v.SubjectPrefix = s.tag.subjectPrefix
	case v.Action == inspect.Accept && s.tag.cleanHeader:
		v.Headers = []inspect.HeaderField{{Name: "X-Spam-Status", Value: status("No")}}
	}
}

func formatScore(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) }

// listReply is a rule's refusal: its own reply, or the stage default
// naming what the DNS lists said (reason, and zone unless hidden), as
// postscreen's dnsbl_reply_map does.
func listReply(r smtp.Reply, texts []string, stage inspect.Stage, a inspect.Action) smtp.Reply {
	if r.Code != 0 || len(texts) == 0 {
		return r
	}
	d := inspect.DefaultReply(stage, a)
	d.Lines = []string{d.Lines[0] + "; " + strings.Join(texts, ", ")}
	return d
}
