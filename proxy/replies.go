package proxy

import "moat/inspect/smtp"

// The replies the proxy gives on its own, outside the session sequencer
// (inspect/sequencer/replies.go holds the SMTP dialogue's): the 421s that
// close a connection (RFC 5321 §3.8), each with moat's name first.

func replyShuttingDown(host string) smtp.Reply {
	return smtp.Replyf(421, "4.3.2", "%s Service shutting down, try again later", host)
}

func replyInternalError(host string) smtp.Reply {
	return smtp.Replyf(421, "4.3.0", "%s Internal error, closing connection", host)
}

func replyTooManyFromAddress(host string) smtp.Reply {
	return smtp.Replyf(421, "4.7.0", "%s Too many connections from your address, try again later", host)
}

func replyTooManyConnections(host string) smtp.Reply {
	return smtp.Replyf(421, "4.7.0", "%s Too many connections, try again later", host)
}

func replySessionTimeLimit(host string) smtp.Reply {
	return smtp.Replyf(421, "4.4.2", "%s Session time limit exceeded, closing connection", host)
}

func replyTimeout(host string) smtp.Reply {
	return smtp.Replyf(421, "4.4.2", "%s Timeout exceeded, closing connection", host)
}
