package rules

import _ "embed"

//go:embed default.yaml
var defaultRules []byte

// Default compiles moat's built-in rule set (default.yaml in this
// package). Rules in it that name DNS lists are marked optional and are
// dropped when the list is not configured.
func Default(opts Options) (*Set, error) {
	return Parse("default rules (rules/default.yaml)", defaultRules, opts)
}

// DefaultYAML is the built-in rule set's source, for `moat rules default`.
func DefaultYAML() []byte { return defaultRules }
