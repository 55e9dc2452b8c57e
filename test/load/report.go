package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// report is the result block of one run: the command, the machine, the
// date and the measured values, in the order they were added.
type report struct {
	lines []string
}

func newReport(o *options, command string) *report {
	r := &report{}
	r.add("command", command)
	r.add("date", time.Now().UTC().Format(time.RFC3339))
	r.add("machine", fmt.Sprintf("%d cores (runtime.NumCPU), GOMAXPROCS %d, %s memory, %s %s/%s",
		runtime.NumCPU(), runtime.GOMAXPROCS(0), totalMemory(), runtime.Version(), runtime.GOOS, runtime.GOARCH))
	r.add("mode", o.mode)
	return r
}

func (r *report) add(key string, value any) {
	r.lines = append(r.lines, fmt.Sprintf("%-22s %v", key+":", value))
}

// print writes the block as a fenced text block, ready to paste.
func (r *report) print(w io.Writer, runErr error) {
	fmt.Fprintln(w, "```text")
	for _, line := range r.lines {
		fmt.Fprintln(w, line)
	}
	if runErr != nil {
		fmt.Fprintf(w, "%-22s %v\n", "error:", runErr)
	}
	fmt.Fprintln(w, "```")
}

// totalMemory returns MemTotal from /proc/meminfo in GiB, or "unknown".
func totalMemory() string {
	kib, err := procField("/proc/meminfo", "MemTotal")
	if err != nil {
		return "unknown"
	}
	return fmt.Sprintf("%.1f GiB", float64(kib)/(1<<20))
}

// vmRSS returns the resident set size of a process in KiB.
func vmRSS(pid int) (int64, error) {
	return procField(fmt.Sprintf("/proc/%d/status", pid), "VmRSS")
}

// rssSplit describes the anonymous and the file-backed part of a
// process's resident set, such as "5708 KiB anonymous, 13748 KiB
// file-backed". File-backed pages are mostly the mapped binary and shared
// libraries, so a smaller or statically linked binary lowers them.
// Anonymous pages are the Go heap, the stacks and the runtime's own memory.
func rssSplit(pid int) string {
	status := fmt.Sprintf("/proc/%d/status", pid)
	anon, errAnon := procField(status, "RssAnon")
	file, errFile := procField(status, "RssFile")
	if errAnon != nil || errFile != nil {
		return "anonymous and file-backed split unknown"
	}
	return fmt.Sprintf("%d KiB anonymous, %d KiB file-backed", anon, file)
}

// procField reads a "Name:   123 kB" line of a /proc file.
func procField(path, name string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		key, value, ok := strings.Cut(scanner.Text(), ":")
		if !ok || key != name {
			continue
		}
		fields := strings.Fields(value)
		if len(fields) == 0 {
			break
		}
		return strconv.ParseInt(fields[0], 10, 64)
	}
	if err := scanner.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s: no %s line", path, name)
}
