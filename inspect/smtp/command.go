package smtp

import (
	"errors"
	"fmt"
	"strings"
)

// ErrSyntax is wrapped by every error that reports malformed protocol input:
// a command, path, parameter or reply that does not follow the grammar.
// Test for it with errors.Is; the wrapping error says what was wrong.
var ErrSyntax = errors.New("smtp: syntax error")

// The verbs [ParseCommand] recognises. Command.Verb holds one of these
// strings (the same string, not a copy) for a known verb.
const (
	VerbHELO     = "HELO"     // RFC 5321 §4.1.1.1
	VerbEHLO     = "EHLO"     // RFC 5321 §4.1.1.1
	VerbMAIL     = "MAIL"     // RFC 5321 §4.1.1.2
	VerbRCPT     = "RCPT"     // RFC 5321 §4.1.1.3
	VerbDATA     = "DATA"     // RFC 5321 §4.1.1.4
	VerbBDAT     = "BDAT"     // RFC 3030 §2
	VerbRSET     = "RSET"     // RFC 5321 §4.1.1.5
	VerbVRFY     = "VRFY"     // RFC 5321 §4.1.1.6
	VerbEXPN     = "EXPN"     // RFC 5321 §4.1.1.7
	VerbHELP     = "HELP"     // RFC 5321 §4.1.1.8
	VerbNOOP     = "NOOP"     // RFC 5321 §4.1.1.9
	VerbQUIT     = "QUIT"     // RFC 5321 §4.1.1.10
	VerbSTARTTLS = "STARTTLS" // RFC 3207 §4
	VerbAUTH     = "AUTH"     // RFC 4954 §4
	VerbXCLIENT  = "XCLIENT"  // Postfix XCLIENT extension
	VerbETRN     = "ETRN"     // RFC 1985
)

var knownVerbs = [...]string{
	VerbHELO, VerbEHLO, VerbMAIL, VerbRCPT, VerbDATA, VerbBDAT, VerbRSET,
	VerbVRFY, VerbEXPN, VerbHELP, VerbNOOP, VerbQUIT, VerbSTARTTLS,
	VerbAUTH, VerbXCLIENT, VerbETRN,
}

// Command is one SMTP command line split into verb and argument.
type Command struct {
	// Verb is the upper-cased verb. Known verbs are the Verb constants;
	// unknown verbs keep their (upper-cased) text.
	Verb string
	// Arg is everything after the verb and the single separating space,
	// with trailing spaces and tabs removed; "" if there is none.
	Arg string
}

// String returns the command line without its CRLF: "VERB" or "VERB arg".
// ParseCommand(c.String()) gives c back for every Command ParseCommand
// returned.
func (c Command) String() string {
	if c.Arg == "" {
		return c.Verb
	}
	return c.Verb + " " + c.Arg
}

// ParseCommand parses one command line (without its line terminator).
//
// The verb is a run of ASCII letters, matched case-insensitively
// (RFC 5321 §2.4), and must be followed by the end of the line or a space
// (RFC 5321 §4.1.1: the verb and its argument are separated by one space).
// An empty line, a verb with other characters in it, and any NUL or other
// control character (only TAB is allowed, and only in the argument) give an
// error wrapping [ErrSyntax]. Bytes from 0x80 up are allowed in the argument
// because SMTPUTF8 (RFC 6531) puts UTF-8 there.
//
// A known verb costs no allocation; the argument costs one.
func ParseCommand(line []byte) (Command, error) {
	if len(line) == 0 {
		return Command{}, fmt.Errorf("%w: empty command line", ErrSyntax)
	}
	i := 0
	for i < len(line) && isAlpha(line[i]) {
		i++
	}
	if i == 0 {
		return Command{}, fmt.Errorf("%w: command verb must start with a letter", ErrSyntax)
	}
	if i < len(line) && line[i] != ' ' {
		return Command{}, fmt.Errorf("%w: invalid character in command verb", ErrSyntax)
	}
	verb := lookupVerb(line[:i])
	var arg []byte
	if i < len(line) {
		arg = line[i+1:]
	}
	for _, c := range arg {
		if isCtl(c) && c != '\t' {
			return Command{}, fmt.Errorf("%w: control character 0x%02x in command argument", ErrSyntax, c)
		}
	}
	for len(arg) > 0 && (arg[len(arg)-1] == ' ' || arg[len(arg)-1] == '\t') {
		arg = arg[:len(arg)-1]
	}
	return Command{Verb: verb, Arg: string(arg)}, nil
}

// lookupVerb returns the constant for a known verb, else the verb's
// upper-cased text. v holds ASCII letters only.
func lookupVerb(v []byte) string {
	for _, k := range knownVerbs {
		if len(k) == len(v) && equalFoldASCII(v, k) {
			return k
		}
	}
	return strings.ToUpper(string(v))
}

// equalFoldASCII reports whether b equals s ignoring ASCII case; s is upper
// case.
func equalFoldASCII[T string | []byte](b T, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

func isAlpha(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// isCtl reports ASCII control characters (RFC 5234 CTL: 0x00-0x1f, 0x7f).
func isCtl(c byte) bool { return c < 0x20 || c == 0x7f }
