package state

import (
	"context"
	"errors"
	"time"
)

// ErrReadOnly is the error of a write through ReadOnly.
var ErrReadOnly = errors.New("state: read-only view")

// ReadOnly is a view of s that reads and never writes: offline analysis
// (moat analyze --state) may read what a live moat learned, but must
// never change it. Get, Count, Scan and Ping read s. Add reads the
// window's count instead of adding to it (reputation counting goes on
// quietly and changes nothing); SetNX, Set, Allow, Remove and Delete fail with
// ErrReadOnly, since what they decide cannot be decided without a write.
// Close closes s.
func ReadOnly(s Store) Store { return readOnly{s} }

type readOnly struct{ s Store }

func (r readOnly) Allow(context.Context, Key, Rate, int, int) (bool, time.Duration, error) {
	return false, 0, ErrReadOnly
}
func (r readOnly) Add(ctx context.Context, key Key, _ int64, window time.Duration) (int64, error) {
	return r.s.Count(ctx, key, window)
}
func (r readOnly) Count(ctx context.Context, key Key, window time.Duration) (int64, error) {
	return r.s.Count(ctx, key, window)
}
func (r readOnly) SetNX(context.Context, Key, []byte, time.Duration) (bool, error) {
	return false, ErrReadOnly
}
func (r readOnly) Set(context.Context, Key, []byte, time.Duration) error { return ErrReadOnly }
func (r readOnly) Get(ctx context.Context, key Key) ([]byte, time.Duration, bool, error) {
	return r.s.Get(ctx, key)
}
func (r readOnly) Scan(ctx context.Context, pattern string, max int) ([]Entry, bool, error) {
	return r.s.Scan(ctx, pattern, max)
}
func (r readOnly) Remove(context.Context, ...Key) error { return ErrReadOnly }
func (r readOnly) Delete(context.Context, string, int) (int, bool, error) {
	return 0, false, ErrReadOnly
}
func (r readOnly) Ping(ctx context.Context) error { return r.s.Ping(ctx) }
func (r readOnly) Close() error                   { return r.s.Close() }
