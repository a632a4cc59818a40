// Package rules will hold moat's YAML rule language: loading and validating
// rules files with file:line:column errors, compiling conditions over the
// facts package inspect gathers, scores, thresholds and per-rule actions.
//
// The language arrives with the "Message inspection and the YAML rule
// language" issue; until then inspect.Engine accepts every stage.
package rules
