package state

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// The Redis store. Every entry is a hash, so that one key carries all its
// fields and expires as one:
//
//	value:   v (the value), t (first-set time, µs of the server's clock)
//	counter: w (fixed window index), c (its count), p (the previous
//	         window's count)
//	rate:    b (base time, µs), o (TAT − base, µs, a float)
//
// Each operation is one Lua script, so it is atomic and costs one round
// trip (EVALSHA; EVAL when the server has lost the script, after a
// restart or SCRIPT FLUSH). The scripts read the time with TIME, the
// server's clock: instances whose clocks disagree still share one limit.
// (Redis ≥ 5 replicates a script's effects, not the script, so TIME in a
// script that writes is allowed.)

// prelude reads the server clock in microseconds. Lua numbers are doubles:
// exact for integers up to 2^53 µs, the year 2255.
const prelude = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
`

// allowScript: KEYS[1] the rate key; ARGV T (the emission interval, µs),
// tau (burst·T, µs), n. Returns {1, 0} when admitted, {0, µs to wait}
// when not. The arithmetic is gcra's in algo.go.
const allowScript = prelude + `
local tt, tau, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local v = redis.call('HMGET', KEYS[1], 'b', 'o')
local rel = 0
if v[1] then
	rel = (tonumber(v[1]) - now) + tonumber(v[2])
	if rel < 0 then rel = 0 end
elseif redis.call('EXISTS', KEYS[1]) == 1 then
	return redis.error_reply('WRONGKIND not a rate')
end
local newrel = rel + n * tt
local allowat = newrel - tau
if allowat > tt * 1e-9 then
	return {0, math.ceil(allowat)}
end
if n > 0 then
	redis.call('HSET', KEYS[1], 'b', string.format('%.0f', now), 'o', string.format('%.17g', newrel))
	redis.call('PEXPIRE', KEYS[1], string.format('%.0f', math.ceil(newrel / 1000)))
end
return {1, 0}
`

// counterScript: KEYS[1] the counter; ARGV window (µs), n (0 only reads).
// Returns {current count, previous count, µs into the current window}.
const counterScript = prelude + `
local w, n = tonumber(ARGV[1]), tonumber(ARGV[2])
local idx = math.floor(now / w)
local v = redis.call('HMGET', KEYS[1], 'w', 'c', 'p')
local cur, prev = 0, 0
if v[1] then
	local i0 = tonumber(v[1])
	if i0 == idx then
		cur, prev = tonumber(v[2]), tonumber(v[3])
	elseif i0 == idx - 1 then
		prev = tonumber(v[2])
	end
elseif redis.call('EXISTS', KEYS[1]) == 1 then
	return redis.error_reply('WRONGKIND not a counter')
end
if n > 0 then
	cur = cur + n
	redis.call('HSET', KEYS[1], 'w', string.format('%.0f', idx), 'c', string.format('%.0f', cur), 'p', string.format('%.0f', prev))
	redis.call('PEXPIREAT', KEYS[1], string.format('%.0f', math.ceil((idx + 2) * w / 1000)))
end
return {cur, prev, now - idx * w}
`

// setNXScript: KEYS[1]; ARGV value, TTL (ms). Returns 1 when set.
const setNXScript = `
if redis.call('EXISTS', KEYS[1]) == 1 then
	if redis.call('HEXISTS', KEYS[1], 't') == 0 then
		return redis.error_reply('WRONGKIND not a value')
	end
	return 0
end
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'v', ARGV[1], 't', t[1] .. string.format('%06d', tonumber(t[2])))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
`

// setScript: KEYS[1]; ARGV value, TTL (ms). Keeps the first-set time.
const setScript = `
local t = redis.call('TIME')
local first = redis.call('HGET', KEYS[1], 't')
if not first then
	if redis.call('EXISTS', KEYS[1]) == 1 then
		return redis.error_reply('WRONGKIND not a value')
	end
	first = t[1] .. string.format('%06d', tonumber(t[2]))
