package sequencer

import "moat/inspect/smtp"

// The replies moat gives on its own, named once (as mox's smtp/codes.go
// names its codes): the RFC 5321 §4.2 code, the RFC 3463 enhanced code
// and the text. Replies that carry the hostname or an argument are
// functions.
var (
	replyOK              = smtp.Replyf(250, "2.0.0", "Ok")
	replyHelp            = smtp.Replyf(214, "2.0.0", "See RFC 5321")
	replyBye             = smtp.Replyf(221, "2.0.0", "Bye")
	replyStartTLS        = smtp.Replyf(220, "2.0.0", "Ready to start TLS")
	replyStartData       = smtp.Replyf(354, "", "End data with <CR><LF>.<CR><LF>")
	replyCannotVerify    = smtp.Replyf(252, "2.0.0", "Cannot verify user, but will accept message and attempt delivery")
	replyUnrecognized    = smtp.Replyf(500, "5.5.2", "Syntax error, command unrecognized")
	replyLineTooLong     = smtp.Replyf(500, "5.5.2", "Line too long")
	replyNotImplemented  = smtp.Replyf(502, "5.5.1", "Command not implemented")
	replyBadSequence     = smtp.Replyf(503, "5.5.1", "Bad sequence of commands")
	replyHeloFirst       = smtp.Replyf(503, "5.5.1", "Error: send HELO/EHLO first")
	replyNestedMail      = smtp.Replyf(503, "5.5.1", "Error: nested MAIL command")
	replyNeedMail        = smtp.Replyf(503, "5.5.1", "Error: need MAIL command")
	replyNeedRcpt        = smtp.Replyf(503, "5.5.1", "Error: need RCPT command")
	replyNoValidRcpts    = smtp.Replyf(554, "5.5.1", "Error: no valid recipients")
	replyTLSActive       = smtp.Replyf(503, "5.5.1", "Error: TLS already active")
	replyTxInProgress    = smtp.Replyf(503, "5.5.1", "Error: MAIL transaction in progress")
	replyDataAfterBDAT   = smtp.Replyf(503, "5.5.1", "Error: DATA after BDAT")
	replyBDATNotOffered  = smtp.Replyf(503, "5.5.1", "Error: BDAT without CHUNKING in EHLO")
	replyDataSyntax      = smtp.Replyf(501, "5.5.4", "Syntax: DATA")
	replyStartTLSSyntax  = smtp.Replyf(501, "5.5.4", "Syntax: STARTTLS")
	replyBadBody         = smtp.Replyf(501, "5.5.4", "Unsupported BODY type")
	replyTooManyRcpts    = smtp.Replyf(452, "4.5.3", "Too many recipients")
	replyTooBig          = smtp.Replyf(552, "5.3.4", "Message size exceeds fixed maximum message size")
	replyHeaderTooBig    = smtp.Replyf(552, "5.3.4", "Message header size exceeds limit")
	replyNoStorage       = smtp.Replyf(451, "4.3.1", "Insufficient system storage, try again later")
	replyBareLineEndings = smtp.Replyf(550, "5.5.2", "Message contains bare CR or LF line endings, use CRLF")
	replyEarlyTalker     = smtp.Replyf(554, "5.5.1", "Protocol error: talking before the greeting")
	replyUpstreamLost    = smtp.Replyf(451, "4.4.2", "Upstream mail server connection lost, try again later")

	// AUTH (RFC 4954 §4, §6; RFC 3207 §4 for 530).
	replyMustStartTLS         = smtp.Replyf(530, "5.7.0", "Must issue a STARTTLS command first")
	replyAlreadyAuthenticated = smtp.Replyf(503, "5.5.1", "Error: already authenticated")
	replyAuthSyntax           = smtp.Replyf(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]")
	replyAuthMechanism        = smtp.Replyf(504, "5.5.4", "Unrecognized authentication type")
	replyAuthUnavailable      = smtp.Replyf(454, "4.7.0", "Temporary authentication failure")
)

func replyHeloSyntax(verb string) smtp.Reply {
	return smtp.Replyf(501, "5.5.4", "Syntax: %s hostname", verb)
}

func replyMailSyntax(err error) smtp.Reply {
	return smtp.Reply{Code: 501, Enhanced: "5.5.4", Lines: []string{"Syntax: MAIL FROM:<address>"}, Err: err}
}

func replyRcptSyntax(err error) smtp.Reply {
	return smtp.Reply{Code: 501, Enhanced: "5.5.4", Lines: []string{"Syntax: RCPT TO:<address>"}, Err: err}
}

func replyBDATSyntax(err error) smtp.Reply {
	return smtp.Reply{Code: 501, Enhanced: "5.5.4", Lines: []string{"Syntax: BDAT size [LAST]"}, Err: err}
}

func replyUnsupportedOption(key string) smtp.Reply {
	return smtp.Replyf(555, "5.5.4", "Unsupported option: %s", key)
}

func replyChunkReceived(size int64) smtp.Reply {
	return smtp.Replyf(250, "2.0.0", "%d octets received", size)
}

// Replies that close the session (RFC 5321 §3.8: 421 "closing
// transmission channel"), with moat's name first.

func (q *Sequencer) replyGreeting() smtp.Reply {
	return smtp.Replyf(220, "", "%s ESMTP moat", q.cfg.Hostname)
}

func (q *Sequencer) replyTooManyCommands() smtp.Reply {
	return smtp.Replyf(421, "4.7.0", "%s Too many commands, closing connection", q.cfg.Hostname)
}

func (q *Sequencer) replyTooManyErrors() smtp.Reply {
	return smtp.Replyf(421, "4.7.0", "%s Too many errors, closing connection", q.cfg.Hostname)
}

func (q *Sequencer) replyLostSync() smtp.Reply {
	return smtp.Replyf(421, "4.5.0", "%s Lost synchronisation, closing connection", q.cfg.Hostname)
}

func (q *Sequencer) replyClosing() smtp.Reply {
	return smtp.Replyf(421, "4.5.0", "%s Closing connection", q.cfg.Hostname)
}
