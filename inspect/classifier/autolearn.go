package classifier

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"moat/internal/state"
)

// AutolearnConfig is when a running moat teaches the classifier by
// itself, from verdicts it is confident of (SpamAssassin's
// bayes_auto_learn): off unless configured, since a wrong verdict
// learned reinforces itself.
type AutolearnConfig struct {
	// SpamScore and HamScore: a message whose score without the
	// classifier's own rules is at least SpamScore is learned as spam,
	// at most HamScore as ham (SpamAssassin: 12 and 0.1).
	SpamScore float64 `yaml:"spam_score"`
	HamScore  float64 `yaml:"ham_score"`
	// MaxRatio is the balance guard: a class is not learned while it has
	// more than MaxRatio times the messages of the other (once the
	// model is past MinLearned of each), so a spam wave cannot drown
	// the ham. Default 3.
	MaxRatio float64 `yaml:"max_ratio"`
	// Flush is how often the messages picked are learned into the store
	// (one locked run for all of them). Default 1m.
	Flush time.Duration `yaml:"flush"`
}

// Defaults fills the unset fields.
func (c *AutolearnConfig) Defaults() {
	if c.SpamScore == 0 {
		c.SpamScore = 12
	}
	if c.HamScore == 0 {
		c.HamScore = 0.1
	}
	if c.MaxRatio == 0 {
		c.MaxRatio = 3
	}
	if c.Flush == 0 {
		c.Flush = time.Minute
	}
}

// maxPending bounds the messages waiting for the next flush: a flood
// between two flushes is sampled, not queued without end.
const maxPending = 2000

// Autolearner picks confident verdicts and learns them in batches.
type Autolearner struct {
	cfg  AutolearnConfig
	st   state.Store
	live *Live
	log  *slog.Logger

	mu      sync.Mutex
	pending []pick
	nSpam   int // picked since the last flush
	nHam    int
}

type pick struct {
	d    *Doc
	spam bool
}

// NewAutolearner learns into st; live is the model in force, whose
// counts the balance guard reads and which is refreshed after a flush.
func NewAutolearner(cfg AutolearnConfig, st state.Store, live *Live, log *slog.Logger) *Autolearner {
	cfg.Defaults()
	return &Autolearner{cfg: cfg, st: st, live: live, log: log}
}

// Offer considers a judged message: score is its total without the
// classifier's own rules. It returns the class picked, "" for none.
func (a *Autolearner) Offer(d *Doc, score float64) string {
	var spam bool
	switch {
	case score >= a.cfg.SpamScore:
		spam = true
	case score <= a.cfg.HamScore:
	default:
		return ""
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	s, h := a.nSpam, a.nHam
	if m := a.live.Model(); m != nil {
		ms, mh := m.Learned()
		s, h = s+ms, h+mh
	}
	// The balance guard.
	if spam && float64(s) >= a.cfg.MaxRatio*float64(max(h, MinLearned)) ||
		!spam && float64(h) >= a.cfg.MaxRatio*float64(max(s, MinLearned)) {
		return ""
	}
	if len(a.pending) >= maxPending {
		return ""
	}
	a.pending = append(a.pending, pick{d, spam})
	if spam {
		a.nSpam++
		return classSpam
	}
	a.nHam++
	return classHam
}

// Run flushes the picked messages every cfg.Flush until ctx ends, and
// once more then.
func (a *Autolearner) Run(ctx context.Context) {
	t := time.NewTicker(a.cfg.Flush)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			a.Flush(fctx)
			cancel()
			return
		case <-t.C:
			a.Flush(ctx)
		}
	}
}

// Flush learns the picked messages in one locked run.
func (a *Autolearner) Flush(ctx context.Context) {
	a.mu.Lock()
	batch := a.pending
	a.pending, a.nSpam, a.nHam = nil, 0, 0
	a.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	l, err := Begin(ctx, a.st, DefaultBits)
	if err != nil {
		a.log.Warn("classifier autolearn: the model is not available; the picked messages are dropped", "messages", len(batch), "err", err)
		return
	}
	learned := 0
	for _, p := range batch {
		o, err := l.Learn(ctx, p.d, p.spam)
		if err != nil {
			l.Abort(ctx)
			a.log.Warn("classifier autolearn failed", "err", err)
			return
		}
		if o != Already {
			learned++
		}
	}
	if err := l.Commit(ctx); err != nil {
		a.log.Warn("classifier autolearn: saving the model failed", "err", err)
		return
	}
	a.live.Refresh(ctx, a.st)
	s, h := l.Model().Learned()
	a.log.Info("classifier autolearn", "learned", learned, "offered", len(batch), "spam", s, "ham", h)
}
