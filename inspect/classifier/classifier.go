// Package classifier is moat's statistical spam classifier: it learns
// from the site's own mail which tokens mark spam and which mark ham, and
// gives each new message a spam probability, as SpamAssassin's Bayes,
// rspamd's statistics and mox's junk filter do.
//
// Tokens (see tokens) are hashed into a fixed table of 2^bits buckets:
// the model's size is bounded whatever the mail, at the price of rare
// collisions. Each bucket counts the spam and ham messages it was seen
// in. A message is judged by Robinson's chi-square combining (Gary
// Robinson, "A Statistical Approach to the Spam Problem", 2003), the
// method of SpamAssassin's Bayes: each token's spam probability, shrunk
// towards a neutral prior by how often it was seen, and the strongest
// tokens combined by Fisher's method into a spamminess and a hamminess.
//
// The package knows nothing of SMTP or the state store: the engine hands
// it decoded messages (Doc) and keeps the Model where it belongs.
package classifier

import (
	"math"
	"slices"
	"sort"
	"sync"
)

// MinLearned is how many messages of each class the model must have
// learned before it gives a probability (SpamAssassin's
// bayes_min_spam_num and bayes_min_ham_num, rspamd's min_learns): with
// fewer it would guess.
const MinLearned = 200

// DefaultBits is the default table size: 2^20 buckets, 8 MiB in memory.
const DefaultBits = 20

// The combining constants, SpamAssassin's (Bayes.pm): the strength of
// the neutral prior, the prior itself, how far from 0.5 a token must be
// to count, and how many of the strongest tokens count.
const (
	priorStrength = 0.030
	priorProb     = 0.538
	minStrength   = 0.346
	maxTokens     = 150
)

// Model is the learned token table. It is safe for concurrent use:
// many sessions classify while one learner learns.
type Model struct {
	mu          sync.RWMutex
	bits        uint8
	nSpam, nHam uint32
	spam, ham   []uint32 // per bucket: messages of each class it was in
}

// NewModel returns an empty model of 2^bits buckets (10 to 24).
func NewModel(bits int) *Model {
	bits = min(max(bits, 10), 24)
	return &Model{bits: uint8(bits), spam: make([]uint32, 1<<bits), ham: make([]uint32, 1<<bits)}
}

// Bits is the model's table size as a power of two.
func (m *Model) Bits() int { return int(m.bits) }

// Learned returns how many spam and ham messages the model learned.
func (m *Model) Learned() (spam, ham int) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return int(m.nSpam), int(m.nHam)
}

// Ready reports whether the model learned enough of both classes to
// judge (MinLearned each).
func (m *Model) Ready() bool {
	s, h := m.Learned()
	return s >= MinLearned && h >= MinLearned
}

// ids returns the message's distinct bucket ids.
func (m *Model) ids(d *Doc, dst []uint32) []uint32 {
	mask := uint32(1)<<m.bits - 1
	tokens(d, func(tok string) { dst = append(dst, hash(tok)&mask) })
	slices.Sort(dst)
	return slices.Compact(dst)
}

// hash is 32-bit FNV-1a: stable across processes and versions, since
// the ids are stored.
func hash(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}

// Learn counts d as spam or as ham. With forget, it takes a message
// learned earlier back out instead (its class must be the one it was
// learned as; the caller keeps track, see the digest in the engine).
func (m *Model) Learn(d *Doc, spam, forget bool) {
	ids := m.ids(d, make([]uint32, 0, 512))
	m.mu.Lock()
	defer m.mu.Unlock()
	table, n := m.ham, &m.nHam
	if spam {
		table, n = m.spam, &m.nSpam
	}
	for _, id := range ids {
		switch {
		case !forget:
			table[id]++
		case table[id] > 0:
			table[id]--
		}
	}
	switch {
	case !forget:
		*n++
	case *n > 0:
		*n--
	}
}

// Result is the classifier's judgement of one message.
type Result struct {
	// Prob is the spam probability, 0 (ham) to 1 (spam).
	Prob float64
	// Confidence says how much evidence Prob rests on, 0 to 1: the
	// number of tokens the model knew well enough to count, k, as
	// k/(k+10) — 10 telling tokens give 0.5, 90 give 0.9.
	Confidence float64
	// Tokens is how many tokens counted.
	Tokens int
}

