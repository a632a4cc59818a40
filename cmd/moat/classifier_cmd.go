package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"moat/inspect"
	"moat/inspect/classifier"
	"moat/internal/state"
	"moat/rules"
)

// ClassifierConfig is the classifier section: the statistical classifier
// whose model moat learn trains in the state store.
type ClassifierConfig struct {
	// Enabled turns the classifier facts and the built-in CLASSIFIER_*
	// rules on. It needs a state store, where the model lives.
	Enabled bool `yaml:"enabled"`
	// Refresh is how often a running moat looks for a newer model in
	// the store (one small read); default 30s.
	Refresh time.Duration `yaml:"refresh"`
	// Autolearn teaches the model from confident verdicts; off by
	// default.
	Autolearn AutolearnConfig `yaml:"autolearn"`
}

// AutolearnConfig is classifier.autolearn.
type AutolearnConfig struct {
	Enabled                    bool `yaml:"enabled"`
	classifier.AutolearnConfig `yaml:",inline"`
}

func (c *ClassifierConfig) defaults() {
	if c.Refresh == 0 {
		c.Refresh = 30 * time.Second
	}
	c.Autolearn.Defaults()
}

func (c *ClassifierConfig) validate() error {
	a := c.Autolearn
	switch {
	case c.Refresh < time.Second || c.Refresh > 24*time.Hour:
		return fmt.Errorf("classifier.refresh: %v must be from 1s to 24h", c.Refresh)
	case a.HamScore >= a.SpamScore:
		return fmt.Errorf("classifier.autolearn: ham_score %v must be below spam_score %v", a.HamScore, a.SpamScore)
	case a.MaxRatio < 1:
		return fmt.Errorf("classifier.autolearn.max_ratio: %v must be at least 1", a.MaxRatio)
	case a.Flush < time.Second || a.Flush > 24*time.Hour:
		return fmt.Errorf("classifier.autolearn.flush: %v must be from 1s to 24h", a.Flush)
	}
	return nil
}

// liveClassifier loads the model from st and keeps it fresh until ctx
// ends; nil when the classifier is off or there is no store.
func liveClassifier(ctx context.Context, cfg *Config, st state.Store, log interface {
	Warn(string, ...any)
	Info(string, ...any)
}) *classifier.Live {
	if !cfg.Classifier.Enabled {
		return nil
	}
	if st == nil {
		log.Warn("classifier.enabled needs a state store (the state section): the classifier facts are unknown")
		return nil
	}
	lv := &classifier.Live{}
	if err := lv.Refresh(ctx, st); err != nil {
		log.Warn("classifier model not loaded; retrying every classifier.refresh", "err", err)
	} else if m := lv.Model(); m.Ready() {
		log.Info("classifier model loaded", "model", m.String())
	} else {
		log.Warn("classifier model not trained enough yet: its facts stay unknown until moat learn gave it 200 spam and 200 ham", "model", m.String())
	}
	return lv
}

// registerClassifierMetrics exports the model in force: how many spam and
// ham messages it learned (0 before one is loaded, or with the
// classifier off). The judgements themselves are the CLASSIFIER_* rules'
// hits (moat_rules_hits_total).
func registerClassifierMetrics(reg prometheus.Registerer, live func() *classifier.Live) {
	for _, class := range []string{"spam", "ham"} {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "moat_classifier_model_messages",
			Help:        "Messages the classifier model in force has learned, by class; it judges from 200 of each.",
			ConstLabels: prometheus.Labels{"class": class},
		}, func() float64 {
			m := live().Model()
			if m == nil {
				return 0
			}
			s, h := m.Learned()
			if class == "spam" {
				return float64(s)
			}
			return float64(h)
		}))
	}
}

const learnUsage = `Usage:
  moat learn [--config FILE] [--http ADDR] --spam PATH... --ham PATH...
  moat learn [--config FILE] [--http ADDR] --forget PATH...

Teaches the statistical classifier the site's own mail: every message
under the PATHs after --spam as spam, after --ham as ham (both may be
given, and repeated). PATH is a message file (.eml), an mbox file, a
Maildir folder or a directory of message files. --forget takes messages
learned by mistake back out (moat knows which class they were learned as).
A message already learned as the class asked is not counted again; one
learned as the other class is moved.

The model lives in the configuration's state store, so every moat on the
same Redis judges with it (they reload it within classifier.refresh).
With the embedded store, whose file only the running moat may open,
moat learn goes through that moat's HTTP listener (http.listen, or
--http). The classifier judges once it has learned 200 spam and 200 ham.

Exits 0 on success, 1 on failure, 2 for a usage error.
`

