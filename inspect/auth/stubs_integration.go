package auth

// TEMPORARY: the integration's view of the helpers' APIs, replaced by
// their code at merge.

import (
	"context"
)

type MessageOptions struct {
	MaxSignatures  int
	MaxHeaderBytes int
}

type Message struct{}

type HeaderSpan struct {
	Start, End int64
	Value      string
}

type MessageResult struct {
	DKIM        []DKIMResult
	ARC         ARCResult
	From        []string
	AuthResults []HeaderSpan
	HeaderBytes int64
}

func NewMessage(ctx context.Context, r Resolver, opts MessageOptions) *Message { return &Message{} }
func (m *Message) Write(p []byte) (int, error)                                 { return len(p), nil }
func (m *Message) Close()                                                      {}
func (m *Message) Wait(ctx context.Context) MessageResult                      { return MessageResult{ARC: ARCResult{Result: None}} }

