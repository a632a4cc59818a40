package classifier

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"moat/internal/redistest"
	"moat/internal/state"
)

// synth makes a message of n words drawn mostly from one vocabulary,
// with words shared by both classes mixed in.
func synth(r *rand.Rand, spam bool, i int) *Doc {
	spamWords := strings.Fields("viagra cheap pills winner lottery prize claim unsubscribe offer discount casino bonus credit loan free click")
	hamWords := strings.Fields("meeting agenda report project deadline review kernel patch build release schedule lunch minutes draft budget")
	common := strings.Fields("the and for you with this that have from your will about")
	own := hamWords
	if spam {
		own = spamWords
	}
	var b strings.Builder
	for range 60 {
		switch r.IntN(3) {
		case 0:
			b.WriteString(common[r.IntN(len(common))])
		default:
			b.WriteString(own[r.IntN(len(own))])
		}
		b.WriteByte(' ')
	}
	return &Doc{Subject: fmt.Sprintf("%s %d", own[r.IntN(len(own))], i), Text: b.String(),
		Headers: []Header{{"Message-ID", fmt.Sprintf("<%d.%v@x>", i, spam)}}}
}

func trained(t testing.TB, seed uint64, n int) *Model {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 1))
	m := NewModel(16)
	for i := range n {
		m.Learn(synth(r, true, i), true, false)
		m.Learn(synth(r, false, i), false, false)
	}
	return m
}

// Below 200 messages of each class there is no judgement; past it,
// messages of each vocabulary land on their side with confidence.
func TestClassify(t *testing.T) {
	seed := rand.Uint64()
	defer func() {
		if t.Failed() {
			t.Logf("seed %d", seed)
		}
	}()
	if _, ok := trained(t, seed, MinLearned-1).Classify(&Doc{Text: "viagra"}); ok {
		t.Fatal("a model with 199 of each class judged")
	}
	m := trained(t, seed, MinLearned)
	r := rand.New(rand.NewPCG(seed, 2))
	for i := range 50 {
		s, ok1 := m.Classify(synth(r, true, 1000+i))
		h, ok2 := m.Classify(synth(r, false, 1000+i))
		if !ok1 || !ok2 || s.Prob < 0.99 || h.Prob > 0.01 || s.Confidence < 0.5 || h.Confidence < 0.5 {
			t.Fatalf("spam %+v, ham %+v: want them apart, with confidence", s, h)
		}
	}
	// A message of words never seen: no evidence either way.
	if u, _ := m.Classify(&Doc{Text: "zyzzyva quokka xylophone"}); u.Prob != 0.5 || u.Tokens != 0 || u.Confidence != 0 {
		t.Errorf("unseen words: %+v, want 0.5 with no confidence", u)
	}
	_, spam, ham, _ := m.Explain(synth(r, true, 9999), 3)
	if len(spam) != 3 || len(ham) != 0 && ham[0].Prob > 0.5 || spam[0].Prob < spam[2].Prob {
		t.Errorf("explain: spam %+v ham %+v", spam, ham)
	}
}

// Encoding keeps the model exactly; forgetting undoes learning exactly.
func TestEncodeAndForget(t *testing.T) {
	m := trained(t, 7, 210)
	b, _ := m.MarshalBinary()
	m2, err := UnmarshalModel(b)
	if err != nil {
		t.Fatal(err)
	}
	d := synth(rand.New(rand.NewPCG(9, 9)), true, 5)
	r1, _ := m.Classify(d)
	r2, _ := m2.Classify(d)
	if r1 != r2 {
		t.Fatalf("decoded model judges %+v, original %+v", r2, r1)
	}
	before, _ := m.MarshalBinary()
	m.Learn(d, true, false)
	m.Learn(d, true, true)
	if after, _ := m.MarshalBinary(); string(after) != string(before) {
		t.Fatal("learn then forget changed the model")
	}
	if _, err := UnmarshalModel(b[:len(b)-1]); err == nil {
		t.Error("a truncated model decoded")
	}
}

type backend struct {
	name string
	st   state.Store
	cfg  state.Config
}