// learnArgs are moat learn's arguments: lists of paths after --spam,
// --ham and --forget, in any order.
type learnArgs struct {
	config, http   string
	spam, ham, fgt []string
}

func parseLearnArgs(args []string) (learnArgs, error) {
	var a learnArgs
	var cur *[]string
	for i := 0; i < len(args); i++ {
		arg := args[i]
		name, val, hasVal := strings.Cut(strings.TrimLeft(arg, "-"), "=")
		if !strings.HasPrefix(arg, "-") {
			if cur == nil {
				return a, fmt.Errorf("%s: say --spam, --ham or --forget before the paths", arg)
			}
			*cur = append(*cur, arg)
			continue
		}
		switch name {
		case "spam":
			cur = &a.spam
		case "ham":
			cur = &a.ham
		case "forget":
			cur = &a.fgt
		case "config", "http":
			if !hasVal {
				if i+1 >= len(args) {
					return a, fmt.Errorf("--%s needs a value", name)
				}
				i++
				val = args[i]
			}
			if name == "config" {
				a.config = val
			} else {
				a.http = val
			}
			continue
		default:
			return a, fmt.Errorf("unknown flag %s", arg)
		}
		if hasVal {
			*cur = append(*cur, val)
		}
	}
	switch {
	case len(a.fgt) > 0 && len(a.spam)+len(a.ham) > 0:
		return a, errors.New("--forget goes alone, without --spam or --ham")
	case len(a.fgt)+len(a.spam)+len(a.ham) == 0:
		return a, errors.New("nothing to learn: give --spam PATH..., --ham PATH... or --forget PATH...")
	}
	return a, nil
}

func cmdLearn(args []string, stdout, stderr io.Writer) int {
	for _, a := range args {
		if isHelp(a) {
			fmt.Fprint(stdout, learnUsage)
			return 0
		}
	}
	la, err := parseLearnArgs(args)
	if err != nil {
		fmt.Fprintf(stderr, "moat learn: %v\n\n%s", err, learnUsage)
		return exitUsage
	}
	cfg, err := loadConfig(la.config)
	if err != nil {
		return exitCode(stderr, err)
	}
	if cfg.State == nil && la.http == "" {
		fmt.Fprintln(stderr, "moat learn: the configuration has no state section: the model lives in the state store")
		return exitUsage
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	t := newLearnTally(stderr)
	defer t.stopBar()
	var do func(class string, paths []string) error
	addr := la.http
	if addr == "" && cfg.State.Backend == state.BackendEmbedded {
		// Only the running moat may open the embedded store's file;
		// ask it when it runs, open the file when it does not.
		if st, err := state.New(*cfg.State, state.Deps{}); err == nil {
			do = learnDirect(ctx, st, t)
			defer st.Close()
		} else if cfg.HTTP.Listen != "off" {
			addr = cfg.HTTP.Listen
		} else {
			return exitCode(stderr, fmt.Errorf("moat learn: %v (is moat serve running? its http.listen is off)", err))
		}
	} else if addr == "" {
		st, err := state.New(*cfg.State, state.Deps{})
		if err != nil {
			return exitCode(stderr, fmt.Errorf("moat learn: %v", err))
		}
		defer st.Close()
		do = learnDirect(ctx, st, t)
	}
	if do == nil {
		do = learnHTTP(ctx, addr, t)
	}
	for _, job := range []struct {
		class string
		paths []string
	}{{"spam", la.spam}, {"ham", la.ham}, {"forget", la.fgt}} {
		if len(job.paths) == 0 {
			continue
		}
		if err := do(job.class, job.paths); err != nil {
			t.stopBar()
			t.print(stdout)
			return exitCode(stderr, fmt.Errorf("moat learn: %v", err))
		}
	}
	t.stopBar()
	t.print(stdout)
	return 0
}

// learnTally counts outcomes and draws progress on a terminal.
type learnTally struct {
	counts map[string]int
	n      atomic.Int64
	w      io.Writer
	done   chan struct{}
	spam   int
	ham    int
}

func newLearnTally(w io.Writer) *learnTally {
	t := &learnTally{counts: map[string]int{}, w: w}
	if isTerminal(w) {
		t.done = make(chan struct{})
		go func() {
			tick := time.NewTicker(250 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-t.done:
					fmt.Fprint(w, "\r\033[K")
					return
				case <-tick.C:
					fmt.Fprintf(w, "\r\033[Kmoat learn: %d messages", t.n.Load())
				}
			}
		}()
	}
	return t
}

