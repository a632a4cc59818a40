//go:build e2ebench

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// profileMoat sends w through moat again, outside the measured rounds,
// while it takes a CPU profile from moat's /debug/pprof and the
// allocations made in the meantime (the difference of two allocs
// profiles). It saves the profiles to out and returns `go tool pprof
// -top` of each. roundSecs is how long w takes through moat; tag names
// the files.
func profileMoat(t *testing.T, w workload, p *path, httpAddr, out, tag string, roundSecs float64) string {
	t.Helper()
	base := "http://" + httpAddr + "/debug/pprof/"
	name := func(s string) string { return filepath.Join(out, "moat-"+tag+"-"+s) }
	cpuFile := name("cpu.pprof")
	alloc0, alloc1 := name("allocs-before.pprof"), name("allocs-after.pprof")
	ctx, cancel := context.WithTimeout(context.Background(), *flagTimeout)
	defer cancel()
	if err := fetch(ctx, base+"allocs", alloc0); err != nil {
		t.Fatalf("allocs profile: %v", err)
	}
	// Profile for at least 5 s, sending the workload again and again
	// (a bounded number of times) until the profile is done.
	secs := max(5, int(roundSecs))
	cpuDone := make(chan error, 1)
	go func() { cpuDone <- fetch(ctx, fmt.Sprintf("%sprofile?seconds=%d", base, secs), cpuFile) }()
	sent, runs, done := 0, 0, false
	maxRuns := int(float64(secs)/max(roundSecs, 0.1)) + 2
	var cpuErr error
	for !done && runs < maxRuns {
		if err := send(ctx, w, w.messages, p.addr); err != nil {
			t.Fatalf("profiling run: %v", err)
		}
		sent += w.messages
		runs++
		select {
		case cpuErr = <-cpuDone:
			done = true
		default:
		}
	}
	if !done {
		cpuErr = <-cpuDone
	}
	if cpuErr != nil {
		t.Fatalf("CPU profile: %v", cpuErr)
	}
	if err := fetch(ctx, base+"allocs", alloc1); err != nil {
		t.Fatalf("allocs profile: %v", err)
	}

	var r strings.Builder
	fmt.Fprintf(&r, "### moat profiles during the %d × %s workload\n\n", w.messages, w.name)
	fmt.Fprintf(&r, "A CPU profile of %d s taken while the workload was sent %d times more, outside the measured rounds "+
		"(%d messages), and the allocations made over all %d of them. Files in %s.\n\n", secs, runs, sent, sent, out)
	for _, q := range []struct {
		title, file string
		args        []string
	}{
		{"CPU (flat)", "cpu-top.txt", []string{"-top", "-nodecount=30", cpuFile}},
		{"CPU (cumulative)", "cpu-cum.txt", []string{"-top", "-cum", "-nodecount=30", cpuFile}},
		{"allocated bytes", "alloc-space-top.txt", []string{"-top", "-nodecount=25", "-sample_index=alloc_space", "-base=" + alloc0, alloc1}},
		{"allocated objects", "alloc-objects-top.txt", []string{"-top", "-nodecount=25", "-sample_index=alloc_objects", "-base=" + alloc0, alloc1}},
	} {
		cmd := exec.Command("go", append([]string{"tool", "pprof"}, q.args...)...)
		o, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("go tool pprof %s: %v\n%s", strings.Join(q.args, " "), err, o)
			continue
		}
		os.WriteFile(name(q.file), o, 0o644)
		fmt.Fprintf(&r, "#### %s — `go tool pprof %s`\n\n```\n%s```\n\n", q.title, strings.Join(q.args[:len(q.args)-1], " "), o)
	}
	return r.String()
}
