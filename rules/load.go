package rules

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"moat/inspect"
	"moat/inspect/smtp"
)

// Lists tells the loader which DNS lists exist (package dnsbl's
// configuration, adapted by the wiring).
type Lists interface {
	ListKind(name string) (inspect.ListKind, bool)
}

// Options are what loading a rules file needs from the rest of moat.
type Options struct {
	// Lists validates dnsbl conditions; nil means no lists configured.
	Lists Lists
	// Mode is "enforce" (default) or "monitor": evaluate and log, never
	// refuse or tag.
	Mode string
	// Metrics receives rule hits and verdicts; nil for none. Shared by
	// every Set loaded over a process's life, so it survives reloads.
	Metrics *Metrics
	// RateLimits are the configured rate limits by name, with the stage
	// at which each is counted, for {rate_limit: NAME}.
	RateLimits map[string]inspect.Stage
	// Classifier: a classifier model is configured. Without it, optional
	// rules about the classifier facts are dropped.
	Classifier bool
}

// Error is one problem in a rules file.
type Error struct {
	File      string
	Line, Col int
	Rule      string // the rule's name, when the problem is inside a rule
	Msg       string
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s:%d:%d: ", e.File, e.Line, e.Col)
	if e.Rule != "" {
		fmt.Fprintf(&b, "rule %s: ", e.Rule)
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in a rules file, in file order.
type Errors []*Error

func (es Errors) Error() string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n")
}

// Load reads, validates and compiles the rules file at path.
func Load(path string, opts Options) (*Set, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("rules file %s: %w", path, err)
	}
	return Parse(path, data, opts)
}

// Parse validates and compiles a rules file's contents; name is used in
// errors and to resolve list files relative to it.
func Parse(name string, data []byte, opts Options) (*Set, error) {
	p := &parser{file: name, dir: filepath.Dir(name), opts: opts}
	set := p.parse(data)
	if len(p.errs) > 0 {
		sort.SliceStable(p.errs, func(i, j int) bool {
			if p.errs[i].Line != p.errs[j].Line {
				return p.errs[i].Line < p.errs[j].Line
			}
			return p.errs[i].Col < p.errs[j].Col
		})
		return nil, p.errs
	}
	if set.metrics != nil {
		set.metrics.initRules(set)
	}
	return set, nil
}

type parser struct {
	lits literals // the prefilter literals of every matches operator
	file string
	dir  string
	opts Options
	errs Errors
	rule string // the rule being parsed, for errors
}

func (p *parser) errf(n *yaml.Node, format string, args ...any) {
	if len(p.errs) >= 50 {
		return
	}
	line, col := 1, 1
	if n != nil {
		line, col = n.Line, n.Column
	}
	p.errs = append(p.errs, &Error{File: p.file, Line: line, Col: col, Rule: p.rule, Msg: fmt.Sprintf(format, args...)})
}

