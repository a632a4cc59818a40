# moat — make targets. `make test` is the one command CI runs.

GO      ?= go
VERSION ?= dev
FUZZTIME ?= 30s

.PHONY: all build test deps vet bench fuzz clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -ldflags "-X main.version=$(VERSION)" -o bin/moat ./cmd/moat

# Installs the Debian packages the integration tests use (as root), then
# vets and runs every test with the race detector.
test: deps vet
	$(GO) test -race -count=1 -timeout 30m ./...

deps:
	@bash scripts/install-test-deps.sh

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet ./...
	CGO_ENABLED=0 $(GO) build ./...

# The Go micro-benchmarks, then the end-to-end benchmark against the TCP
# floor and Haraka, then moat analyze against tshark on a recorded capture
# (bench/e2e; results and how to read them in BENCHMARKS.md).
# BENCH_E2E_FLAGS=-quick sends a tenth of the messages; -haraka=false
# leaves Haraka (and npm) out.
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...
	@case "$(BENCH_E2E_FLAGS)" in *-haraka=false*) ;; *) test -d bench/haraka/node_modules/Haraka || (cd bench/haraka && npm ci --no-audit --no-fund --loglevel=error) ;; esac
	$(GO) test -tags e2ebench -count=1 -v -run '^TestEndToEnd$$' -timeout 4h ./bench/e2e -args $(BENCH_E2E_FLAGS)
	$(GO) test -tags e2ebench -count=1 -v -run '^TestAnalyzer$$' -timeout 30m ./bench/e2e
	$(GO) test -tags e2ebench -count=1 -v -run '^TestAuthEndToEnd$$' -timeout 1h ./bench/e2e -args $(BENCH_E2E_FLAGS)
	$(GO) test -tags e2ebench -count=1 -v -run '^TestStateEndToEnd$$' -timeout 1h ./bench/e2e -args $(BENCH_E2E_FLAGS)
	$(GO) test -tags e2ebench -count=1 -v -run '^TestClassifierEndToEnd$$' -timeout 1h ./bench/e2e -args $(BENCH_E2E_FLAGS)

# Runs every fuzz target for FUZZTIME each, one after the other.
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

clean:
	rm -rf bin
