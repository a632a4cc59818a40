//go:build e2ebench

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// renderReport is the results as Markdown: one row per workload and path
// with medians over the rounds, then moat against issue 8's targets.
func renderReport(ws []workload, paths []*path, results map[string]map[string][]sample, div int, machine string) string {
	var b strings.Builder
	mode := "full"
	switch {
	case div == 10:
		mode = "quick (-quick: a tenth of the messages)"
	case div > 1:
		mode = fmt.Sprintf("reduced (1/%d of the messages)", div)
	}
	fmt.Fprintf(&b, "## End-to-end results — %s run, %s\n\n", mode, time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "Machine: %s.\n\n", machine)
	fmt.Fprintf(&b, "Rounds per workload and path: %d, the paths alternating within each round. "+
		"Medians over the rounds; the msgs/s range in brackets; peak RSS is the highest of the rounds; "+
		"DNS queries are all rbldnsd answered during the path's rounds; syscalls are the proxy's read- and write-class ones (/proc/PID/io); log bytes are what the proxy logged at its default level.\n\n", *flagRounds)
	b.WriteString("| workload | path | msgs/s | vs tcp-relay | vs Haraka | proxy CPU ms/msg | proxy peak RSS MB | DNS queries/msg | proxy r/w syscalls/msg | proxy log bytes/msg |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	rate := func(w workload, ss []sample) float64 {
		return median(ss, func(s sample) float64 { return float64(w.messages) / s.dur.Seconds() })
	}
	cpu := func(w workload, ss []sample) float64 {
		return median(ss, func(s sample) float64 { return msPerMsg(s.cpu, w.messages) })
	}
	for _, w := range ws {
		label := fmt.Sprintf("%d × %s", w.messages, w.name)
		relay, haraka := rate(w, results[w.name]["tcp-relay"]), rate(w, results[w.name]["haraka"])
		for _, p := range paths {
			ss := results[w.name][p.name]
			r := rate(w, ss)
			lo, hi := r, r
			var rss int64
			for _, s := range ss {
				v := float64(w.messages) / s.dur.Seconds()
				lo, hi = min(lo, v), max(hi, v)
				rss = max(rss, s.rss)
			}
			ratio := func(base float64) string {
				if base == 0 {
					return "—"
				}
				return fmt.Sprintf("%.2f", r/base)
			}
			cpuCol, rssCol, sysCol, logCol := "—", "—", "—", "—"
			if p.proc != nil {
				cpuCol = fmt.Sprintf("%.3f", cpu(w, ss))
				rssCol = fmt.Sprintf("%.1f", mb(rss))
				sysCol = fmt.Sprintf("%.1f", median(ss, func(s sample) float64 { return float64(s.sys) / float64(w.messages) }))
				logCol = fmt.Sprintf("%.0f", median(ss, func(s sample) float64 { return float64(s.logb) / float64(w.messages) }))
			}
			dns := median(ss, func(s sample) float64 { return float64(s.dnsq) / float64(w.messages) })
			fmt.Fprintf(&b, "| %s | %s | %.0f [%.0f–%.0f] | %s | %s | %s | %s | %.2f | %s | %s |\n",
				label, p.name, r, lo, hi, ratio(relay), ratio(haraka), cpuCol, rssCol, dns, sysCol, logCol)
		}
	}
	b.WriteString("\n### moat against issue 8's targets\n\n")
	b.WriteString("| workload | moat ÷ tcp-relay msgs/s (target ≥ 0.70) | moat ÷ Haraka msgs/s (target ≥ 5) | Haraka ÷ moat CPU per msg (target ≥ 5) |\n")
	b.WriteString("|---|---:|---:|---:|\n")
	verdict := func(v, target float64) string {
		if v == 0 {
			return "—"
		}
		if v >= target {
			return fmt.Sprintf("%.2f (met)", v)
		}
		return fmt.Sprintf("%.2f (missed)", v)
	}
	for _, w := range ws {
		res := results[w.name]
		m := rate(w, res["moat"])
		var vsRelay, vsHaraka, cpuRatio float64
		if r := rate(w, res["tcp-relay"]); r > 0 {
			vsRelay = m / r
		}
		if h := rate(w, res["haraka"]); h > 0 {
			vsHaraka = m / h
		}
		if mc := cpu(w, res["moat"]); mc > 0 {
			cpuRatio = cpu(w, res["haraka"]) / mc
		}
		fmt.Fprintf(&b, "| %d × %s | %s | %s | %s |\n", w.messages, w.name,
			verdict(vsRelay, 0.70), verdict(vsHaraka, 5), verdict(cpuRatio, 5))
	}
	return b.String()
}

// moatMetrics saves moat's /metrics and returns the lines that show what
// it did: DNS list lookups and cache use, verdicts, transactions.
func moatMetrics(t *testing.T, httpAddr, out string) string {
	t.Helper()
	file := filepath.Join(out, "moat-metrics.txt")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := fetch(ctx, "http://"+httpAddr+"/metrics", file); err != nil {
		t.Errorf("moat /metrics: %v", err)
		return ""
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b strings.Builder
	b.WriteString("### What moat did over the whole run (from its /metrics)\n\n```\n")
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		for _, prefix := range []string{"moat_dnsbl_queries_total", "moat_dnsbl_cache_", "moat_dnsbl_errors_total",
			"moat_rules_verdicts_total", "moat_proxy_transactions_total", "moat_proxy_upstream_connects_total"} {
			if strings.HasPrefix(l, prefix) {
				b.WriteString(l + "\n")
			}
		}
	}
	b.WriteString("```\n")
	return b.String()
}