// mapping iterates a mapping node's key/value pairs, refusing anything
// else and keys not in known.
func (p *parser) mapping(n *yaml.Node, what string, known []string, fn func(k, v *yaml.Node)) {
	if n.Kind != yaml.MappingNode {
		p.errf(n, "%s must be a mapping", what)
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if known != nil && !slicesContains(known, k.Value) {
			p.errf(k, "unknown field %q in %s (known: %s)", k.Value, what, strings.Join(known, ", "))
			continue
		}
		fn(k, v)
	}
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func (p *parser) parse(data []byte) *Set {
	set := newSet(p.file, p.opts)
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			p.errf(nil, "empty rules file")
			return nil
		}
		line := 1
		if m := regexp.MustCompile(`line (\d+)`).FindStringSubmatch(err.Error()); m != nil {
			line, _ = strconv.Atoi(m[1])
		}
		p.errs = append(p.errs, &Error{File: p.file, Line: line, Col: 1, Msg: "YAML syntax: " + strings.TrimPrefix(err.Error(), "yaml: ")})
		return nil
	}
	root := doc.Content[0]
	var ruleNodes []*yaml.Node
	p.mapping(root, "the rules file", []string{"thresholds", "tag", "replies", "rules"}, func(k, v *yaml.Node) {
		switch k.Value {
		case "thresholds":
			p.mapping(v, "thresholds", []string{"tag", "tempfail", "reject"}, func(k, v *yaml.Node) {
				f := p.number(v, "thresholds."+k.Value)
				switch k.Value {
				case "tag":
					set.thresholds.tag = &f
				case "tempfail":
					set.thresholds.tempfail = &f
				case "reject":
					set.thresholds.reject = &f
				}
			})
		case "tag":
			p.mapping(v, "tag", []string{"subject_prefix", "clean_status_header"}, func(k, v *yaml.Node) {
				switch k.Value {
				case "subject_prefix":
					set.tag.subjectPrefix = p.str(v, "tag.subject_prefix")
				case "clean_status_header":
					set.tag.cleanHeader = p.boolean(v, "tag.clean_status_header")
				}
			})
		case "replies":
			p.mapping(v, "replies", []string{"reject", "tempfail"}, func(k, v *yaml.Node) {
				class := 5
				if k.Value == "tempfail" {
					class = 4
				}
				r := p.reply(v, class)
				if k.Value == "reject" {
					set.replies.reject = r
				} else {
					set.replies.tempfail = r
				}
			})
		case "rules":
			if v.Kind != yaml.SequenceNode {
				p.errf(v, "rules must be a list")
				return
			}
			ruleNodes = v.Content
		}
	})
	names := map[string]*yaml.Node{}
	var rules []*rule
	for _, n := range ruleNodes {
		r := p.parseRule(n)
		if r == nil {
			continue
		}
		if prev, dup := names[r.name]; dup {
			p.rule = r.name
			p.errf(n, "duplicate rule name (first defined at line %d)", prev.Line)
			continue
		}
		names[r.name] = n
		rules = append(rules, r)
	}
	p.rule = ""
	p.checkThresholds(set, root)
	p.link(set, rules, names)
	p.lits.build()
	set.lits = &p.lits
	return set
}

var ruleFields = []string{"name", "description", "stage", "when", "score", "action", "reply", "shadow", "on_error", "optional"}