// Classify judges d. ok is false when the model has not learned
// MinLearned messages of each class: then there is no judgement, never a
// guess.
func (m *Model) Classify(d *Doc) (Result, bool) {
	r, _, ok := m.classify(d, false)
	return r, ok
}

// TokenScore is a token's spam probability in the model, for
// explanations.
type TokenScore struct {
	Token      string
	Prob       float64
	Spam, Ham  int // learned messages it was in
	Collisions int // other tokens of this message in the same bucket
}

// Explain judges d and returns its strongest tokens both ways: up to k
// that point to spam and k that point to ham, strongest first.
func (m *Model) Explain(d *Doc, k int) (r Result, spam, ham []TokenScore, ok bool) {
	r, probs, ok := m.classify(d, true)
	if !ok {
		return r, nil, nil, false
	}
	mask := uint32(1)<<m.bits - 1
	seen := map[uint32]bool{}
	m.mu.RLock()
	tokens(d, func(tok string) {
		id := hash(tok) & mask
		p, counted := probs[id]
		if !counted || seen[id] {
			return
		}
		seen[id] = true
		ts := TokenScore{Token: tok, Prob: p, Spam: int(m.spam[id]), Ham: int(m.ham[id])}
		if p > 0.5 {
			spam = append(spam, ts)
		} else {
			ham = append(ham, ts)
		}
	})
	m.mu.RUnlock()
	sort.SliceStable(spam, func(i, j int) bool { return spam[i].Prob > spam[j].Prob })
	sort.SliceStable(ham, func(i, j int) bool { return ham[i].Prob < ham[j].Prob })
	return r, spam[:min(k, len(spam))], ham[:min(k, len(ham))], true
}

type scored struct {
	id uint32
	f  float64
}

func (m *Model) classify(d *Doc, keep bool) (Result, map[uint32]float64, bool) {
	ids := m.ids(d, make([]uint32, 0, 512))
	m.mu.RLock()
	nSpam, nHam := float64(m.nSpam), float64(m.nHam)
	if m.nSpam < MinLearned || m.nHam < MinLearned {
		m.mu.RUnlock()
		return Result{}, nil, false
	}
	strong := make([]scored, 0, len(ids))
	for _, id := range ids {
		s, h := float64(m.spam[id]), float64(m.ham[id])
		if s+h == 0 {
			continue
		}
		ps, ph := s/nSpam, h/nHam
		p := ps / (ps + ph)
		n := s + h
		// Robinson's f(w): the token's probability shrunk towards the
		// prior by how rarely it was seen.
		f := (priorStrength*priorProb + n*p) / (priorStrength + n)
		if math.Abs(f-0.5) >= minStrength {
			strong = append(strong, scored{id, f})
		}
	}
	m.mu.RUnlock()
	if len(strong) > maxTokens {
		sort.Slice(strong, func(i, j int) bool { return math.Abs(strong[i].f-0.5) > math.Abs(strong[j].f-0.5) })
		strong = strong[:maxTokens]
	}
	var probs map[uint32]float64
	if keep {
		probs = make(map[uint32]float64, len(strong))
	}
	if len(strong) == 0 {
		return Result{Prob: 0.5}, probs, true
	}
	var lnS, lnH float64
	for _, t := range strong {
		f := min(max(t.f, 1e-6), 1-1e-6)
		lnH += math.Log(f)     // evidence against ham
		lnS += math.Log(1 - f) // evidence against spam
		if keep {
			probs[t.id] = t.f
		}
	}
	n := len(strong)
	// Fisher's method: under the hypothesis of random tokens, −2·Σln
	// is chi-square with 2n degrees of freedom.
	spamminess := 1 - chi2Q(-2*lnS, 2*n)
	hamminess := 1 - chi2Q(-2*lnH, 2*n)
	prob := (1 + spamminess - hamminess) / 2
	return Result{Prob: prob, Confidence: float64(n) / float64(n+10), Tokens: n}, probs, true
}

// chi2Q is the probability that a chi-square variable with v (even)
// degrees of freedom exceeds x2 (Robinson's chi2Q).
func chi2Q(x2 float64, v int) float64 {
	m := x2 / 2
	sum := math.Exp(-m)
	term := sum
	for i := 1; i < v/2; i++ {
		term *= m / float64(i)
		sum += term
	}
	return min(sum, 1)
}
