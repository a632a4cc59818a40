package classifier

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"moat/internal/state"
)

// The model lives in the state store, so that every moat on one Redis
// judges with the same model: one value holds the encoded model, one a
// version that changes with every save (instances poll it, a few bytes,
// and reload the model only when it changed), one per learned message
// its class (never learned twice; forget knows what to take back), and
// a lock that serializes learners.
const (
	ns         = "classifier"
	keepFor    = 400 * 24 * time.Hour // the store's longest time to live; every save renews the model's
	lockFor    = 2 * time.Minute      // a learner that died frees the lock by then
	lockWait   = 30 * time.Second
	classSpam  = "spam"
	classHam   = "ham"
	digestPart = "msg"
)

var (
	modelKey   = state.NewKey(ns, "model")
	versionKey = state.NewKey(ns, "version")
	lockKey    = state.NewKey(ns, "lock")
)

func digestKey(digest string) state.Key { return state.NewKey(ns, digestPart, digest) }

// Load reads the model from st; a store without one gives an empty model
// of bits (and version "").
func Load(ctx context.Context, st state.Store, bits int) (*Model, string, error) {
	ver, err := Version(ctx, st)
	if err != nil {
		return nil, "", err
	}
	v, _, found, err := st.Get(ctx, modelKey)
	if err != nil {
		return nil, "", err
	}
	if !found {
		return NewModel(bits), "", nil
	}
	m, err := UnmarshalModel(v)
	if err != nil {
		return nil, "", err
	}
	return m, ver, nil
}

// Version is the stored model's version, "" when there is none.
func Version(ctx context.Context, st state.Store) (string, error) {
	v, _, found, err := st.Get(ctx, versionKey)
	if err != nil || !found {
		return "", err
	}
	return string(v), nil
}

// Outcome is what learning one message did.
type Outcome string

// The outcomes.
const (
	Learned    Outcome = "learned"     // counted as the class asked for
	Relearned  Outcome = "relearned"   // it had been learned as the other class; moved
	Already    Outcome = "already"     // learned as this class before: nothing to do
	Forgotten  Outcome = "forgotten"   // taken back out
	NotLearned Outcome = "not_learned" // forget: it had never been learned
)

// Learner is one learning run: it holds the store's lock, so that two
// learners (moat learn, autolearn on several instances) never overwrite
// each other's counts, and works on the model it loaded. Nothing is
// saved before Commit.
type Learner struct {
	st    state.Store
	model *Model
	token string
	dirty bool
}

// ErrBusy: another learner held the lock for longer than Begin waits.
var ErrBusy = errors.New("classifier: another learner holds the model's lock")

// Begin takes the lock (waiting up to 30 s) and loads the model.
func Begin(ctx context.Context, st state.Store, bits int) (*Learner, error) {
	tok := make([]byte, 8)
	rand.Read(tok)
	l := &Learner{st: st, token: hex.EncodeToString(tok)}
	deadline := time.Now().Add(lockWait)
	for {
		ok, err := st.SetNX(ctx, lockKey, []byte(l.token), lockFor)
		if err != nil {
			return nil, err
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			return nil, ErrBusy
		}
		// Polling the lock: the store has no wait-for-delete.
		t := time.NewTimer(200 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
	m, _, err := Load(ctx, st, DefaultBits)
	if err != nil {
		l.release(ctx)
		return nil, err
	}
	l.model = m
	return l, nil
}

// Model is the model being learned into.
func (l *Learner) Model() *Model { return l.model }

// Learn counts d as spam or ham, unless it was learned as that before.
func (l *Learner) Learn(ctx context.Context, d *Doc, spam bool) (Outcome, error) {
	key := digestKey(Digest(d))
	want := classHam
	if spam {
		want = classSpam
	}
	v, _, found, err := l.st.Get(ctx, key)
	if err != nil {
		return "", err
	}
	out := Learned
	switch {
	case found && string(v) == want:
		return Already, nil
	case found:
		l.model.Learn(d, string(v) == classSpam, true)
		out = Relearned
	}
	l.model.Learn(d, spam, false)
	l.dirty = true
	return out, l.st.Set(ctx, key, []byte(want), keepFor)
}

// Forget takes d back out of the class it was learned as.
func (l *Learner) Forget(ctx context.Context, d *Doc) (Outcome, error) {
	key := digestKey(Digest(d))
	v, _, found, err := l.st.Get(ctx, key)
	if err != nil || !found {
		return NotLearned, err
	}
	l.model.Learn(d, string(v) == classSpam, true)
	l.dirty = true
	return Forgotten, l.st.Remove(ctx, key)
}

// Commit saves the model and a new version, and releases the lock.
func (l *Learner) Commit(ctx context.Context) error {
	defer l.release(ctx)
	if !l.dirty {
		return nil
	}
	b, err := l.model.MarshalBinary()
	if err != nil {
		return err
	}
	if err := l.st.Set(ctx, modelKey, b, keepFor); err != nil {
		return err
	}
	ver := make([]byte, 8)
	rand.Read(ver)
	return l.st.Set(ctx, versionKey, []byte(hex.EncodeToString(ver)), keepFor)
}

// Abort releases the lock without saving.
func (l *Learner) Abort(ctx context.Context) { l.release(ctx) }

func (l *Learner) release(ctx context.Context) {
	// Only our own lock: one that expired and was taken by another
	// learner is theirs.
	if v, _, found, err := l.st.Get(ctx, lockKey); err == nil && found && string(v) == l.token {
		l.st.Remove(context.WithoutCancel(ctx), lockKey)
	}
}

// Live is the model a running moat judges with, replaced whole when the
// stored one changes. The zero value holds no model.
type Live struct {
	p   atomic.Pointer[Model]
	ver atomic.Pointer[string]
}

// Model is the model in force, nil before one was loaded.
func (lv *Live) Model() *Model {
	if lv == nil {
		return nil
	}
	return lv.p.Load()
}

// Set puts m in force.
func (lv *Live) Set(m *Model, version string) {
	lv.p.Store(m)
	lv.ver.Store(&version)
}

// Refresh reloads the model from st when its version changed.
func (lv *Live) Refresh(ctx context.Context, st state.Store) error {
	ver, err := Version(ctx, st)
	if err != nil {
		return err
	}
	if cur := lv.ver.Load(); cur != nil && *cur == ver && lv.p.Load() != nil {
		return nil
	}
	m, ver, err := Load(ctx, st, DefaultBits)
	if err != nil {
		return err
	}
	lv.Set(m, ver)
	return nil
}

// Watch refreshes the model every interval until ctx ends, logging
// failures (the model in force stays).
func (lv *Live) Watch(ctx context.Context, st state.Store, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		before := lv.ver.Load()
		if err := lv.Refresh(ctx, st); err != nil {
			log.Warn("classifier model refresh failed; the model in force stays", "err", err)
			continue
		}
		if after := lv.ver.Load(); before == nil || after == nil || *before != *after {
			s, h := lv.Model().Learned()
			log.Info("classifier model loaded", "spam", s, "ham", h)
		}
	}
}

// String describes the model for logs.
func (m *Model) String() string {
	s, h := m.Learned()
	return fmt.Sprintf("%d spam, %d ham learned", s, h)
}
