// Package satest runs SpamAssassin's Bayes classifier as the baseline that
// moat's statistical classifier is measured against: it trains a Bayes
// database with sa-learn on messages of internal/corpustest and reads back,
// for each message to classify, the spam probability SpamAssassin's Bayes
// gives it.
//
// Everything lives in a temp dir of the test: the site config (a local.cf
// of the harness, and copies of the package's plugin list, the *.pre files
// of /etc/spamassassin, which only say which plugins load), the rules, the
// Bayes database (bayes_path), an empty user_prefs (-p) and HOME. The rules
// come from the Debian package's defaults in /usr/share/spamassassin, never
// from rules fetched by sa-update, and no rule of our own is added; only
// local tests run (-L, dns_available no): SpamAssassin sends nothing over
// the network and makes no DNS query.
//
// Only the Bayes part of the default rules is used: --configpath names a
// temp dir with 10_default_prefs.cf, 20_aux_tlds.cf (the registry
// boundaries by which URIs are tokenized), 23_bayes.cf,
// 60_bayes_stopwords.cf and every bayes_* line of the other files, such as
// 72_active.cf's bayes_ignore_header list. The other rules cannot change
// the Bayes probability, but running them made scoring five to eight times
// slower (100–300 ms a message against 17–40 ms on a shared two-core
// machine). The package's test checks on a sample that the probabilities
// are the same, to the last digit, with the full default rules (FullRules).
//
// Checked with strace (socket, connect, sendto): scoring with the full
// default rules and this config opens no network socket at all, only
// the nscd Unix socket for user lookups.
//
// SpamAssassin's Bayes is deterministic given the same training: the
// harness switches off auto-learning and auto-expiry (bayes_auto_learn 0,
// bayes_auto_expire 0), the only things that would make the database depend
// on the clock or on the order of scoring, and keeps the default minimum
// training (bayes_min_spam_num and bayes_min_ham_num, 200 each).
//
// Performance: training is two sa-learn processes (--spam, then --ham) over
// one mbox file each, and classification one spamassassin process over one
// mbox; SpamAssassin's start-up (about a second) is paid per process, not
// per message. Each message is matched to its result by a header the
// harness adds (X-Moat-Corpus-Name, excluded from tokens by
// bayes_ignore_header), never by position.
//
// The probability is read from a header. SpamAssassin's own template tag
// _BAYES_ (add_header all Bayes _BAYES_, X-Spam-Bayes) rounds it to four
// decimals, which ties many messages: chi-squared combining puts messages
// with strong evidence both ways at 0.5000x and confident ones at 1.0000,
// and ties rank against a classifier. So a ten-line plugin of the harness
// (bayesPlugin), loaded from the site config, adds the tag _BAYESP_ with
// the same value, the Bayes plugin's bayes_score that _BAYES_ formats, at
// full precision (X-Spam-BayesP); Score checks that the two agree.
package satest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math"
	"moat/internal/corpustest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// RulesDir holds the default rules of Debian's spamassassin package.
const RulesDir = "/usr/share/spamassassin"

// bayesRules are the files of RulesDir copied whole into the Bayes-only
// rules; bayesLine picks the lines taken from the others.
var bayesRules = []string{"10_default_prefs.cf", "20_aux_tlds.cf", "23_bayes.cf", "60_bayes_stopwords.cf"}

var bayesLine = regexp.MustCompile(`^bayes_\w+\s`)

// siteDefaults is where the package keeps its plugin list (*.pre).
const siteDefaults = "/etc/spamassassin"

// nameHeader carries the corpus name of each message through spamassassin.
const nameHeader = "X-Moat-Corpus-Name"

// separator starts each message in the mbox files the harness writes. It
// must match SpamAssassin's mbox_format_from_regex (a sender, two spaces,
// an asctime date).
const separator = "From corpustest@moat.invalid  Thu Jan  1 00:00:00 1970\n"

