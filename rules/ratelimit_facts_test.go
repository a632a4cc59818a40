package rules

import (
	"strings"
	"testing"

	"moat/inspect"
)

// {rate_limit: NAME} names a configured limit counted no later than the
// rule's stage.
func TestRateLimitCondition(t *testing.T) {
	opts := Options{RateLimits: map[string]inspect.Stage{"conns": inspect.StageConnect, "msgs": inspect.StageData}}
	good := "rules:\n  - {name: A, stage: connect, when: {rate_limit: conns}, action: tempfail}\n  - {name: B, stage: data, when: {rate_limit: msgs}, score: 2}\n"
	if _, err := Parse("r.yaml", []byte(good), opts); err != nil {
		t.Fatal(err)
	}
	for src, want := range map[string]string{
		"rules:\n  - {name: A, stage: data, when: {rate_limit: nope}, score: 1}\n":   `unknown rate limit "nope"`,
		"rules:\n  - {name: A, stage: rcpt, when: {rate_limit: msgs}, score: 1}\n":   "counted at the data stage",
		"rules:\n  - {name: A, stage: data, when: {rate_limit: [msgs]}, score: 1}\n": "rate_limit",
	} {
		if _, err := Parse("r.yaml", []byte(src), opts); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %s", src, err, want)
		}
	}
}