end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 't', first)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
`

// getScript: KEYS[1]. Returns {value, age in µs}, or nil.
const getScript = `
local v = redis.call('HMGET', KEYS[1], 'v', 't')
if not v[2] then
	if redis.call('EXISTS', KEYS[1]) == 1 then
		return redis.error_reply('WRONGKIND not a value')
	end
	return false
end
` + prelude + `
return {v[1], now - tonumber(v[2])}
`

// entriesScript: KEYS the keys Scan found. Returns, per key, {fields as
// HGETALL gives them, PTTL in ms}, and last the server time in µs as a
// string. A key gone since SCAN has PTTL −2.
const entriesScript = prelude + `
local out = {}
for i, k in ipairs(KEYS) do
	if redis.call('TYPE', k).ok == 'hash' then
		out[i] = {redis.call('HGETALL', k), redis.call('PTTL', k)}
	else
		out[i] = {{}, -2}
	end
end
out[#KEYS + 1] = string.format('%.0f', now)
return out
`

type redisStore struct {
	c       *redis.Client
	m       *metrics
	allow   *redis.Script
	counter *redis.Script
	setNX   *redis.Script
	set     *redis.Script
	get     *redis.Script
	entries *redis.Script
}

func openRedis(cfg RedisConfig, m *metrics) (*redisStore, error) {
	c := redis.NewClient(&redis.Options{
		Addr:     cfg.Address,
		Password: cfg.Password,
		DB:       cfg.DB,
		// RESP2 and no client identity or maintenance notifications:
		// nothing moat uses, and each would cost a round trip on every
		// new connection.
		Protocol:                 2,
		DisableIdentity:          true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
		DialTimeout:              cfg.DialTimeout,
		ReadTimeout:              cfg.ReadTimeout,
		WriteTimeout:             cfg.ReadTimeout,
		ContextTimeoutEnabled:    true,
		PoolSize:                 cfg.PoolSize,
		PoolTimeout:              cfg.ReadTimeout,
		// No retries, one dial attempt: a store that does not answer
		// within the timeouts is down for this operation, and the
		// caller fails open at once rather than holding the SMTP
		// session. A retry could also count an Allow or Add twice.
		MaxRetries:    -1,
		DialerRetries: 1,
	})
	s := &redisStore{
		c:       c,
		m:       m,
		allow:   redis.NewScript(allowScript),
		counter: redis.NewScript(counterScript),
		setNX:   redis.NewScript(setNXScript),
		set:     redis.NewScript(setScript),
		get:     redis.NewScript(getScript),
		entries: redis.NewScript(entriesScript),
	}
	c.AddHook(roundTripHook{m})
	return s, nil
}

// roundTripHook counts requests sent: one per command, one per pipeline.
type roundTripHook struct{ m *metrics }

func (h roundTripHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h roundTripHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.m.roundTrips.Inc()
		return next(ctx, cmd)
	}
}

func (h roundTripHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.m.roundTrips.Inc()
		return next(ctx, cmds)
	}
}

// redisErr maps a go-redis error: a script's WRONGKIND reply to ErrKind,
// anything else (connection refused, timeouts, a server error reply) to
// ErrUnavailable.
func redisErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if strings.HasPrefix(err.Error(), "WRONGKIND") {
		return fmt.Errorf("%w: %s: %v", ErrKind, op, err)
	}
	return unavailable(op, err)
}

// micros formats a duration in microseconds, as the scripts count.
func micros(d float64) string { return strconv.FormatFloat(d/1e3, 'g', -1, 64) }

func (s *redisStore) Allow(ctx context.Context, key Key, rate Rate, burst, n int) (bool, time.Duration, error) {
	t := rate.interval()
	r, err := s.allow.Run(ctx, s.c, []string{key.String()}, micros(t), micros(float64(burst)*t), n).Int64Slice()
	if err != nil {
		return false, 0, redisErr("allow", err)
	}
	if len(r) != 2 {
		return false, 0, unavailable("allow", fmt.Errorf("script returned %d values", len(r)))
	}
	return r[0] == 1, time.Duration(r[1]) * time.Microsecond, nil
}

func (s *redisStore) Add(ctx context.Context, key Key, n int64, window time.Duration) (int64, error) {
	return s.count(ctx, "add", key, n, window)
}

func (s *redisStore) Count(ctx context.Context, key Key, window time.Duration) (int64, error) {
	return s.count(ctx, "count", key, 0, window)
}

func (s *redisStore) count(ctx context.Context, op string, key Key, n int64, window time.Duration) (int64, error) {
	w := window.Microseconds()
	r, err := s.counter.Run(ctx, s.c, []string{key.String()}, w, n).Int64Slice()
	if err != nil {
		return 0, redisErr(op, err)
	}
	if len(r) != 3 {
		return 0, unavailable(op, fmt.Errorf("script returned %d values", len(r)))
	}
	return estimate(r[0], r[1], float64(r[2]), float64(w)), nil
}

func (s *redisStore) SetNX(ctx context.Context, key Key, value []byte, ttl time.Duration) (bool, error) {
	r, err := s.setNX.Run(ctx, s.c, []string{key.String()}, value, ttl.Milliseconds()).Int64()
	if err != nil {
		return false, redisErr("setnx", err)
	}
	return r == 1, nil
}

func (s *redisStore) Set(ctx context.Context, key Key, value []byte, ttl time.Duration) error {
	return redisErr("set", s.set.Run(ctx, s.c, []string{key.String()}, value, ttl.Milliseconds()).Err())
}

func (s *redisStore) Get(ctx context.Context, key Key) ([]byte, time.Duration, bool, error) {
	r, err := s.get.Run(ctx, s.c, []string{key.String()}).Slice()
	if errors.Is(err, redis.Nil) {
		return nil, 0, false, nil
	}
	if err != nil {
		return nil, 0, false, redisErr("get", err)
	}
	if len(r) != 2 {
		return nil, 0, false, unavailable("get", fmt.Errorf("script returned %d values", len(r)))
	}
	v, ok1 := r[0].(string)
	age, ok2 := r[1].(int64)
	if !ok1 || !ok2 {
		return nil, 0, false, unavailable("get", fmt.Errorf("script returned %T %T", r[0], r[1]))
	}
	return []byte(v), time.Duration(age) * time.Microsecond, true, nil
}

// scanPage is the COUNT hint of one SCAN: keys examined per round trip.
const scanPage = 512

// scan runs SCAN over the keys that match pattern and calls fn with each
// page's keys, new ones only (SCAN may return a key twice), until the
// keyspace is done, fn returns false or ctx is done. It reports whether
// it stopped early.
func (s *redisStore) scan(ctx context.Context, pattern string, fn func(keys []string) (bool, error)) (stopped bool, err error) {
	seen := map[string]bool{}
	var cursor uint64
	for {
		if ctx.Err() != nil {
			return true, nil
		}
		keys, next, err := s.c.Scan(ctx, cursor, Prefix+pattern, scanPage).Result()
		if err != nil {
			return false, err
		}
		fresh := keys[:0]
		for _, k := range keys {
			if !seen[k] {
				seen[k] = true
				fresh = append(fresh, k)
			}
		}
		if len(fresh) > 0 {
			goOn, err := fn(fresh)
			if err != nil {
				return false, err
			}
			if !goOn {
				return true, nil
			}
		}
		if next == 0 {
			return false, nil
		}
		cursor = next
	}
}

// isCtxErr tells a deadline of the caller's from a store failure: Scan
// and Delete out of time return what they have.
func isCtxErr(ctx context.Context, err error) bool {
	return ctx.Err() != nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled))
}

func (s *redisStore) Scan(ctx context.Context, pattern string, max int) (entries []Entry, more bool, err error) {
	more, err = s.scan(ctx, pattern, func(keys []string) (bool, error) {
		if room := max - len(entries); len(keys) > room {
			keys = keys[:room]
		}
		got, err := s.entriesOf(ctx, keys)
		entries = append(entries, got...)
		return len(entries) < max, err
	})
	if isCtxErr(ctx, err) {
		return entries, true, nil
	}
	if err != nil {
		return nil, false, redisErr("scan", err)
	}
	return entries, more, nil
}

func (s *redisStore) entriesOf(ctx context.Context, keys []string) ([]Entry, error) {
	r, err := s.entries.Run(ctx, s.c, keys).Slice()
	if err != nil {
		return nil, err
	}
	if len(r) != len(keys)+1 {
		return nil, fmt.Errorf("entries script returned %d values for %d keys", len(r), len(keys))
	}
	nowStr, _ := r[len(keys)].(string)
	now, _ := strconv.ParseInt(nowStr, 10, 64)
	var out []Entry
	for i, k := range keys {
		item, _ := r[i].([]any)
		if len(item) != 2 {
			continue
		}
		flat, _ := item[0].([]any)
		pttl, _ := item[1].(int64)
		if pttl < 0 {
			continue // gone since SCAN
		}
		f := map[string]string{}
		for j := 0; j+1 < len(flat); j += 2 {
			name, _ := flat[j].(string)
			val, _ := flat[j+1].(string)
			f[name] = val
		}
		e := Entry{Key: k, TTL: time.Duration(pttl) * time.Millisecond}
		switch {
		case f["t"] != "":
			t, _ := strconv.ParseInt(f["t"], 10, 64)
			e.Kind, e.Value, e.Age = KindValue, []byte(f["v"]), time.Duration(now-t)*time.Microsecond
		case f["w"] != "":
			e.Kind = KindCounter
			e.Count, _ = strconv.ParseInt(f["c"], 10, 64)
		case f["b"] != "":
			e.Kind = KindRate
		default:
			continue // not moat's
		}
		out = append(out, e)
	}
	return out, nil
}

// Remove is one DEL of every key: atomic, one round trip. (Not UNLINK:
// the entries are small, and DEL frees them before the reply.)
func (s *redisStore) Remove(ctx context.Context, keys ...Key) error {
	if len(keys) == 0 {
		return nil
	}
	ks := make([]string, len(keys))
	for i, k := range keys {
		ks[i] = k.String()
	}
	return redisErr("remove", s.c.Del(ctx, ks...).Err())
}

func (s *redisStore) Delete(ctx context.Context, pattern string, max int) (deleted int, more bool, err error) {
	more, err = s.scan(ctx, pattern, func(keys []string) (bool, error) {
		if room := max - deleted; len(keys) > room {
			keys = keys[:room]
		}
		n, err := s.c.Unlink(ctx, keys...).Result()
		deleted += int(n)
		return deleted < max, err
	})
	if isCtxErr(ctx, err) {
		return deleted, true, nil
	}
	if err != nil {
		return deleted, false, redisErr("delete", err)
	}
	return deleted, more, nil
}

func (s *redisStore) Ping(ctx context.Context) error {
	return redisErr("ping", s.c.Ping(ctx).Err())
}

func (s *redisStore) Close() error { return s.c.Close() }

// RedisLogger sends go-redis's own log lines — a dial failure per attempt
// while Redis is down, among others — to l at debug level: the store's
// errors and metrics already report an outage, once per operation.
// go-redis has one logger per process, so cmd/moat sets it once, at
// start; without it go-redis writes to standard error.
func RedisLogger(l *slog.Logger) { redis.SetLogger(redisLog{l}) }

type redisLog struct{ l *slog.Logger }

func (r redisLog) Printf(ctx context.Context, format string, v ...any) {
	r.l.DebugContext(ctx, "redis client", "msg", fmt.Sprintf(format, v...))
}
