package inspect

import (
	"context"
)

// Engine judges sessions stage by stage. It is safe for concurrent use by
// any number of sessions.
//
// Call order for one session: Connect, then Helo (again for every HELO or
// EHLO), then for each transaction Mail, Rcpt once per recipient, Data;
// finally End. The methods of one session are called from one goroutine;
// different sessions run concurrently.
//
// For now the engine accepts every stage; the rules language and the DNS
// blocklists plug in here, so that the proxy and the capture analyser share
// exactly one judgement.
type Engine struct{}

// Config configures an Engine. It is empty until rules and blocklists join.
type Config struct{}

// New builds an Engine from cfg.
func New(cfg Config) (*Engine, error) {
	return &Engine{}, nil
}

// Connect judges a new connection: s.Client and s.Start are set.
func (e *Engine) Connect(ctx context.Context, s *Session) Verdict {
	return Verdict{Action: Accept}
}

// Helo judges the HELO/EHLO greeting: s.HeloVerb and s.Helo are set.
func (e *Engine) Helo(ctx context.Context, s *Session) Verdict {
	return Verdict{Action: Accept}
}

// Mail judges the envelope sender of a new transaction.
func (e *Engine) Mail(ctx context.Context, s *Session, t *Transaction) Verdict {
	return Verdict{Action: Accept}
}

// Rcpt judges one recipient before it is added to t.Rcpts.
func (e *Engine) Rcpt(ctx context.Context, s *Session, t *Transaction, r Recipient) Verdict {
	return Verdict{Action: Accept}
}

// Data judges the message of a transaction.
func (e *Engine) Data(ctx context.Context, s *Session, t *Transaction, m *Message) Verdict {
	return Verdict{Action: Accept}
}

// End releases what the engine holds for session s. It is called once,
// when the session is over.
func (e *Engine) End(s *Session) {}