func (t *learnTally) add(class string, o classifier.Outcome) {
	t.counts[class+" "+string(o)]++
}

func (t *learnTally) stopBar() {
	if t.done != nil {
		close(t.done)
		t.done = nil
	}
}

func (t *learnTally) print(w io.Writer) {
	for _, class := range []string{"spam", "ham", "forget"} {
		var parts []string
		for _, o := range []classifier.Outcome{classifier.Learned, classifier.Relearned, classifier.Already, classifier.Forgotten, classifier.NotLearned, "unreadable"} {
			if n := t.counts[class+" "+string(o)]; n > 0 {
				parts = append(parts, fmt.Sprintf("%d %s", n, strings.ReplaceAll(string(o), "_", " ")))
			}
		}
		if len(parts) > 0 {
			fmt.Fprintf(w, "%s: %s\n", class, strings.Join(parts, ", "))
		}
	}
	if t.spam+t.ham > 0 {
		fmt.Fprintf(w, "model: %d spam, %d ham learned", t.spam, t.ham)
		if t.spam < classifier.MinLearned || t.ham < classifier.MinLearned {
			fmt.Fprintf(w, " (the classifier judges from %d of each)", classifier.MinLearned)
		}
		fmt.Fprintln(w)
	}
}

// learnDoc parses a message as the engine does for the classifier.
func learnDoc(msg []byte) *classifier.Doc {
	c := inspect.ParseContent(bytes.NewReader(msg), int64(len(msg)), inspect.DepthText, inspect.DefaultContentLimits())
	return inspect.ClassifierDoc(c)
}

// learnDirect learns into the store itself, under the model's lock.
func learnDirect(ctx context.Context, st state.Store, t *learnTally) func(string, []string) error {
	return func(class string, paths []string) error {
		l, err := classifier.Begin(ctx, st, classifier.DefaultBits)
		if err != nil {
			return err
		}
		err = rules.ReadCorpus(paths, func(name string, msg []byte) error {
			o, err := learnOne(ctx, l, class, learnDoc(msg))
			if err != nil {
				return err
			}
			t.add(class, o)
			t.n.Add(1)
			return nil
		})
		if err != nil {
			l.Abort(ctx)
			return err
		}
		if err := l.Commit(ctx); err != nil {
			return err
		}
		t.spam, t.ham = l.Model().Learned()
		return nil
	}
}

func learnOne(ctx context.Context, l *classifier.Learner, class string, d *classifier.Doc) (classifier.Outcome, error) {
	if class == "forget" {
		return l.Forget(ctx, d)
	}
	return l.Learn(ctx, d, class == "spam")
}

// The HTTP form, for the embedded store of a running moat: one POST per
// class with the messages framed as "LENGTH NAME\n" and the bytes; the
// answer is one JSON line per message and a last one with the model's
// counts.
type learnLine struct {
	Outcome string `json:"outcome,omitempty"`
	Error   string `json:"error,omitempty"`
	Spam    *int   `json:"spam,omitempty"`
	Ham     *int   `json:"ham,omitempty"`
}

