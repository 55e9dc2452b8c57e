//go:build unix

// Package procgroup runs a task's child process in its own process group so
// that an executor can stop the child and everything it started. The example
// executors share it; a plugin author who copies one of them copies this
// folder too.
package procgroup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Stop is the reason a run ended.
type Stop int

// Reasons a run ended.
const (
	// Exited means the child ended on its own.
	Exited Stop = iota
	// TimedOut means the run hit its timeout and the group was killed.
	TimedOut
	// Cancelled means the context ended and the group was killed.
	Cancelled
)

// DefaultKillGrace is how long a group gets between SIGTERM and SIGKILL when
// Spec.KillGrace is zero: long enough for a test binary to flush its output,
// short enough that a cancelled task frees its slot quickly.
const DefaultKillGrace = 5 * time.Second

// drainTimeout bounds the wait for the output pipes to close after the group
// was killed. Only a process that left the group (setsid) and kept the pipe
// open can hold them longer, and its output is then abandoned.
const drainTimeout = 2 * time.Second

// Spec describes one run.
type Spec struct {
	// Cmd is the command to run; Run sets its SysProcAttr, Stdout and Stderr.
	Cmd *exec.Cmd
	// Stdout and Stderr receive the child's output; when they are the same
	// writer, both streams share one pipe and keep their relative order.
	// Writes happen on goroutines owned by Run and end before Run returns.
	Stdout, Stderr io.Writer
	// Timeout ends the run with TimedOut; zero means no limit.
	Timeout time.Duration
	// KillGrace is the time between SIGTERM and SIGKILL; zero means
	// DefaultKillGrace.
	KillGrace time.Duration
}

// Result is the end state of a run.
type Result struct {
	Stop Stop
	// Status is the wait status of the command's first process.
	Status syscall.WaitStatus
}

// ExitCode returns the shell-style exit code: the exit status, or 128 plus
// the signal number when a signal ended the process.
func (r Result) ExitCode() int {
	if r.Status.Signaled() {
		return 128 + int(r.Status.Signal())
	}
	return r.Status.ExitStatus()
}

// Signal returns the signal that ended the process, or 0.
func (r Result) Signal() syscall.Signal {
	if r.Status.Signaled() {
		return r.Status.Signal()
	}
	return 0
}