// bayesPlugin sets the template tag _BAYESP_ to the message's Bayes
// probability at full precision ("none" when Bayes gave none, where
// _BAYES_ says 0.5), at check_end, after the rules (Bayes among them) ran
// and before the headers are written.
const bayesPlugin = `# Written by moat's internal/satest; see its package doc.
package Moat::SATest::BayesPrecise;
use strict;
use warnings;
use Mail::SpamAssassin::Plugin;
our @ISA = qw(Mail::SpamAssassin::Plugin);
sub new { my ($class, $sa) = @_; my $self = $class->SUPER::new($sa); bless $self, $class; return $self; }
sub check_end {
  my ($self, $opts) = @_;
  my $pms = $opts->{permsgstatus};
  $pms->set_tag('BAYESP', defined $pms->{bayes_score} ? sprintf('%.17g', $pms->{bayes_score}) : 'none');
  return 0;
}
1;
`

// localCF is the site config; %[1]s is the Bayes database's path prefix,
// %[2]s the plugin's file.
const localCF = `# Written by moat's internal/satest; see its package doc.
loadplugin Moat::SATest::BayesPrecise %[2]s
use_bayes 1
bayes_auto_learn 0
bayes_auto_expire 0
bayes_min_spam_num 200
bayes_min_ham_num 200
bayes_path %[1]s
bayes_file_mode 0700
bayes_ignore_header ` + nameHeader + `
dns_available no
skip_rbl_checks 1
use_auto_whitelist 0
report_safe 0
add_header all Bayes _BAYES_
add_header all BayesP _BAYESP_
`

// Bayes is a trained SpamAssassin Bayes database in a temp dir of the test.
type Bayes struct {
	// TrainTime is the wall-clock time sa-learn took per training message,
	// its two start-ups included.
	TrainTime time.Duration
	// LearnedSpam and LearnedHam are the counts sa-learn reported learning.
	LearnedSpam, LearnedHam int

	// FullRules makes Score run every default rule of RulesDir instead of
	// the Bayes part only: slower, the same probabilities.
	FullRules bool

	dir string
}