var nameRe = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.-]{0,99}$`)

func (p *parser) parseRule(n *yaml.Node) *rule {
	r := &rule{line: n.Line, onError: onErrorSkip}
	p.rule = ""
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == "name" {
				r.name = n.Content[i+1].Value
			}
		}
	}
	if r.name == "" {
		p.errf(n, "a rule needs a name")
		return nil
	}
	p.rule = r.name
	if !nameRe.MatchString(r.name) {
		p.errf(n, "name must start with a letter and hold only letters, digits, _ . - (at most 100)")
	}
	var when, stageNode, actionNode *yaml.Node
	var optional bool
	p.mapping(n, "a rule", ruleFields, func(k, v *yaml.Node) {
		switch k.Value {
		case "description":
			r.description = p.str(v, "description")
		case "stage":
			stageNode = v
			s, ok := inspect.ParseStage(v.Value)
			if !ok {
				p.errf(v, "stage %q is not connect, helo, mail, rcpt or data", v.Value)
			}
			r.stage = s
		case "when":
			when = v
		case "score":
			f := p.number(v, "score")
			r.score = &f
		case "action":
			a, ok := parseAction(v.Value)
			if !ok {
				p.errf(v, "action %q is not reject, tempfail, greylist, tag or accept", v.Value)
			}
			r.action = a
			actionNode = v
		case "reply":
			r.replyNode = v
		case "shadow":
			r.shadow = p.boolean(v, "shadow")
		case "on_error":
			switch v.Value {
			case "skip":
				r.onError = onErrorSkip
			case "accept":
				r.onError = onErrorAccept
			case "tempfail":
				r.onError = onErrorTempfail
			default:
				p.errf(v, "on_error %q is not skip, accept or tempfail", v.Value)
			}
		case "optional":
			optional = p.boolean(v, "optional")
		}
	})
	if stageNode == nil {
		p.errf(n, "a rule needs a stage (connect, helo, mail, rcpt or data)")
		return nil
	}
	if when == nil {
		p.errf(n, "a rule needs a condition (when)")
		return nil
	}
	if r.action == actGreylist && r.stage != inspect.StageRcpt && r.stage != inspect.StageData && r.stage != 0 {
		// A greylist key needs the sender and a recipient.
		p.errf(actionNode, "action greylist needs stage rcpt or data, not %s", r.stage)
	}
	if r.replyNode != nil {
		switch r.action {
		case actReject:
			r.reply = p.reply(r.replyNode, 5)
		case actTempfail:
			r.reply = p.reply(r.replyNode, 4)
		default:
			p.errf(r.replyNode, "reply needs action reject or tempfail")
		}
	}
	if r.stage == 0 {
		return nil
	}
	c := &compiler{p: p, stage: r.stage, optional: optional}
	r.cond = c.cond(when)
	r.deps, r.depth, r.rdns, r.rcpts, r.classifier = c.deps, c.depth, c.rdns, c.rcpts, c.classifier
	if c.missing {
		return nil // optional rule naming a list or a classifier that is not configured
	}
	if r.score == nil && r.action == actNone && !c.hasList {
		// A DNS list condition scores the lists' weights by default.
		p.errf(n, "a rule needs a score, an action, or both")
	}
	if r.cond == nil {
		return nil
	}
	return r
}

func (p *parser) checkThresholds(s *Set, root *yaml.Node) {
	t := s.thresholds
	if t.tag != nil && t.reject != nil && *t.tag >= *t.reject {
		p.errf(root, "thresholds: tag (%g) must be below reject (%g)", *t.tag, *t.reject)
	}
	if t.tempfail != nil && t.reject != nil && *t.tempfail >= *t.reject {
		p.errf(root, "thresholds: tempfail (%g) must be below reject (%g)", *t.tempfail, *t.reject)
	}
}

// link checks meta references and orders each stage's rules so that a
// meta rule runs after the rules it names; a cycle is an error.
func (p *parser) link(s *Set, rules []*rule, names map[string]*yaml.Node) {
	byName := map[string]*rule{}
	for _, r := range rules {
		byName[r.name] = r
	}
	for _, r := range rules {
		p.rule = r.name
		for _, d := range r.deps {
			dep, ok := byName[d]
			if !ok {
				p.errf(names[r.name], "meta condition names unknown rule %q", d)
				continue
			}
			if dep.stage > r.stage {
				p.errf(names[r.name], "meta condition names rule %q of the later %s stage", d, dep.stage)
			}
		}
	}
	p.rule = ""
	// Depth-first topological order within the file order.
	const (
		unvisited = iota
		visiting
		done
	)
	state := map[string]int{}
	var order []*rule
	var visit func(r *rule, path []string) bool
	visit = func(r *rule, path []string) bool {
		switch state[r.name] {
		case done:
			return true
		case visiting:
			p.rule = r.name
			p.errf(names[r.name], "meta rules form a cycle: %s", strings.Join(append(path, r.name), " -> "))
			return false
		}
		state[r.name] = visiting
		for _, d := range r.deps {
			if dep, ok := byName[d]; ok && !visit(dep, append(path, r.name)) {
				return false
			}
		}
		state[r.name] = done
		order = append(order, r)
		return true
	}
	for _, r := range rules {
		if !visit(r, nil) {
			break
		}
	}
	s.byName = byName
	for _, r := range order {
		s.stages[r.stage] = append(s.stages[r.stage], r)
		n := &s.needs[r.stage]
		n.Depth = max(n.Depth, r.depth)
		n.RDNS = n.RDNS || r.rdns
		n.Recipients = n.Recipients || r.rcpts
	}
	p.rule = ""
}

func (p *parser) number(n *yaml.Node, what string) float64 {
	f, err := strconv.ParseFloat(n.Value, 64)
	if n.Kind != yaml.ScalarNode || err != nil {
		p.errf(n, "%s must be a number", what)
	}
	return f
}

func (p *parser) str(n *yaml.Node, what string) string {
	if n.Kind != yaml.ScalarNode {
		p.errf(n, "%s must be a string", what)
	}
	return n.Value
}

func (p *parser) boolean(n *yaml.Node, what string) bool {
	var b bool
	if n.Kind != yaml.ScalarNode || n.Decode(&b) != nil {
		p.errf(n, "%s must be true or false", what)
	}
	return b
}

// reply parses "550 5.7.1 text" and checks its class.
func (p *parser) reply(n *yaml.Node, class int) smtp.Reply {
	r, err := smtp.ParseReply(p.str(n, "reply"))
	if err != nil || len(r.Lines) != 1 {
		p.errf(n, "reply %q is not like \"550 5.7.1 text\"", n.Value)
		return smtp.Reply{}
	}
	if r.Class() != class {
		p.errf(n, "reply %q must be a %dxx reply here", n.Value, class)
	}
	return r
}

// compiler turns a condition node into a cond, recording what it needs.
type compiler struct {
	p        *parser
	stage    inspect.Stage
	optional bool
	deps     []string
	depth    inspect.Depth
	rdns     bool
	rcpts    bool // reads the recipients accepted so far
	missing  bool
	hasList  bool
	// classifier: the condition reads a classifier fact.
	classifier bool
}

func (c *compiler) cond(n *yaml.Node) cond {
	if n.Kind != yaml.MappingNode || len(n.Content) == 0 {
		c.p.errf(n, "a condition must be a mapping like {fact: value}")
		return nil
	}
	var parts allCond
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if x := c.term(k, v); x != nil {
			parts = append(parts, x)
		}
	}
	if len(parts) == 1 {
		return parts[0]
	}
	if len(parts) == 0 {
		return nil
	}
	return parts
}

func (c *compiler) list(v *yaml.Node, what string) []cond {
	if v.Kind != yaml.SequenceNode || len(v.Content) == 0 {
		c.p.errf(v, "%s takes a non-empty list of conditions", what)
		return nil
	}
	var out []cond
	for _, item := range v.Content {
		if x := c.cond(item); x != nil {
			out = append(out, x)
		}
	}
	return out
}

func (c *compiler) term(k, v *yaml.Node) cond {
	switch k.Value {
	case "all":
		return allCond(c.list(v, "all"))
	case "any":
		return anyCond(c.list(v, "any"))
	case "not":
		x := c.cond(v)
		if x == nil {
			return nil
		}
		return notCond{x}
	case "rule":
		c.deps = append(c.deps, v.Value)
		return ruleCond{v.Value}
	case "dnsbl":
		return c.dnsbl(v)
	case "header":
		return c.header(v)
	case "dkim":
		return c.dkim(v)
	case "rate_limit":
		return c.rateLimit(v)
	}
	f, ok := lookupFact(k.Value)
	if !ok {
		c.p.errf(k, "unknown fact %q", k.Value)
		return nil
	}
	if f.stage > c.stage {
		c.p.errf(k, "fact %q is known only from the %s stage on, and this rule runs at %s", k.Value, f.stage, c.stage)
		return nil
	}
	if k.Value == "client_rdns" || k.Value == "client_fcrdns" || k.Value == "helo_matches_rdns" {
		c.rdns = true
	}
	if k.Value == "rcpt_count" {
		c.rcpts = true
	}
	if strings.HasPrefix(k.Value, "classifier") {
		c.classifier = true
	}
	if c.classifier && c.optional && !c.p.opts.Classifier {
		// An optional rule about the classifier is dropped when no
		// classifier is configured: it could never fire, and its text
		// depth would make every message be decoded for nothing.
		c.missing = true
	}
	c.depth = max(c.depth, f.depth)
	return c.ops(k.Value, f, v)
}

// header: {name: X-Mailer, matches: ...}
func (c *compiler) header(v *yaml.Node) cond {
	if c.stage < inspect.StageData {
		c.p.errf(v, "header conditions need the data stage, and this rule runs at %s", c.stage)
		return nil
	}
	if v.Kind != yaml.MappingNode {
		c.p.errf(v, "header takes {name: Header-Name, <operator>: value}")
		return nil
	}
	var name string
	ops := &yaml.Node{Kind: yaml.MappingNode, Line: v.Line, Column: v.Column}
	for i := 0; i+1 < len(v.Content); i += 2 {
		if v.Content[i].Value == "name" {
			name = v.Content[i+1].Value
			continue
		}
		ops.Content = append(ops.Content, v.Content[i], v.Content[i+1])
	}
	if name == "" || strings.ContainsAny(name, ": \t") {
		c.p.errf(v, "header needs a name: (a header field name)")
		return nil
	}
	if len(ops.Content) == 0 {
		ops.Content = []*yaml.Node{{Kind: yaml.ScalarNode, Value: "exists"}, {Kind: yaml.ScalarNode, Value: "true", Tag: "!!bool"}}
	}
	c.depth = max(c.depth, inspect.DepthHeaders)
	return c.ops("header "+name, headerFact(name), ops)
}

var stringOps = []string{"equals", "contains", "starts_with", "ends_with", "matches", "in", "exists"}
var numberOps = []string{"eq", "gt", "ge", "lt", "le", "exists"}
var ipOps = []string{"equals", "cidr", "in", "exists"}

// ops compiles the operators applied to one fact. A scalar is shorthand
// for equals (eq for numbers); several operators must all hold.
func (c *compiler) ops(name string, f fact, v *yaml.Node) cond {
	if v.Kind == yaml.ScalarNode {
		op := "equals"
		if f.kind == kNumber {
			op = "eq"
		}
		return c.op(name, f, op, v)
	}
	if f.kind == kBool {
		c.p.errf(v, "%s is true or false", name)
		return nil
	}
	var known []string
	switch f.kind {
	case kString:
		known = stringOps
	case kNumber:
		known = numberOps
	case kIP:
		known = ipOps
	}
	var parts allCond
	c.p.mapping(v, "the operators of "+name, known, func(k, val *yaml.Node) {
		if x := c.op(name, f, k.Value, val); x != nil {
			parts = append(parts, x)
		}
	})
	if len(parts) == 1 {
		return parts[0]
	}
	if len(parts) == 0 {
		return nil
	}
	return parts
}

func (c *compiler) op(name string, f fact, op string, v *yaml.Node) cond {
	if op == "exists" {
		b := c.p.boolean(v, name+" exists")
		switch f.kind {
		case kString:
			return strOp{fact: f, exists: &b}
		case kNumber:
			return numOp{fact: f, exists: &b}
		case kIP:
			return ipOp{fact: f, exists: &b}
		}
	}
	switch f.kind {
	case kBool:
		return boolOp{fact: f, want: c.p.boolean(v, name)}
	case kNumber:
		want := c.p.number(v, name+" "+op)
		cmp := map[string]func(float64) bool{
			"eq": func(x float64) bool { return x == want },
			"gt": func(x float64) bool { return x > want },
			"ge": func(x float64) bool { return x >= want },
			"lt": func(x float64) bool { return x < want },
			"le": func(x float64) bool { return x <= want },
		}[op]
		return numOp{fact: f, test: cmp}
	case kIP:
		var prefixes []netip.Prefix
		for _, s := range c.values(v, name+" "+op) {
			pf, err := parsePrefix(s.Value)
			if err != nil {
				c.p.errf(s, "%q is not an IP address or network", s.Value)
				continue
			}
			prefixes = append(prefixes, pf)
		}
		return ipOp{fact: f, test: opCIDR(prefixes)}
	}
	switch op {
	case "equals":
		return strOp{fact: f, test: opEquals(c.p.str(v, name+" equals"))}
	case "contains":
		return strOp{fact: f, test: opContains(c.p.str(v, name+" contains"))}
	case "starts_with":
		return strOp{fact: f, test: opStartsWith(c.p.str(v, name+" starts_with"))}
	case "ends_with":
		return strOp{fact: f, test: opEndsWith(c.p.str(v, name+" ends_with"))}
	case "matches":
		re, err := regexp.Compile(c.p.str(v, name+" matches"))
		if err != nil {
			c.p.errf(v, "bad regular expression: %v", strings.TrimPrefix(err.Error(), "error parsing regexp: "))
			return nil
		}
		m := newMatcher(re, &c.p.lits)
		return strOp{fact: f, re: &m}
	case "in":
		set := map[string]bool{}
		for _, s := range c.values(v, name+" in") {
			set[strings.ToLower(s.Value)] = true
		}
		return strOp{fact: f, test: opIn(set)}
	}
	return nil
}

// values reads a scalar, a list of scalars, or {file: path} with one value
// per line ('#' starts a comment), for in and cidr.
func (c *compiler) values(v *yaml.Node, what string) []*yaml.Node {
	switch v.Kind {
	case yaml.ScalarNode:
		return []*yaml.Node{v}
	case yaml.SequenceNode:
		for _, item := range v.Content {
			if item.Kind != yaml.ScalarNode {
				c.p.errf(item, "%s takes plain values", what)
				return nil
			}
		}
		return v.Content
	case yaml.MappingNode:
		if len(v.Content) == 2 && v.Content[0].Value == "file" {
			return c.file(v.Content[1])
		}
	}
	c.p.errf(v, "%s takes a value, a list of values, or {file: path}", what)
	return nil
}

// file reads a list file, relative to the rules file.
func (c *compiler) file(n *yaml.Node) []*yaml.Node {
	path := n.Value
	if !filepath.IsAbs(path) {
		path = filepath.Join(c.p.dir, path)
	}
	f, err := os.Open(path)
	if err != nil {
		c.p.errf(n, "list file: %v", err)
		return nil
	}
	defer f.Close()
	var out []*yaml.Node
	sc := bufio.NewScanner(f)
	line := 0
	for sc.Scan() {
		line++
		s := sc.Text()
		if i := strings.IndexByte(s, '#'); i >= 0 {
			s = s[:i]
		}
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, &yaml.Node{Kind: yaml.ScalarNode, Value: s, Line: n.Line, Column: n.Column})
		}
	}
	if err := sc.Err(); err != nil {
		c.p.errf(n, "list file %s: %v", path, err)
	}
	return out
}

func parsePrefix(s string) (netip.Prefix, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	return p.Masked(), err
}

var listOns = []string{"client_ip", "helo", "mail_from", "from", "url"}

// dnsbl: NAME, or {list: NAME, reason: R, weight: {ge: 4}, on: helo}.
func (c *compiler) dnsbl(v *yaml.Node) cond {
	lc := listCond{}
	var listNode *yaml.Node
	if v.Kind == yaml.ScalarNode {
		lc.list, listNode = v.Value, v
	} else {
		c.p.mapping(v, "dnsbl", []string{"list", "reason", "weight", "on"}, func(k, val *yaml.Node) {
			switch k.Value {
			case "list":
				lc.list, listNode = val.Value, val
			case "reason":
				lc.reason = c.p.str(val, "dnsbl reason")
			case "on":
				if !slicesContains(listOns, val.Value) {
					c.p.errf(val, "dnsbl on %q is not one of %s", val.Value, strings.Join(listOns, ", "))
				}
				lc.on = val.Value
			case "weight":
				w := c.ops("dnsbl weight", fact{kind: kNumber}, val)
				if n, ok := w.(numOp); ok {
					lc.weight = n.test
				} else if w != nil {
					c.p.errf(val, "dnsbl weight takes one comparison, like {ge: 4}")
				}
			}
		})
	}
	if listNode == nil {
		c.p.errf(v, "dnsbl needs a list name")
		return nil
	}
	var kind inspect.ListKind
	ok := false
	if c.p.opts.Lists != nil {
		kind, ok = c.p.opts.Lists.ListKind(lc.list)
	}
	if !ok {
		if c.optional {
			c.missing = true
			return nil
		}
		c.p.errf(listNode, "unknown DNS list %q (configure it under dnsbl.lists)", lc.list)
		return nil
	}
	lc.kind = kind
	c.hasList = true
	if lc.on == "" {
		switch {
		case kind == inspect.KindIP:
			lc.on = "client_ip"
		case kind == inspect.KindURI:
			lc.on = "url"
		case c.stage == inspect.StageHelo:
			lc.on = "helo"
		case c.stage == inspect.StageMail || c.stage == inspect.StageRcpt:
			lc.on = "mail_from"
		default:
			lc.on = "from"
		}
	}
	need := map[string]inspect.Stage{"client_ip": inspect.StageConnect, "helo": inspect.StageHelo,
		"mail_from": inspect.StageMail, "from": inspect.StageData, "url": inspect.StageData}[lc.on]
	if need > c.stage {
		c.p.errf(v, "dnsbl on %s is known only from the %s stage on, and this rule runs at %s", lc.on, need, c.stage)
		return nil
	}
	if (kind == inspect.KindIP) != (lc.on == "client_ip") || kind == inspect.KindURI && lc.on != "url" {
		c.p.errf(v, "list %q cannot be queried with %s", lc.list, lc.on)
		return nil
	}
	if lc.on == "from" || lc.on == "url" {
		c.depth = max(c.depth, map[string]inspect.Depth{"from": inspect.DepthHeaders, "url": inspect.DepthText}[lc.on])
	}
	return lc
}
