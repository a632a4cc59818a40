package corpustest

import (
	"bytes"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoad(t *testing.T) {
	msgs := Load(t)
	var spam, ham int
	groups := map[string]int{}
	names := map[string]bool{}
	for _, m := range msgs {
		if m.Spam {
			spam++
		} else {
			ham++
		}
		groups[m.Group]++
		if names[m.Name] {
			t.Errorf("duplicate name %s", m.Name)
		}
		names[m.Name] = true
		if !strings.HasPrefix(m.Name, m.Group+"/") {
			t.Errorf("%s: name outside its group %s", m.Name, m.Group)
		}
		if bytes.HasPrefix(m.Raw, []byte("From ")) {
			t.Errorf("%s: mbox From line not stripped", m.Name)
		}
		if !bytes.HasSuffix(m.Raw, []byte("\r\n")) {
			t.Errorf("%s: does not end in CRLF", m.Name)
		}
		if n := bytes.Count(m.Raw, []byte("\n")); n != bytes.Count(m.Raw, []byte("\r\n")) {
			t.Errorf("%s: %d LF but %d CRLF", m.Name, n, bytes.Count(m.Raw, []byte("\r\n")))
		}
	}
	if spam != 500 || ham != 2750 {
		t.Errorf("spam %d, ham %d; want 500, 2750", spam, ham)
	}
	if groups["spam-1"] != 500 || groups["easy-ham-1"] != 2500 || groups["hard-ham-1"] != 250 || len(groups) != 3 {
		t.Errorf("groups %v", groups)
	}
	first := "spam-1/00001.7848dde101aa985090474a91ec93fcf0"
	if !names[first] {
		t.Errorf("%s not loaded", first)
	}
}

func TestWire(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"From a@b  Thu Aug 22 13:17:22 2002\nSubject: x\n\nbody\n", "Subject: x\r\n\r\nbody\r\n"},
		{"Subject: x\r\n\r\nbody", "Subject: x\r\n\r\nbody\r\n"},
		{"Subject: x\n\nFrom me\n", "Subject: x\r\n\r\nFrom me\r\n"},
		{"From only-line", ""},
	} {
		if got := string(wire([]byte(c.in))); got != c.want {
			t.Errorf("wire(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestLoadRefuses(t *testing.T) {
	dir := t.TempDir()
	if _, err := load(dir); err == nil || !strings.Contains(err.Error(), "incomplete") {
		t.Errorf("empty dir: %v", err)
	}
	if err := os.Mkdir(filepath.Join(dir, "spam-2"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := load(dir); err == nil || !strings.Contains(err.Error(), "held-out") {
		t.Errorf("dir with spam-2: %v", err)
	}
	if _, err := loadGroup(dir, Group{Name: "easy-ham-2", Count: 2500}); err == nil {
		t.Error("loadGroup read easy-ham-2")
	}
}

func TestFolds(t *testing.T) {
	msgs := Load(t)
	const k = 5
	seen := map[string]int{}
	for fold := 0; fold < k; fold++ {
		train, test := Folds(msgs, k, fold)
		if len(train)+len(test) != len(msgs) {
			t.Fatalf("fold %d: %d + %d != %d", fold, len(train), len(test), len(msgs))
		}
		var spam, ham int
		for _, m := range test {
			seen[m.Name]++
			if m.Spam {
				spam++
			} else {
				ham++
			}
		}
		if spam != 100 || ham != 550 {
			t.Errorf("fold %d test: %d spam, %d ham; want 100, 550", fold, spam, ham)
		}
		inTest := map[string]bool{}
		for _, m := range test {
			inTest[m.Name] = true
		}
		for _, m := range train {
			if inTest[m.Name] {
				t.Errorf("fold %d: %s in train and test", fold, m.Name)
			}
		}
	}
	if len(seen) != len(msgs) {
		t.Errorf("%d messages in some test fold, want %d", len(seen), len(msgs))
	}
	for name, n := range seen {
		if n != 1 {
			t.Errorf("%s in %d test folds", name, n)
		}
	}

	// Deterministic, whatever the order of the input.
	_, want := Folds(msgs, k, 2)
	shuffled := append([]Message(nil), msgs...)
	rand.New(rand.NewSource(1)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	_, got := Folds(shuffled, k, 2)
	set := map[string]bool{}
	for _, m := range want {
		set[m.Name] = true
	}
	if len(got) != len(want) {
		t.Fatalf("shuffled: %d test messages, want %d", len(got), len(want))
	}
	for _, m := range got {
		if !set[m.Name] {
			t.Errorf("shuffled input moved %s into fold 2", m.Name)
		}
	}
}