// Run starts spec.Cmd as the leader of a new process group and waits for it.
// On timeout or when ctx ends, it sends SIGTERM to the whole group and SIGKILL
// after the grace period. After the leader exits, for any reason, every
// process the task started is killed, so that none outlives it. On Linux
// this includes a process that left the group with setsid (see
// shim_linux.go); elsewhere only the group is killed.
// Run returns an error only when the command could not be started.
func Run(ctx context.Context, spec Spec) (Result, error) {
	cmd := spec.Cmd
	if cmd.Err != nil {
		return Result{}, fmt.Errorf("start %s: %w", cmd.Path, cmd.Err)
	}
	grace := spec.KillGrace
	if grace <= 0 {
		grace = DefaultKillGrace
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true

	pipes, err := connectOutput(cmd, spec.Stdout, spec.Stderr)
	if err != nil {
		return Result{}, err
	}
	program := cmd.Path
	shim, err := wrap(cmd, grace)
	if err != nil {
		pipes.closeAll()
		return Result{}, err
	}
	if err := cmd.Start(); err != nil {
		pipes.closeAll()
		shim.abandon()
		// The error names the shim's path, so name the caller's program
		// instead.
		var pathErr *fs.PathError
		if errors.As(err, &pathErr) {
			err = pathErr.Err
		}
		return Result{}, fmt.Errorf("start %s: %w", program, err)
	}
	// The child holds its own copies of the write ends now.
	pipes.closeWriters()
	pipes.copyOutput()
	shim.started()

	// Wait in the background so the select below can react to ctx and the
	// timeout. cmd.Wait returns right after the exit because the child's
	// output goes to files, not to exec's copying goroutines.
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()

	var timeout <-chan time.Time
	if spec.Timeout > 0 {
		timer := time.NewTimer(spec.Timeout)
		defer timer.Stop()
		timeout = timer.C
	}

	stop := Exited
	select {
	case <-exited:
	case <-timeout:
		stop = TimedOut
		terminate(cmd.Process.Pid, exited, shim.graceLimit(grace))
	case <-ctx.Done():
		stop = Cancelled
		terminate(cmd.Process.Pid, exited, shim.graceLimit(grace))
	}

	// NOTE: the group id is the leader's pid, which the kernel does not hand
	// out again while any member of the group lives. Once the group is empty
	// this signal can in theory reach a new group with the same id.
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	pipes.drain(drainTimeout)
	status, err := shim.result(cmd.ProcessState)
	if err != nil {
		return Result{}, err
	}
	return Result{Stop: stop, Status: status}, nil
}

// terminate sends SIGTERM to the group led by pid, waits for the leader up to
// limit and then sends SIGKILL to the group and waits for the leader.
func terminate(pid int, exited <-chan struct{}, limit time.Duration) {
	_ = syscall.Kill(-pid, syscall.SIGTERM)

	timer := time.NewTimer(limit)
	defer timer.Stop()
	select {
	case <-exited:
		return
	case <-timer.C:
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	<-exited
}

// waitStatus returns the wait status of a finished process.
func waitStatus(state *os.ProcessState) syscall.WaitStatus {
	if state == nil {
		return 0
	}
	if ws, ok := state.Sys().(syscall.WaitStatus); ok {
		return ws
	}
	return syscall.WaitStatus(state.ExitCode() << 8)
}

// outputPipes are the OS pipes between the child and the writers.
type outputPipes struct {
	readers []*os.File
	writers []*os.File
	targets []io.Writer
	wg      sync.WaitGroup
}

// connectOutput gives cmd one pipe per distinct writer; a nil writer sends
// the stream to the null device.
func connectOutput(cmd *exec.Cmd, stdout, stderr io.Writer) (*outputPipes, error) {
	p := &outputPipes{}
	open := func(target io.Writer) (*os.File, error) {
		if target == nil {
			return nil, nil
		}
		r, w, err := os.Pipe()
		if err != nil {
			p.closeAll()
			return nil, fmt.Errorf("create output pipe: %w", err)
		}
		p.readers = append(p.readers, r)
		p.writers = append(p.writers, w)
		p.targets = append(p.targets, target)
		return w, nil
	}

	out, err := open(stdout)
	if err != nil {
		return nil, err
	}
	errOut := out
	if stderr != stdout {
		if errOut, err = open(stderr); err != nil {
			return nil, err
		}
	}
	// A nil *os.File in an io.Writer interface would not be nil, so assign
	// only real files.
	if out != nil {
		cmd.Stdout = out
	}
	if errOut != nil {
		cmd.Stderr = errOut
	}
	return p, nil
}

func (p *outputPipes) closeWriters() {
	for _, w := range p.writers {
		_ = w.Close()
	}
	p.writers = nil
}

func (p *outputPipes) closeAll() {
	p.closeWriters()
	for _, r := range p.readers {
		_ = r.Close()
	}
}

// copyOutput copies every pipe into its writer until the pipe closes.
func (p *outputPipes) copyOutput() {
	for i, r := range p.readers {
		p.wg.Add(1)
		go func(r *os.File, target io.Writer) {
			defer p.wg.Done()
			_, _ = io.Copy(target, r)
		}(r, p.targets[i])
	}
}

// drain waits up to limit for the copies to reach the end of their pipes.
// Then it closes the read ends, so any copy still blocked returns.
func (p *outputPipes) drain(limit time.Duration) {
	done := make(chan struct{})
	go func() {
		p.wg.Wait()
		close(done)
	}()

	timer := time.NewTimer(limit)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
	}
	for _, r := range p.readers {
		_ = r.Close()
	}
	<-done
}
