package rules

import (
	"strings"
	"testing"
)

// The reputation facts compile at their stages (net_* from connect,
// domain_* from mail), as the README's examples write them, and a
// domain fact is refused before mail.
func TestReputationFactsCompile(t *testing.T) {
	ok := `
rules:
  - {name: BAD_NET, stage: connect, when: {net_reject_ratio: {gt: 0.5}, net_rejected: {ge: 10}}, score: 3}
  - {name: GOOD_DOMAIN, stage: mail, when: {domain_accepted: {ge: 100}, domain_reject_ratio: {lt: 0.01}}, score: -1}
  - {name: NEW_NET, stage: helo, when: {net_accepted: {exists: false}, net_tagged: {eq: 0}}, score: 1}
  - {name: TAGGED_DOMAIN, stage: data, when: {domain_tagged: {gt: 3}, domain_rejected: {le: 1}}, score: 1}
`
	if _, err := Parse("rep.yaml", []byte(ok), Options{}); err != nil {
		t.Fatal(err)
	}
	bad := "rules:\n  - {name: EARLY, stage: connect, when: {domain_rejected: {gt: 1}}, score: 1}\n"
	if _, err := Parse("rep.yaml", []byte(bad), Options{}); err == nil || !strings.Contains(err.Error(), "domain_rejected") {
		t.Errorf("domain fact at connect: %v, want an error naming it", err)
	}
}
