// Package rules is moat's YAML rule language.
//
// A rules file names rules; each runs at one stage of the SMTP session
// (connect, helo, mail, rcpt, data), tests a condition over the facts
// package inspect gathers (and the answers of DNS lists), and adds a
// score or takes an action. Thresholds map the total score to an action,
// as rspamd does: tag, tempfail, reject. Files are validated whole at
// load — unknown fields, facts used before their stage, bad regular
// expressions, duplicate names, unknown lists, meta-rule cycles — with
// file:line:column errors, and compiled once; a file with any error is
// never half-applied.
//
// See README.md for the syntax.
package rules
