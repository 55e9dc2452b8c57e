//go:build linux

package procgroup

// On Linux a task runs under a shim: the executor binary started again with
// shimEnv set. The shim makes itself a child subreaper, so every process the
// task starts stays its descendant even after it calls setsid and its parent
// exits. When the task's first process exits, or the grace period after
// SIGTERM ends, the shim kills every descendant and reports the first
// process's wait status to Run through a pipe. A process group alone cannot
// do this: a process that leaves the group escapes a signal sent to it.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// shimEnv marks a shim start. Its value is "GRACE:FD": the kill grace in
// nanoseconds and the descriptor of the status pipe.
const shimEnv = "DTF_PROCGROUP_SHIM"

// shimMargin is how long Run waits beyond the grace period for the shim to
// finish its own kill before it sends SIGKILL to the group itself.
const shimMargin = 3 * time.Second

// killAllLimit bounds the shim's rounds of SIGKILL to its descendants. A
// process in uninterruptible sleep may outlast it. The shim then reports it
// on its standard error and exits.
const killAllLimit = 2 * time.Second

// killAllRound is the pause between two rounds of the kill.
const killAllRound = 10 * time.Millisecond

func init() {
	if spec, ok := os.LookupEnv(shimEnv); ok {
		os.Exit(runShim(spec))
	}
}

// shimStatus is Run's end of the status pipe.
type shimStatus struct {
	path   string
	reader *os.File
	writer *os.File
	data   chan []byte
}

// wrap rewrites cmd to start the shim, which then starts the original
// command. The caller starts cmd and then calls started.
func wrap(cmd *exec.Cmd, grace time.Duration) (*shimStatus, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("create status pipe: %w", err)
	}
	fd := 3 + len(cmd.ExtraFiles)
	cmd.ExtraFiles = append(cmd.ExtraFiles, w)

	env := cmd.Env
	if env == nil {
		env = os.Environ()
	}
	env = append(withoutShimEnv(env), fmt.Sprintf("%s=%d:%d", shimEnv, grace.Nanoseconds(), fd))
	cmd.Env = env

	original := cmd.Path
	cmd.Args = append([]string{"dtf-task-shim", cmd.Path}, cmd.Args...)
	// /proc/self/exe names the running executor even after its file was
	// replaced by an upgrade.
	cmd.Path = "/proc/self/exe"
	return &shimStatus{path: original, reader: r, writer: w, data: make(chan []byte, 1)}, nil
}

// started closes Run's copy of the write end and reads the pipe until the
// shim exits.
func (s *shimStatus) started() {
	_ = s.writer.Close()
	go func() {
		b, _ := io.ReadAll(io.LimitReader(s.reader, 4096))
		_ = s.reader.Close()
		s.data <- b
	}()
}

// abandon closes both ends when the shim could not be started.
func (s *shimStatus) abandon() {
	_ = s.writer.Close()
	_ = s.reader.Close()
}

// result reads the status the shim reported. A shim that was killed before
// it wrote one reports its own exit state instead.
func (s *shimStatus) result(state *os.ProcessState) (syscall.WaitStatus, error) {
	b := <-s.data
	text := string(b)
	switch {
	case strings.HasPrefix(text, "S"):
		n, err := strconv.ParseUint(strings.TrimSpace(text[1:]), 10, 32)
		if err == nil {
			return syscall.WaitStatus(n), nil
		}
	case strings.HasPrefix(text, "E"):
		return 0, fmt.Errorf("start %s: %s", s.path, text[1:])
	}
	return waitStatus(state), nil
}

// graceLimit is how long Run waits for the shim after SIGTERM.
func (s *shimStatus) graceLimit(grace time.Duration) time.Duration {
	return grace + shimMargin
}

