package state

import "math"

// The algorithms, in one place for the embedded store; the Redis store's
// Lua scripts (redis.go) do the same arithmetic in microseconds where
// these work in nanoseconds.

// gcra decides one Allow by the generic cell rate algorithm. A rate key
// stores its theoretical arrival time (TAT) as base + off: base the whole
// clock reading of its last update, off a float offset from it. Keeping
// the float part small (at most burst·T past base) keeps it exact enough
// when T = period/events is not a whole number of clock units.
//
// rel is TAT − now, at least 0 (an idle key is a full burst). The request
// fits when rel + n·T − burst·T ≤ 0; then the new TAT is now + rel + n·T.
// eps absorbs float rounding, so that burst·T and T+T+...+T compare equal.
func gcra(exists bool, base int64, off float64, now int64, t, tau float64, n int) (ok bool, retryAfter float64, newOff float64) {
	rel := 0.0
	if exists {
		rel = math.Max(float64(base-now)+off, 0)
	}
	newRel := rel + float64(n)*t
	if allowAt := newRel - tau; allowAt > t*1e-9 {
		return false, math.Ceil(allowAt), 0
	}
	return true, 0, newRel
}

// slide moves a sliding-window counter to the fixed window idx: the
// counts of the window it was in become the previous window's when that
// was the one just before, and are forgotten when older.
func slide(exists bool, idx0, cur0, prev0, idx int64) (cur, prev int64) {
	switch {
	case !exists:
		return 0, 0
	case idx0 == idx:
		return cur0, prev0
	case idx0 == idx-1:
		return 0, cur0
	}
	return 0, 0
}

// estimate is the sliding-window count: the current fixed window's count
// and the previous one's weighted by the share of the previous window
// that the sliding window [now−window, now] still covers. elapsed is how
// far into the current fixed window now is.
func estimate(cur, prev int64, elapsed, window float64) int64 {
	return cur + int64(math.Round(float64(prev)*(window-elapsed)/window))
}