func backends(t *testing.T) []backend {
	t.Helper()
	cfg := state.Config{Dir: filepath.Join(t.TempDir(), "state")}
	cfg.Defaults()
	emb, err := state.New(cfg, state.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emb.Close() })
	rd := redistest.Start(t)
	rcfg := state.Config{Backend: state.BackendRedis}
	rcfg.Defaults()
	rcfg.Redis.Address = rd.Addr
	red, err := state.New(rcfg, state.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { red.Close() })
	return []backend{{"embedded", emb, cfg}, {"redis", red, rcfg}}
}

// The model in the store: a message is learned once, moved when learned
// as the other class, taken back by forget; a commit makes a new version
// that Live picks up; a second learner waits for the first's lock.
func TestStore(t *testing.T) {
	ctx := context.Background()
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(3, 3))
			live := &Live{}
			if err := live.Refresh(ctx, b.st); err != nil || live.Model() == nil {
				t.Fatalf("empty store: %v", err)
			}
			l, err := Begin(ctx, b.st, DefaultBits)
			if err != nil {
				t.Fatal(err)
			}
			// A second learner cannot start while the first runs.
			short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			if _, err := Begin(short, b.st, DefaultBits); err == nil {
				t.Fatal("two learners at once")
			}
			cancel()
			d := synth(r, true, 1)
			steps := []struct {
				do   func() (Outcome, error)
				want Outcome
				s, h int
			}{
				{func() (Outcome, error) { return l.Learn(ctx, d, true) }, Learned, 1, 0},
				{func() (Outcome, error) { return l.Learn(ctx, d, true) }, Already, 1, 0},
				{func() (Outcome, error) { return l.Learn(ctx, d, false) }, Relearned, 0, 1},
				{func() (Outcome, error) { return l.Forget(ctx, d) }, Forgotten, 0, 0},
				{func() (Outcome, error) { return l.Forget(ctx, d) }, NotLearned, 0, 0},
			}
			for i, st := range steps {
				o, err := st.do()
				if s, h := l.Model().Learned(); err != nil || o != st.want || s != st.s || h != st.h {
					t.Fatalf("step %d: %s, %v, counts %d/%d; want %s, %d/%d", i, o, err, s, h, st.want, st.s, st.h)
				}
			}
			for i := range MinLearned {
				l.Learn(ctx, synth(r, true, 10+i), true)
				l.Learn(ctx, synth(r, false, 10+i), false)
			}
			if err := l.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			if err := live.Refresh(ctx, b.st); err != nil || !live.Model().Ready() {
				t.Fatalf("after the commit: %v, model %v", err, live.Model())
			}
			// The lock is free again.
			l2, err := Begin(ctx, b.st, DefaultBits)
			if err != nil {
				t.Fatalf("after the commit: %v", err)
			}
			if s, h := l2.Model().Learned(); s != MinLearned || h != MinLearned {
				t.Errorf("the next learner loaded %d/%d", s, h)
			}
			l2.Abort(ctx)
		})
	}
}

// Autolearn learns what it is sure of, not what it is not, and never
// lets one class run away from the other.
func TestAutolearn(t *testing.T) {
	ctx := context.Background()
	b := backends(t)[0]
	live := &Live{}
	live.Set(NewModel(DefaultBits), "")
	a := NewAutolearner(AutolearnConfig{MaxRatio: 2}, b.st, live, slog.New(slog.NewTextHandler(io.Discard, nil)))
	r := rand.New(rand.NewPCG(5, 5))
	if c := a.Offer(synth(r, true, 0), 5); c != "" {
		t.Errorf("an unsure verdict was picked as %q", c)
	}
	picked := map[string]int{}
	for i := range 1000 {
		picked[a.Offer(synth(r, true, i), 15)]++
	}
	// The guard: spam may run to 2 × max(ham, 200).
	if picked["spam"] != 2*MinLearned {
		t.Errorf("picked %d spam with no ham learned, want %d", picked["spam"], 2*MinLearned)
	}
	for i := range 50 {
		a.Offer(synth(r, false, i), -1)
	}
	a.Flush(ctx)
	if s, h := live.Model().Learned(); s != 2*MinLearned || h != 50 {
		t.Errorf("after the flush the model has %d/%d, want %d/50", s, h, 2*MinLearned)
	}
}
