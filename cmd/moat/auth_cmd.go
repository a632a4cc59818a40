package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"moat/dnsbl"
	"moat/inspect"
	"moat/inspect/auth"
	"moat/inspect/smtp"
)

const authUsage = `Usage:
  moat auth check [--config FILE] [--resolver ADDR] --ip IP --helo NAME
                  --mail-from ADDR [--format table|json] MESSAGE.eml

Checks a message's sender authentication exactly as moat serve does —
SPF for the MAIL FROM and HELO identities, every DKIM signature, the ARC
chain and DMARC for the From: domain — and prints every result with the
DNS records it used, the Authentication-Results field moat would add and
what the rules would do. It answers "why was my mail refused?". The
DNS is asked through --resolver, else dnsbl.resolver of the
configuration, else the system's resolv.conf. MESSAGE.eml "-" reads
standard input.

Exits 0 when the message would be accepted or tagged, 1 when refused,
2 for a usage or configuration error.
`

type authCheckOutput struct {
	Results       *auth.Results `json:"results"`
	AuthResults   string        `json:"authentication_results"`
	Action        string        `json:"action"`
	Reply         string        `json:"reply,omitempty"`
	Score         float64       `json:"score"`
	Rules         []string      `json:"rules,omitempty"`
	DMARCDecision string        `json:"dmarc_action"`
}

func cmdAuth(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("moat auth check", authUsage, stderr)
	configPath := fs.String("config", "", "configuration `FILE` (default: built-in defaults)")
	resolver := fs.String("resolver", "", "DNS resolver `ADDR` (IP or IP:port) instead of the configuration's")
	ipFlag := fs.String("ip", "", "the client's `IP` address")
	helo := fs.String("helo", "", "the client's HELO/EHLO `NAME`")
	mailFrom := fs.String("mail-from", "", "the envelope sender `ADDR` (\"\" or <> for the null sender)")
	format := fs.String("format", "table", "output: table or json")
	files, ok, code := parseSubcommand(fs, args, "check", stdout)
	if !ok {
		return code
	}
	usageErr := func(msg string) int {
		fmt.Fprintln(stderr, "moat auth check: "+msg)
		fs.Usage()
		return exitUsage
	}
	if len(files) != 1 {
		return usageErr("want one message file (or - for standard input)")
	}
	ip, err := netip.ParseAddr(*ipFlag)
	if err != nil {
		return usageErr(fmt.Sprintf("--ip %q is not an IP address", *ipFlag))
	}
	if *helo == "" {
		return usageErr("--helo is required: the name the client greeted with")
	}
	from, _, err := smtp.ParseMailArg("FROM:<" + strings.Trim(*mailFrom, "<>") + ">")
	if err != nil {
		return usageErr(fmt.Sprintf("--mail-from %q: %v", *mailFrom, err))
	}
	if *format != "table" && *format != "json" {
		return usageErr(fmt.Sprintf("--format %q is not table or json", *format))
	}
	msg, err := readMessageFile(files[0])
	if err != nil {
		fmt.Fprintf(stderr, "moat auth check: %v\n", err)
		return exitUsage
	}

	cfg, err := loadConfig(*configPath)
	if err != nil {
		return exitCode(stderr, err)
	}
	if *resolver != "" {
		r, err := dnsbl.ParseResolver(*resolver)
		if err != nil {
			return usageErr("--resolver: " + err.Error())
		}
		cfg.DNSBL.Resolver = []dnsbl.Resolver{r}
	}
	cfg.Auth.Enabled = true // the command's whole point
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	lists, err := newChecker(cfg, dnsbl.Deps{Logger: log})
	if err != nil {
		return exitCode(stderr, err)
	}
	engine, _, err := buildEngine(cfg, lists, engineDeps{Log: log})
	if err != nil {
		return exitCode(stderr, err)
	}
	out := authCheck(engine, ip, *helo, from, msg)
	if *format == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(out)
	} else {
		printAuthCheck(stdout, out)
	}
	if out.Action == inspect.Reject.String() || out.Action == inspect.Tempfail.String() {
		return 1
	}
	return 0
}

func readMessageFile(name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(io.LimitReader(os.Stdin, 64<<20))
	}
	return os.ReadFile(name)
}