func learnHTTP(ctx context.Context, addr string, t *learnTally) func(string, []string) error {
	return func(class string, paths []string) error {
		pr, pw := io.Pipe()
		go func() {
			bw := bufio.NewWriterSize(pw, 64<<10)
			err := rules.ReadCorpus(paths, func(name string, msg []byte) error {
				fmt.Fprintf(bw, "%d %s\n", len(msg), strings.ReplaceAll(name, "\n", " "))
				_, err := bw.Write(msg)
				t.n.Add(1)
				return err
			})
			if err == nil {
				err = bw.Flush()
			}
			pw.CloseWithError(err)
		}()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/classifier/learn?"+url.Values{"class": {class}}.Encode(), pr)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return fmt.Errorf("is moat serve running with http.listen %s? %v", addr, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			return fmt.Errorf("moat serve at %s: %s: %s", addr, resp.Status, strings.TrimSpace(string(b)))
		}
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			var l learnLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				return fmt.Errorf("moat serve at %s: bad answer %q", addr, sc.Text())
			}
			switch {
			case l.Error != "":
				return errors.New(l.Error)
			case l.Spam != nil:
				t.spam, t.ham = *l.Spam, *l.Ham
			default:
				t.add(class, classifier.Outcome(l.Outcome))
			}
		}
		return sc.Err()
	}
}

// handleLearn serves moat learn for a moat whose store only it may open.
// The model in force is replaced by the learned one as soon as the run
// is committed.
func handleLearn(mux *http.ServeMux, st state.Store, live *classifier.Live) {
	mux.HandleFunc("/classifier/learn", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST", http.StatusMethodNotAllowed)
			return
		}
		class := r.URL.Query().Get("class")
		if class != "spam" && class != "ham" && class != "forget" {
			http.Error(w, "want ?class=spam|ham|forget", http.StatusBadRequest)
			return
		}
		if st == nil {
			http.Error(w, "no state store configured (the state section of the configuration)", http.StatusNotFound)
			return
		}
		ctx := r.Context()
		l, err := classifier.Begin(ctx, st, classifier.DefaultBits)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		// The answer is written once the whole request is read: an
		// HTTP/1 server may close the request body as soon as it starts
		// answering (a long run cut short at the first 4 KB of answer).
		var answer []learnLine
		defer func() {
			enc := json.NewEncoder(w)
			for _, a := range answer {
				enc.Encode(a)
			}
		}()
		br := bufio.NewReaderSize(r.Body, 64<<10)
		fail := func(err error) {
			l.Abort(ctx)
			answer = append(answer, learnLine{Error: err.Error()})
		}
		for {
			head, err := br.ReadString('\n')
			if err == io.EOF && head == "" {
				break
			}
			if err != nil {
				fail(fmt.Errorf("reading the messages: %v", err))
				return
			}
			size, name, _ := strings.Cut(strings.TrimSuffix(head, "\n"), " ")
			n, err := strconv.Atoi(size)
			if err != nil || n < 0 || n > 64<<20 {
				fail(fmt.Errorf("bad message frame %q", head))
				return
			}
			msg := make([]byte, n)
			if _, err := io.ReadFull(br, msg); err != nil {
				fail(fmt.Errorf("reading %s: %v", name, err))
				return
			}
			o, err := learnOne(ctx, l, class, learnDoc(msg))
			if err != nil {
				fail(err)
				return
			}
			answer = append(answer, learnLine{Outcome: string(o)})
		}
		if err := l.Commit(ctx); err != nil {
			answer = append(answer, learnLine{Error: err.Error()})
			return
		}
		if live != nil {
			live.Refresh(ctx, st)
		}
		s, h := l.Model().Learned()
		answer = append(answer, learnLine{Spam: &s, Ham: &h})
	})
}

// configStateSpec names the configuration's state store the way
// --state does: its directory, or redis://HOST:PORT/DB; "" without one.
func configStateSpec(cfg *Config) string {
	switch {
	case cfg.State == nil:
		return ""
	case cfg.State.Backend == state.BackendRedis:
		return fmt.Sprintf("redis://%s/%d", cfg.State.Redis.Address, cfg.State.Redis.DB)
	}
	return cfg.State.Dir
}

// toolClassifier is the model the offline tools (rules test and
// compare) judge with: the one in --state, else the configuration's store
// when classifier.enabled; read once, never written. nil when there is
// none to read.
func toolClassifier(cfg *Config, spec string) (*classifier.Live, error) {
	if spec == "" && cfg.Classifier.Enabled {
		spec = configStateSpec(cfg)
	}
	if spec == "" {
		return nil, nil
	}
	st, closeStore, err := openReadStore(spec)
	if err != nil {
		return nil, err
	}
	defer closeStore()
	m, ver, err := classifier.Load(context.Background(), st, classifier.DefaultBits)
	if err != nil {
		return nil, fmt.Errorf("the classifier model in %s: %v", spec, err)
	}
	lv := &classifier.Live{}
	lv.Set(m, ver)
	return lv, nil
}

