package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"moat/internal/state"
)

const stateUsage = `Usage:
  moat state get PATTERN [--config FILE] [--http ADDR] [--max N] [--format table|json]
  moat state del PATTERN [--config FILE] [--http ADDR] [--max N]

Shows or deletes the entries of the running moat's state store whose keys
match PATTERN, a glob (* ? [abc], \ quotes) over the key without its
"moat:v1:" prefix — "grey:*" is every greylisting entry, and
"grey:t:192.0.2.0%2F24:*" those of one network. Deleting a greylist entry
un-greylists that sender. It asks the moat serve of the configuration
through its HTTP listener (http.listen, or --http), which works for the
embedded store (a file only the running moat may open) and for Redis
alike. At most --max entries (default 100) are shown or deleted; run it
again for more.

Exits 0 on success, 1 when moat could not be asked, 2 for a usage error.
`

func cmdState(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("moat state", stateUsage, stderr)
	configPath := fs.String("config", "", "configuration `FILE` of the running moat (for http.listen)")
	httpAddr := fs.String("http", "", "the running moat's HTTP listener `ADDR` (default: the configuration's http.listen)")
	maxN := fs.Int("max", 100, "at most `N` entries")
	format := fs.String("format", "table", "output of get: table or json")
	if len(args) == 0 || (args[0] != "get" && args[0] != "del") {
		if len(args) > 0 && isHelp(args[0]) {
			printUsage(fs, stdout)
			return 0
		}
		fs.Usage()
		return exitUsage
	}
	verb := args[0]
	patterns, ok, code := parseSubcommand(fs, args, verb, stdout)
	if !ok {
		return code
	}
	if len(patterns) != 1 || patterns[0] == "" {
		fmt.Fprintf(stderr, "moat state %s: want one key pattern, like 'grey:*'\n", verb)
		fs.Usage()
		return exitUsage
	}
	if *maxN < 1 || *maxN > 100000 {
		fmt.Fprintf(stderr, "moat state: --max %d is not between 1 and 100000\n", *maxN)
		return exitUsage
	}
	if *format != "table" && *format != "json" {
		fmt.Fprintf(stderr, "moat state: --format %q is not table or json\n", *format)
		return exitUsage
	}
	addr := *httpAddr
	if addr == "" {
		cfg, err := loadConfig(*configPath)
		if err != nil {
			return exitCode(stderr, err)
		}
		if cfg.HTTP.Listen == "off" {
			fmt.Fprintln(stderr, "moat state: http.listen is off in the configuration; name the listener with --http")
			return exitUsage
		}
		addr = cfg.HTTP.Listen
	}
	q := url.Values{"pattern": {patterns[0]}, "max": {strconv.Itoa(*maxN)}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	method, path := http.MethodGet, "/state"
	if verb == "del" {
		method, path = http.MethodPost, "/state/delete"
	}
	req, _ := http.NewRequestWithContext(ctx, method, "http://"+addr+path+"?"+q.Encode(), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "moat state: is moat serve running with http.listen %s? %v\n", addr, err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "moat state: %s\n", strings.TrimSpace(string(body)))
		return 1
	}
	if verb == "del" {
		var r stateDeleted
		if err := json.Unmarshal(body, &r); err != nil {
			fmt.Fprintf(stderr, "moat state: bad answer: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "deleted %d entries%s\n", r.Deleted, moreNote(r.More))
		return 0
	}
	if *format == "json" {
		stdout.Write(body)
		return 0
	}
	var r stateListing
	if err := json.Unmarshal(body, &r); err != nil {
		fmt.Fprintf(stderr, "moat state: bad answer: %v\n", err)
		return 1
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tKIND\tVALUE\tAGE\tEXPIRES IN")
	for _, e := range r.Entries {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Key, e.Kind, e.Value, e.Age, e.TTL)
	}
	tw.Flush()
	fmt.Fprintf(stdout, "%d entries%s\n", len(r.Entries), moreNote(r.More))
	return 0
}

func moreNote(more bool) string {
	if more {
		return " (there may be more: run it again)"
	}
	return ""
}

// stateEntry is one entry as /state shows it.
type stateEntry struct {
	Key   string `json:"key"`
	Kind  string `json:"kind"`
	Value string `json:"value,omitempty"`
	Count int64  `json:"count,omitempty"`
	Age   string `json:"age,omitempty"`
	TTL   string `json:"ttl"`
}

type stateListing struct {
	Entries []stateEntry `json:"entries"`
	More    bool         `json:"more"`
}

type stateDeleted struct {
	Deleted int  `json:"deleted"`
	More    bool `json:"more"`
}

// handleState serves the state store on the operator's HTTP listener:
// GET /state?pattern=P&max=N lists entries, POST /state/delete deletes
// them (POST: a link or a prefetching browser must not delete). Without a
// store both answer 404.
func handleState(mux *http.ServeMux, store state.Store) {
	args := func(w http.ResponseWriter, r *http.Request) (string, int, bool) {
		if store == nil {
			http.Error(w, "no state store configured (the state section of the configuration)", http.StatusNotFound)
			return "", 0, false
		}
		pattern := r.URL.Query().Get("pattern")
		n, err := strconv.Atoi(r.URL.Query().Get("max"))
		if pattern == "" || err != nil || n < 1 || n > 100000 {
			http.Error(w, "want ?pattern=GLOB&max=N (1..100000)", http.StatusBadRequest)
			return "", 0, false
		}
		return pattern, n, true
	}
	// handle serves one operation: its method only, the arguments
	// checked, the store bounded in time, the answer as JSON.
	handle := func(path, method string, do func(ctx context.Context, pattern string, n int) (any, error)) {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			if r.Method != method {
				http.Error(w, method+" only", http.StatusMethodNotAllowed)
				return
			}
			pattern, n, ok := args(w, r)
			if !ok {
				return
			}
			ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
			defer cancel()
			out, err := do(ctx, pattern, n)
			if err != nil {
				http.Error(w, "state store: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(out)
		})
	}
	handle("/state", http.MethodGet, func(ctx context.Context, pattern string, n int) (any, error) {
		es, more, err := store.Scan(ctx, pattern, n)
		if err != nil {
			return nil, err
		}
		out := stateListing{Entries: []stateEntry{}, More: more}
		for _, e := range es {
			se := stateEntry{Key: e.Key, Kind: fmt.Sprint(e.Kind), Value: printable(e.Value), Count: e.Count,
				TTL: e.TTL.Round(time.Second).String()}
			if e.Age > 0 {
				se.Age = e.Age.Round(time.Second).String()
			}
			out.Entries = append(out.Entries, se)
		}
		return out, nil
	})
	handle("/state/delete", http.MethodPost, func(ctx context.Context, pattern string, n int) (any, error) {
		deleted, more, err := store.Delete(ctx, pattern, n)
		return stateDeleted{Deleted: deleted, More: more}, err
	})
}

// printable shows a stored value as text, escaping what is not.
func printable(b []byte) string {
	s := strconv.Quote(string(b))
	return s[1 : len(s)-1]
}
