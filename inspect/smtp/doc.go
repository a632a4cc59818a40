// Package smtp holds the SMTP wire grammar that moat's live proxy and its
// offline capture analyser share: reading lines, parsing commands and their
// arguments, parsing and writing replies, and the DATA dot-stuffing codec.
// Both front ends parse with exactly this code, so a message looks the same
// to the rules whether it arrived on a socket or in a pcap file.
//
// # The conversation
//
// SMTP (RFC 5321) is a line-based, turn-taking protocol. The client sends a
// command — a verb such as EHLO, MAIL, RCPT or DATA, optionally followed by
// a space and an argument — and the server answers with a reply: a
// three-digit code and human-readable text. Lines end with CR LF (RFC 5321
// §2.3.8). Many clients and some attackers end lines with a bare LF instead;
// [ReadLine] accepts both and reports which one it saw, so the difference
// becomes a fact for the rules instead of a parsing failure.
//
// Every input is bounded. A line longer than the caller's limit is read to
// its end and thrown away, and [ErrLineTooLong] is returned, so the next
// command is still found where it starts.
//
// # Commands
//
// [ParseCommand] splits a command line into a verb and its argument. Verbs
// are case-insensitive (RFC 5321 §2.4); the known ones come back as the
// package's Verb constants so the command loop does not allocate.
//
// MAIL FROM and RCPT TO carry a path in angle brackets and optional ESMTP
// parameters ([ParseMailArg], [ParseRcptArg]). A path is a mailbox —
// local-part@domain — or, for MAIL only, the null path "<>" used by bounces
// (RFC 5321 §4.5.5). The local part is either a dot-string of ordinary
// characters or a quoted string; the domain is a host name or an address
// literal such as "[192.0.2.1]" or "[IPv6:2001:db8::1]". With SMTPUTF8
// (RFC 6531) both may contain UTF-8. Old "source routes" ("<@a,@b:u@c>")
// are still accepted and ignored, as RFC 5321 §4.1.2 and Appendix C ask.
// Parameters such as SIZE (RFC 1870), BODY (RFC 6152), SMTPUTF8 (RFC 6531)
// and the DSN parameters RET, ENVID, NOTIFY and ORCPT (RFC 3461) follow the
// path as KEY or KEY=VALUE words. Paths and parameters keep their wire form,
// so the proxy can replay them upstream byte for byte with [FormatPathArg].
//
// # Replies
//
// A reply ([Reply]) is one or more lines that all carry the same code;
// every line but the last has a "-" after the code, the last a space
// (RFC 5321 §4.2). The first digit says how things went: 2 success,
// 3 "go on", 4 try again later, 5 permanent failure. Servers that announce
// ENHANCEDSTATUSCODES also put a code of the form class.subject.detail,
// such as "5.1.1" (unknown user), at the start of the text (RFC 2034,
// RFC 3463). A Reply also carries a diagnostic error that is logged but
// never sent, so wire text and internal causes stay apart.
//
// # Message data
//
// After DATA and the server's 354, the client sends the message and ends it
// with a line holding a single dot: the five bytes CR LF "." CR LF. A line
// of the message that itself starts with a dot is sent with one extra dot
// ("dot-stuffing", RFC 5321 §4.5.2), which the receiver removes.
//
// Receivers that also accept LF "." LF or other near-misses as the end can
// be tricked into seeing two messages where the sending server saw one
// ("SMTP smuggling"). [DataReader] therefore ends the message only at the
// exact CR LF "." CR LF sequence and passes bare CR and bare LF through
// as data; [LineEndings], watching what it reads out, records them as
// facts. [DataWriter] writes the message on to the next server in one
// canonical form — every line ending CR LF and every leading dot doubled —
// so whatever reached moat cannot be re-read differently by the server
// behind it.
package smtp
