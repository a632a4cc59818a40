package auth

import "context"

// A stand-in for the ARC verifier (arc.go, written on another branch), so
// that this branch builds: delete this file when arc.go is merged.

type arcVerifier struct{}

func newARCVerifier(ctx context.Context, r Resolver, header []string) *arcVerifier {
	return &arcVerifier{}
}

func (a *arcVerifier) Write(body []byte) (int, error) { return len(body), nil }

func (a *arcVerifier) Close() {}

func (a *arcVerifier) Result(ctx context.Context) ARCResult { return ARCResult{Result: None} }