const explainUsage = `Usage:
  moat explain [--config FILE] [--state DIR|redis://HOST:PORT[/DB]] [--tokens N] MESSAGE.eml

Shows why moat judges a message as it does: the classifier's spam
probability and its strongest tokens both ways (with how many learned
spam and ham messages each was seen in), then the rules that match and
the action. The model is read from --state (a state directory or a Redis;
default the configuration's state store) and never changed: an embedded
store is read from a copy of its file.
`

func cmdExplain(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("moat explain", explainUsage, stderr)
	configPath := fs.String("config", "", "configuration `FILE` (rules, state store)")
	stateSpec := fs.String("state", "", "the model's store: a state `DIR` or redis://HOST:PORT[/DB] (default: the configuration's)")
	ntok := fs.Int("tokens", 10, "show the `N` strongest tokens each way")
	if ok, code := parseFlags(fs, args, stdout); !ok {
		return code
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return exitUsage
	}
	cfg, err := loadConfig(*configPath)
	if err != nil {
		return exitCode(stderr, err)
	}
	spec := *stateSpec
	if spec == "" {
		spec = configStateSpec(cfg)
	}
	var msg []byte
	if err := rules.ReadCorpus([]string{fs.Arg(0)}, func(_ string, m []byte) error {
		if msg == nil {
			msg = m
		}
		return nil
	}); err != nil || msg == nil {
		return exitCode(stderr, fmt.Errorf("moat explain: %s: %v", fs.Arg(0), err))
	}
	var model *classifier.Model
	if spec != "" {
		st, closeStore, err := openReadStore(spec)
		if err != nil {
			return exitCode(stderr, err)
		}
		model, _, err = classifier.Load(context.Background(), st, classifier.DefaultBits)
		closeStore()
		if err != nil {
			return exitCode(stderr, fmt.Errorf("moat explain: %v", err))
		}
	}
	tw := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
	doc := learnDoc(msg)
	live := &classifier.Live{}
	switch {
	case model == nil:
		fmt.Fprintln(stdout, "classifier: no model (no state store; give --state)")
	case !model.Ready():
		fmt.Fprintf(stdout, "classifier: not trained enough (%s; it judges from %d of each)\n", model, classifier.MinLearned)
	default:
		live.Set(model, "")
		r, spam, ham, _ := model.Explain(doc, *ntok)
		fmt.Fprintf(stdout, "classifier: spam probability %.4f, confidence %.2f (%d telling tokens; model: %s)\n", r.Prob, r.Confidence, r.Tokens, model)
		for _, side := range []struct {
			title string
			ts    []classifier.TokenScore
		}{{"towards spam", spam}, {"towards ham", ham}} {
			fmt.Fprintf(tw, "\n%s:\nTOKEN\tP(SPAM)\tIN SPAM\tIN HAM\n", side.title)
			for _, t := range side.ts {
				fmt.Fprintf(tw, "%s\t%.4f\t%d\t%d\n", t.Token, t.Prob, t.Spam, t.Ham)
			}
		}
		tw.Flush()
	}
	rc := cfg.Rules
	rc.Mode = "enforce"
	set, err := rules.LoadConfigured(rc, rules.Options{Lists: listKinds(cfg), RateLimits: rateLimitStages(cfg), Classifier: model != nil})
	if err != nil {
		return exitCode(stderr, &configError{err})
	}
	ec := inspect.Config{}
	if model != nil {
		ec.Classifier = live
	}
	j := set.JudgeMessageWith(ec, fs.Arg(0), msg)
	fmt.Fprintf(stdout, "\nrules: score %.1f, action %s\n", j.Score, j.Action)
	for _, h := range j.Hits {
		fmt.Fprintf(tw, "  %s\t%+.1f\n", h.Rule, h.Score)
	}
	tw.Flush()
	return 0
}