// withoutShimEnv drops the marker so that a task that is itself an executor
// does not turn into a shim.
func withoutShimEnv(env []string) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if !strings.HasPrefix(kv, shimEnv+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// runShim is the shim's main. Its arguments are the command's path and
// argv. It returns the shim's exit code. The task's own status goes through
// the status pipe.
func runShim(spec string) int {
	graceText, fdText, ok := strings.Cut(spec, ":")
	grace, err1 := strconv.ParseInt(graceText, 10, 64)
	fd, err2 := strconv.Atoi(fdText)
	if !ok || err1 != nil || err2 != nil || fd < 3 || len(os.Args) < 3 {
		fmt.Fprintf(os.Stderr, "%s=%q is not a task shim start; unset it\n", shimEnv, spec)
		return 2
	}
	status := os.NewFile(uintptr(fd), "status")
	syscall.CloseOnExec(fd)
	report := func(format string, args ...any) {
		_, _ = fmt.Fprintf(status, format, args...)
		_ = status.Close()
	}

	// Catch the signals a task may send to its own group, so that only
	// SIGTERM, from Run, ends the task. Caught signals return to their
	// default action in the task after exec, while ignored ones would stay
	// ignored.
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT,
		syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGALRM, syscall.SIGPIPE)

	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		report("Eprctl PR_SET_CHILD_SUBREAPER: %v", err)
		return 127
	}

	files := []*os.File{os.Stdin, os.Stdout, os.Stderr}
	for extra := 3; extra < fd; extra++ {
		files = append(files, os.NewFile(uintptr(extra), "extra"))
	}
	proc, err := os.StartProcess(os.Args[1], os.Args[2:], &os.ProcAttr{
		Env:   withoutShimEnv(os.Environ()),
		Files: files,
	})
	if err != nil {
		report("E%v", err)
		return 127
	}
	leader := proc.Pid

	leaderDone := make(chan syscall.WaitStatus, 1)
	empty := make(chan struct{})
	go reapAll(leader, leaderDone, empty)

	var leaderStatus syscall.WaitStatus
	var graceTimer <-chan time.Time
	terminating := false
wait:
	for {
		select {
		case leaderStatus = <-leaderDone:
			break wait
		case sig := <-signals:
			if sig != syscall.SIGTERM || terminating {
				continue
			}
			terminating = true
			// The group got SIGTERM from Run; pass it to the descendants
			// that left the group.
			signalDescendants(syscall.SIGTERM, true)
			graceTimer = time.After(time.Duration(grace))
		case <-graceTimer:
			graceTimer = nil
			signalDescendants(syscall.SIGKILL, false)
		}
	}

	if !killAll(empty) {
		fmt.Fprintf(os.Stderr, "dtf task shim: processes of the task outlived SIGKILL for %s\n", killAllLimit)
	}
	report("S%d", uint32(leaderStatus))
	return 0
}

// reapAll waits for every child of the shim, the orphans it inherits
// included, so none stays a zombie. It sends the leader's status once and
// closes empty when the shim has no child left.
func reapAll(leader int, leaderDone chan<- syscall.WaitStatus, empty chan<- struct{}) {
	defer close(empty)
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, 0, nil)
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case err != nil:
			return
		case pid == leader:
			leaderDone <- ws
		}
	}
}

// killAll sends SIGKILL to every descendant in rounds until the shim has no
// child left, for at most killAllLimit.
func killAll(empty <-chan struct{}) bool {
	deadline := time.NewTimer(killAllLimit)
	defer deadline.Stop()
	for {
		signalDescendants(syscall.SIGKILL, false)
		round := time.NewTimer(killAllRound)
		select {
		case <-empty:
			round.Stop()
			return true
		case <-deadline.C:
			round.Stop()
			return false
		case <-round.C:
		}
	}
}

// signalDescendants sends sig to every descendant of the shim. With
// outsideOnly it skips the members of the shim's process group, which got
// the signal from Run already.
func signalDescendants(sig syscall.Signal, outsideOnly bool) {
	group := syscall.Getpgrp()
	for _, pid := range descendants(os.Getpid()) {
		if outsideOnly {
			if pg, err := syscall.Getpgid(pid); err != nil || pg == group {
				continue
			}
		}
		_ = syscall.Kill(pid, sig)
	}
}

// descendants lists the processes below pid from the children files of
// /proc (Linux 3.5 and later). The list can miss a process forked during
// the read; killAll's rounds catch it later.
func descendants(pid int) []int {
	var out []int
	seen := map[int]bool{pid: true}
	stack := []int{pid}
	for len(stack) > 0 && len(out) < 1<<16 {
		p := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, child := range children(p) {
			if !seen[child] {
				seen[child] = true
				out = append(out, child)
				stack = append(stack, child)
			}
		}
	}
	return out
}

// children reads the children of every thread of pid.
func children(pid int) []int {
	threads, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/children")
	var out []int
	for _, file := range threads {
		b, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		for _, field := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(field); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}
