package state

import (
	"log/slog"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	// go-redis logs every failed dial; the Redis-down tests make many.
	RedisLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	os.Exit(m.Run())
}
