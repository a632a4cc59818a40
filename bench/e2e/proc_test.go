//go:build e2ebench

package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of utime and stime in /proc/PID/stat (USER_HZ,
// 100 on every Linux this runs on).
const clockTick = 10 * time.Millisecond

// procStat is the part of /proc/PID/stat the benchmark reads.
type procStat struct {
	ppid int
	cpu  time.Duration // utime + stime
}

func readStat(pid int) (procStat, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	// The command name, in parentheses, may hold spaces: fields are
	// counted from the last ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	// f[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
	ppid, _ := strconv.Atoi(f[1])
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return procStat{}, fmt.Errorf("/proc/%d/stat: bad utime/stime", pid)
	}
	return procStat{ppid: ppid, cpu: time.Duration(ut+st) * clockTick}, nil
}

// processTree returns pid and all its descendants (Haraka's cluster
// workers; moat and the relay have none).
func processTree(pid int) []int {
	children := map[int][]int{}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		p, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		if st, err := readStat(p); err == nil {
			children[st.ppid] = append(children[st.ppid], p)
		}
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// treeCPU is the CPU time, user and system, the processes have used.
func treeCPU(pids []int) time.Duration {
	var sum time.Duration
	for _, p := range pids {
		if st, err := readStat(p); err == nil {
			sum += st.cpu
		}
	}
	return sum
}

// resetPeakRSS sets each process's VmHWM back to its current RSS
// (proc(5), /proc/PID/clear_refs, value 5), so that the peak read after a
// round is that round's.
func resetPeakRSS(pids []int) error {
	for _, p := range pids {
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", p), []byte("5"), 0); err != nil {
			return err
		}
	}
	return nil
}

// peakRSS adds up the processes' VmHWM, in bytes: for Haraka's master and
// workers an upper bound of their peak together.
func peakRSS(pids []int) int64 {
	var sum int64
	for _, p := range pids {
		f, err := os.Open(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				sum += kb << 10
			}
		}
		f.Close()
	}
	return sum
}

// treeSyscalls adds up the processes' read- and write-class system calls
// (syscr + syscw of /proc/PID/io: read, write, readv, writev and the like;
// not sendmsg, recvmsg or epoll).
func treeSyscalls(pids []int) int64 {
	var sum int64
	for _, p := range pids {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", p))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(data), "\n") {
			k, v, ok := strings.Cut(l, ":")
			if ok && (k == "syscr" || k == "syscw") {
				n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				sum += n
			}
		}
	}
	return sum
}
