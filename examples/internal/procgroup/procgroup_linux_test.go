//go:build linux

package procgroup

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// escape is a shell snippet that starts a process in a session of its own,
// outside the task's process group, which writes its pid to $1 and then
// sleeps, ignoring SIGTERM.
const escape = `setsid sh -c 'trap "" TERM; echo $$ > "$0"; exec sleep 300' "$1" &
for i in $(seq 1 1000); do [ -s "$1" ] && break; sleep 0.01; done
`

func shell(t *testing.T, script string, args ...string) *exec.Cmd {
	t.Helper()
	if _, err := exec.LookPath("setsid"); err != nil {
		t.Skip("setsid is not installed")
	}
	return exec.Command("/bin/sh", append([]string{"-c", script, "sh"}, args...)...)
}

// escapedPid reads the pid that the escape snippet wrote.
func escapedPid(t *testing.T, file string) int {
	t.Helper()
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	require.NoError(t, err)
	return pid
}

func assertGone(t *testing.T, pid int) {
	t.Helper()
	err := syscall.Kill(pid, 0)
	assert.ErrorIs(t, err, syscall.ESRCH, "process %d outlived its task", pid)
	if err == nil {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

func TestRunKillsEscapedProcessOnExit(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	cmd := shell(t, escape+"exit 0", pidFile)

	res, err := Run(context.Background(), Spec{Cmd: cmd, Timeout: time.Minute})
	require.NoError(t, err)
	assert.Equal(t, Exited, res.Stop)
	assert.Equal(t, 0, res.ExitCode())
	assertGone(t, escapedPid(t, pidFile))
}

func TestRunKillsEscapedProcessOnCancel(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	cmd := shell(t, escape+"exec sleep 300", pidFile)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan Result, 1)
	go func() {
		res, err := Run(ctx, Spec{Cmd: cmd, KillGrace: 200 * time.Millisecond})
		assert.NoError(t, err)
		done <- res
	}()
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(pidFile)
		return err == nil && len(b) > 0
	}, 10*time.Second, 10*time.Millisecond)
	pid := escapedPid(t, pidFile)
	cancel()

	select {
	case res := <-done:
		assert.Equal(t, Cancelled, res.Stop)
		assert.Equal(t, syscall.SIGTERM, res.Signal())
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	assertGone(t, pid)
}

func TestRunKillsEscapedProcessOnTimeout(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	// The leader ignores SIGTERM too, so only the grace period ends it.
	cmd := shell(t, `trap "" TERM; `+escape+"sleep 300", pidFile)

	res, err := Run(context.Background(), Spec{
		Cmd: cmd, Timeout: 2 * time.Second, KillGrace: 100 * time.Millisecond,
	})
	require.NoError(t, err)
	assert.Equal(t, TimedOut, res.Stop)
	assert.Equal(t, syscall.SIGKILL, res.Signal())
	assert.Equal(t, 137, res.ExitCode())
	assertGone(t, escapedPid(t, pidFile))
}

func TestRunReportsTheTaskStatus(t *testing.T) {
	cases := []struct {
		name   string
		script string
		code   int
		signal syscall.Signal
	}{
		{"exit code", "exit 3", 3, 0},
		{"killed", "kill -KILL $$", 137, syscall.SIGKILL},
		// A signal the task sends to its own group must not end the shim,
		// or the task's status would be lost.
		{"signal to own group", "trap '' USR1 HUP; kill -USR1 0; kill -HUP 0; exit 4", 4, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Run(context.Background(), Spec{Cmd: exec.Command("/bin/sh", "-c", tc.script)})
			require.NoError(t, err)
			assert.Equal(t, Exited, res.Stop)
			assert.Equal(t, tc.code, res.ExitCode())
			assert.Equal(t, tc.signal, res.Signal())
		})
	}
}

func TestRunPassesOutputEnvAndDir(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command("/bin/sh", "-c", `echo "$GREETING from $(pwd)"; echo "marker=${`+shimEnv+`:-unset}" >&2`)
	cmd.Env = []string{"GREETING=hello", shimEnv + "=stale"}
	cmd.Dir = dir
	out := NewTail(1024)

	res, err := Run(context.Background(), Spec{Cmd: cmd, Stdout: out, Stderr: out})
	require.NoError(t, err)
	assert.Equal(t, 0, res.ExitCode())
	assert.Equal(t, "hello from "+dir+"\nmarker=unset\n", string(out.Bytes()))
}

func TestRunReportsAStartFailure(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-such-program")
	_, err := Run(context.Background(), Spec{Cmd: exec.Command(missing)})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "start "+missing)
	assert.True(t, strings.Contains(err.Error(), "no such file") || errors.Is(err, os.ErrNotExist), err.Error())
}

func TestRunStartErrorNamesProgram(t *testing.T) {
	// One argument over the kernel's limit of 128 KiB per string.
	cmd := exec.Command("/bin/echo", strings.Repeat("x", 256<<10))
	_, err := Run(context.Background(), Spec{Cmd: cmd})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "start /bin/echo")
	assert.NotContains(t, err.Error(), "/proc/self/exe")
}