// authCheck runs one message through the engine's stages as a session
// from ip would, and collects what the data stage concluded.
func authCheck(e *inspect.Engine, ip netip.Addr, helo string, from smtp.Path, msg []byte) authCheckOutput {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := &inspect.Session{ID: "auth-check", Start: time.Now(), Client: netip.AddrPortFrom(ip, 0),
		HeloVerb: "EHLO", Helo: helo}
	defer e.End(s)
	stages := []inspect.Verdict{e.Connect(ctx, s)}
	s.Keep(inspect.StageConnect, stages[0])
	v := e.Helo(ctx, s)
	s.Keep(inspect.StageHelo, v)
	t := &inspect.Transaction{From: from}
	v = e.Mail(ctx, s, t)
	t.Keep(inspect.StageMail, v)
	w := e.MessageWriter(s, t)
	if w != nil {
		w.Write(msg)
	}
	v = e.Data(ctx, s, t, &inspect.Message{Size: int64(len(msg)), Body: bytes.NewReader(msg)})
	out := authCheckOutput{Results: v.Auth, Action: v.Action.String(), Score: v.Score, Rules: v.Rules}
	if v.Action >= inspect.Tempfail {
		out.Reply = v.WireReply(inspect.StageData).Summary()
	}
	for _, h := range v.Headers {
		if h.Name == "Authentication-Results" {
			out.AuthResults = h.Value
		}
	}
	out.DMARCDecision = "none"
	if f := v.Auth; f != nil {
		out.DMARCDecision = dmarcDecision(e, f)
	}
	return out
}

// dmarcDecision is the fact dmarc_action for results r.
func dmarcDecision(e *inspect.Engine, r *auth.Results) string {
	f := &inspect.Facts{Auth: r}
	return f.DMARCActionWith(e)
}

func printAuthCheck(w io.Writer, o authCheckOutput) {
	r := o.Results
	if r == nil {
		fmt.Fprintln(w, "sender authentication did not run")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	lookups := func(ls []auth.Lookup) {
		for _, l := range ls {
			ans := strings.Join(quoteAll(l.Answer), " ")
			if l.Err != "" {
				ans = "(" + l.Err + ")"
			}
			fmt.Fprintf(tw, "\t  %s %s\t%s\n", l.Type, l.Name, ans)
		}
	}
	fmt.Fprintf(tw, "SPF (MAIL FROM)\t%s\t%s\t%s\n", r.SPF.Result, r.SPF.Domain, r.SPF.Reason)
	lookups(r.SPF.Lookups)
	fmt.Fprintf(tw, "SPF (HELO)\t%s\t%s\t%s\n", r.HELO.Result, r.HELO.Domain, r.HELO.Reason)
	lookups(r.HELO.Lookups)
	if len(r.DKIM) == 0 {
		fmt.Fprintf(tw, "DKIM\tnone\t\tno signature\n")
	}
	for _, d := range r.DKIM {
		fmt.Fprintf(tw, "DKIM\t%s\td=%s s=%s a=%s\t%s\n", d.Result, d.Domain, d.Selector, d.Algorithm, d.Reason)
		lookups(d.Lookups)
	}
	arc := ""
	if r.ARC.Instances > 0 {
		arc = fmt.Sprintf("%d sets, sealer %s", r.ARC.Instances, r.ARC.Sealer)
	}
	fmt.Fprintf(tw, "ARC\t%s\t%s\t%s\n", r.ARC.Result, arc, r.ARC.Reason)
	lookups(r.ARC.Lookups)
	var aligned []string
	if r.DMARC.SPFAligned {
		aligned = append(aligned, "spf")
	}
	if r.DMARC.DKIMAligned {
		aligned = append(aligned, "dkim")
	}
	if len(aligned) == 0 {
		aligned = []string{"nothing"}
	}
	pol := ""
	if r.DMARC.Published != "" {
		pol = fmt.Sprintf("policy %s (published %s), aligned: %s", r.DMARC.Policy, r.DMARC.Published, strings.Join(aligned, " "))
	}
	fmt.Fprintf(tw, "DMARC\t%s\t%s\t%s\n", r.DMARC.Result, r.DMARC.Domain, strings.TrimSpace(pol+" "+r.DMARC.Reason))
	lookups(r.DMARC.Lookups)
	tw.Flush()
	fmt.Fprintf(w, "\nAuthentication-Results: %s\n", o.AuthResults)
	fmt.Fprintf(w, "\nmoat would: %s (score %.1f", o.Action, o.Score)
	if len(o.Rules) > 0 {
		fmt.Fprintf(w, ", rules %s", strings.Join(o.Rules, " "))
	}
	fmt.Fprintf(w, "; DMARC action %s)\n", o.DMARCDecision)
	if o.Reply != "" {
		fmt.Fprintf(w, "reply: %s\n", o.Reply)
	}
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}