// Train trains a fresh SpamAssassin Bayes database on train, which must
// hold at least 200 spam and 200 ham (SpamAssassin's minimum before Bayes
// gives any probability). It fails the test, naming the install step, when
// SpamAssassin is missing, and when sa-learn does not learn every message.
func Train(t testing.TB, train []corpustest.Message) *Bayes {
	t.Helper()
	for _, cmd := range []string{"sa-learn", "spamassassin"} {
		if _, err := exec.LookPath(cmd); err != nil {
			t.Fatalf("satest: %s not found (Debian package spamassassin); run scripts/install-test-deps.sh as root", cmd)
		}
	}
	b := &Bayes{dir: t.TempDir()}
	for _, d := range []string{"site", "rules", "home", "bayes"} {
		if err := os.Mkdir(filepath.Join(b.dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	pres, err := filepath.Glob(filepath.Join(siteDefaults, "*.pre"))
	if err != nil || len(pres) == 0 {
		t.Fatalf("satest: no plugin list (*.pre) in %s (%v); run scripts/install-test-deps.sh as root", siteDefaults, err)
	}
	for _, p := range pres {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b.write(t, filepath.Join("site", filepath.Base(p)), data)
	}
	b.writeBayesRules(t)
	plugin := b.write(t, "bayes_precise.pm", []byte(bayesPlugin))
	b.write(t, "site/local.cf", []byte(fmt.Sprintf(localCF, filepath.Join(b.dir, "bayes", "bayes"), plugin)))
	b.write(t, "user_prefs", nil)

	var spam, ham []corpustest.Message
	for _, m := range train {
		if m.Spam {
			spam = append(spam, m)
		} else {
			ham = append(ham, m)
		}
	}
	b.writeMbox(t, "spam.mbox", spam, false)
	b.writeMbox(t, "ham.mbox", ham, false)

	start := time.Now()
	learned := regexp.MustCompile(`Learned tokens from (\d+) message\(s\) \((\d+) message\(s\) examined\)`)
	for _, c := range []struct {
		flag  string
		file  string
		want  int
		count *int
	}{{"--spam", "spam.mbox", len(spam), &b.LearnedSpam}, {"--ham", "ham.mbox", len(ham), &b.LearnedHam}} {
		// --max-size 0: learn every message; sa-learn skips those over
		// 500 KB by default.
		out := b.run(t, nil, filepath.Join(b.dir, "rules"), "sa-learn", c.flag, "--mbox", "--max-size", "0", filepath.Join(b.dir, c.file))
		m := learned.FindSubmatch(out)
		if m == nil {
			t.Fatalf("satest: sa-learn %s: no summary in its output:\n%s", c.flag, out)
		}
		n, _ := strconv.Atoi(string(m[1]))
		examined, _ := strconv.Atoi(string(m[2]))
		if examined != c.want {
			t.Fatalf("satest: sa-learn %s examined %d messages of %d (an mbox split wrongly?):\n%s", c.flag, examined, c.want, out)
		}
		*c.count = n
	}
	if len(train) > 0 {
		b.TrainTime = time.Since(start) / time.Duration(len(train))
	}
	return b
}

// Score classifies msgs with one spamassassin process and returns
// SpamAssassin's Bayes spam probability (0 to 1, full precision; 0.5, as
// SpamAssassin says, for a message Bayes gives none) of each, in
// the order of msgs, and the wall-clock time per message, the process's
// start-up included. It fails the test unless every message comes back
// with a probability.
func (b *Bayes) Score(t testing.TB, msgs []corpustest.Message) (probs []float64, perMessage time.Duration) {
	t.Helper()
	if len(msgs) == 0 {
		return nil, 0
	}
	in := b.writeMbox(t, "score.mbox", msgs, true)
	f, err := os.Open(in)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	start := time.Now()
	rules := filepath.Join(b.dir, "rules")
	if b.FullRules {
		rules = RulesDir
	}
	out := b.run(t, f, rules, "spamassassin", "--mbox")
	perMessage = time.Since(start) / time.Duration(len(msgs))

	got, none, err := parseResults(out)
	if err != nil {
		t.Fatalf("satest: spamassassin output: %v", err)
	}
	if len(none) > 0 {
		t.Logf("satest: Bayes gave no probability (scored 0.5) for %d of %d messages: %s", len(none), len(msgs), strings.Join(none, " "))
	}
	probs = make([]float64, len(msgs))
	for i, m := range msgs {
		p, ok := got[m.Name]
		if !ok {
			t.Fatalf("satest: spamassassin returned no Bayes probability for %s (%d results for %d messages)", m.Name, len(got), len(msgs))
		}
		probs[i] = p
	}
	if len(got) != len(msgs) {
		t.Fatalf("satest: %d results for %d messages", len(got), len(msgs))
	}
	return probs, perMessage
}

// run runs a SpamAssassin command with the harness's config, the rules of
// the directory rules and HOME, and returns its standard output. It fails
// the test with the command's standard error when the command fails, and
// logs that standard error when it has something to say.
func (b *Bayes) run(t testing.TB, stdin io.Reader, rules, name string, args ...string) []byte {
	t.Helper()
	args = append([]string{
		"--siteconfigpath", filepath.Join(b.dir, "site"),
		"--configpath", rules,
		"--prefspath", filepath.Join(b.dir, "user_prefs"),
		"--local",
	}, args...)
	cmd := exec.Command(name, args...)
	cmd.Dir = b.dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + filepath.Join(b.dir, "home"), "LC_ALL=C"}
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("satest: %s %s: %v\nstderr:\n%s", name, strings.Join(args, " "), err, stderr.Bytes())
	}
	if stderr.Len() > 0 {
		t.Logf("satest: %s wrote to stderr:\n%s", name, stderr.Bytes())
	}
	return stdout.Bytes()
}

// writeBayesRules writes the Bayes part of the default rules into rules/:
// the files of bayesRules whole, and the bayes_* lines of the others. (In
// the package's rules those lines sit outside any if block; one inside
// would be taken unconditionally here, which the FullRules comparison of
// the package's test would show.)
func (b *Bayes) writeBayesRules(t testing.TB) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(RulesDir, "*.cf"))
	if err != nil || len(files) == 0 {
		t.Fatalf("satest: no default rules in %s (%v); run scripts/install-test-deps.sh as root", RulesDir, err)
	}
	var lines bytes.Buffer
	lines.WriteString("# bayes_* lines of the other default rule files, written by moat's internal/satest\n")
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		whole := false
		for _, r := range bayesRules {
			whole = whole || filepath.Base(f) == r
		}
		if whole {
			b.write(t, filepath.Join("rules", filepath.Base(f)), data)
			continue
		}
		for _, l := range strings.SplitAfter(string(data), "\n") {
			if bayesLine.MatchString(l) {
				lines.WriteString(l)
			}
		}
	}
	b.write(t, "rules/70_bayes_lines.cf", lines.Bytes())
}

