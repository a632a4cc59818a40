package inspect

// NOTE (lead): temporary stand-ins so the engine compiles while the
// content parser is written; the parser's author replaces this file.

// ContentLimits bound the work ParseContent does on hostile input.
type ContentLimits struct {
	MaxParts, MaxNesting, MaxHeaderFields, MaxURLs int
	MaxTextBytes                                   int64
}

// DefaultContentLimits are the limits used when none are configured.
func DefaultContentLimits() ContentLimits {
	return ContentLimits{MaxParts: 1000, MaxNesting: 50, MaxHeaderFields: 1000, MaxURLs: 1000, MaxTextBytes: 2 << 20}
}

// ParseContent parses a message as deep as depth asks.
func ParseContent(r ReaderAt, size int64, depth Depth, limits ContentLimits) *Content {
	return &Content{Depth: depth}
}