func (b *Bayes) write(t testing.TB, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(b.dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// writeMbox writes msgs as an mbox file: each message after separator, with
// LF line endings (SpamAssassin reads mbox files as Unix text), with the
// name header first when named, and with mboxrd quoting of body lines.
func (b *Bayes) writeMbox(t testing.TB, name string, msgs []corpustest.Message, named bool) string {
	t.Helper()
	var buf bytes.Buffer
	for _, m := range msgs {
		buf.WriteString(separator)
		if named {
			fmt.Fprintf(&buf, "%s: %s\n", nameHeader, m.Name)
		}
		writeMboxrd(&buf, m.Raw)
		buf.WriteByte('\n')
	}
	return b.write(t, name, buf.Bytes())
}

// quoted matches the lines mboxrd quotes: "From " after any number of '>'.
var quoted = regexp.MustCompile(`^>*From `)

// writeMboxrd writes a CRLF message with LF line endings and a '>' before
// every line that matches ^>*From , so that no line of a message can be
// taken for a separator (mboxrd).
func writeMboxrd(w *bytes.Buffer, raw []byte) {
	for len(raw) > 0 {
		line := raw
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			raw = nil
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if quoted.Match(line) {
			w.WriteByte('>')
		}
		w.Write(line)
		w.WriteByte('\n')
	}
}

// parseResults reads spamassassin's output mbox and returns the Bayes
// probability of each message by its name header, and the names of those
// Bayes gave no probability (scored 0.5). Only header sections are
// read: a separator line starts a message, the first empty line ends its
// header. Body lines cannot look like separators: the input was quoted.
func parseResults(out []byte) (res map[string]float64, none []string, err error) {
	res = map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 64*1024), 16<<20)
	inHeader := false
	var name, bayes, precise string
	n := 0
	flush := func() error {
		if n == 0 {
			return nil
		}
		if name == "" {
			return fmt.Errorf("message %d has no %s header", n, nameHeader)
		}
		if bayes == "" || precise == "" {
			return fmt.Errorf("%s lacks X-Spam-Bayes or X-Spam-BayesP (Bayes not run?)", name)
		}
		rounded, err := strconv.ParseFloat(bayes, 64)
		if err != nil || rounded < 0 || rounded > 1 {
			return fmt.Errorf("%s: X-Spam-Bayes %q is not a probability", name, bayes)
		}
		p := 0.5 // SpamAssassin's _BAYES_ when Bayes gave no probability
		if precise == "none" {
			none = append(none, name)
		} else {
			p, err = strconv.ParseFloat(precise, 64)
			if err != nil || math.Abs(p-rounded) > 0.00005 {
				return fmt.Errorf("%s: X-Spam-BayesP %q does not round to X-Spam-Bayes %q", name, precise, bayes)
			}
		}
		if _, dup := res[name]; dup {
			return fmt.Errorf("%s came back twice", name)
		}
		res[name] = p
		return nil
	}
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "From ") {
			if err := flush(); err != nil {
				return nil, nil, err
			}
			n++
			inHeader, name, bayes, precise = true, "", "", ""
			continue
		}
		if !inHeader {
			continue
		}
		if line == "" {
			inHeader = false
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch {
		case strings.EqualFold(k, nameHeader):
			name = strings.TrimSpace(v)
		case strings.EqualFold(k, "X-Spam-Bayes"):
			bayes = strings.TrimSpace(v)
		case strings.EqualFold(k, "X-Spam-BayesP"):
			precise = strings.TrimSpace(v)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, nil, err
	}
	if err := flush(); err != nil {
		return nil, nil, err
	}
	return res, none, nil
}
