package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dtf-io/dtf/sdk"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type nopReporter struct{}

func (nopReporter) Progress(float64, string) {}

func (nopReporter) Checkpoint([]byte, float64, string) error { return nil }

func payload(t *testing.T, v map[string]any) json.RawMessage {
	t.Helper()
	raw, err := json.Marshal(v)
	require.NoError(t, err)
	return raw
}

func configured(t *testing.T, cfg string) *Executor {
	t.Helper()
	e := NewExecutor()
	require.NoError(t, e.Configure(json.RawMessage(cfg)))
	return e
}

func run(t *testing.T, e *Executor, task sdk.Task) sdk.Result {
	t.Helper()
	if task.Type == "" {
		task.Type = TaskType
	}
	res, err := e.Execute(context.Background(), task, nopReporter{})
	require.NoError(t, err)
	return res
}

func TestExecuteExitCodes(t *testing.T) {
	cases := []struct {
		name     string
		argv     []string
		status   sdk.Status
		exitCode int
		message  string
	}{
		{"success", []string{"true"}, sdk.StatusSucceeded, 0, "exit code 0"},
		{"exit 3", []string{"sh", "-c", "exit 3"}, sdk.StatusFailed, 3, "exit code 3"},
		{"own signal", []string{"sh", "-c", "kill -KILL $$"}, sdk.StatusFailed, 137,
			"killed by signal killed (exit code 137)"},
		{"output", []string{"sh", "-c", "echo out; echo err >&2"}, sdk.StatusSucceeded, 0, "exit code 0"},
	}
	e := configured(t, `{"env_allowlist": ["PATH"]}`)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := run(t, e, sdk.Task{ID: "t1", Attempt: 1,
				Payload: payload(t, map[string]any{"argv": tc.argv})})
			assert.Equal(t, tc.status, res.Status)
			assert.Equal(t, tc.exitCode, res.ExitCode)
			assert.Equal(t, tc.message, res.Message)
		})
	}
}

func TestExecuteCombinesOutput(t *testing.T) {
	e := configured(t, `{"env_allowlist": ["PATH"]}`)
	res := run(t, e, sdk.Task{Payload: payload(t, map[string]any{
		"argv": []string{"sh", "-c", "echo out; echo err >&2; echo end"},
	})})
	assert.Equal(t, "out\nerr\nend\n", string(res.Output))
}

// pidsIn returns every number that follows "pid=" in out.
func pidsIn(t *testing.T, out []byte) []int {
	t.Helper()
	var pids []int
	for _, m := range regexp.MustCompile(`pid=(\d+)`).FindAllSubmatch(out, -1) {
		pid, err := strconv.Atoi(string(m[1]))
		require.NoError(t, err)
		pids = append(pids, pid)
	}
	return pids
}

// processGone reports whether pid no longer runs; a zombie waiting for a
// reaper that is not this test counts as gone.
func processGone(pid int) bool {
	if err := syscall.Kill(pid, 0); err == syscall.ESRCH {
		return true
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the command name, which is in parentheses.
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	return len(fields) > 0 && (fields[0] == "Z" || fields[0] == "X")
}

func TestExecuteTimeoutKillsGroup(t *testing.T) {
	cases := []struct {
		name   string
		script string
	}{
		{"grandchild", `sleep 100 & echo pid=$!; echo pid=$$; sleep 100`},
		// Ignored signals survive exec, so both processes ignore SIGTERM
		// and only the SIGKILL after the grace period stops them.
		{"ignores sigterm", `trap "" TERM; sleep 100 & echo pid=$!; echo pid=$$; sleep 100`},
	}
	e := configured(t, `{"env_allowlist": ["PATH"], "kill_grace": "200ms"}`)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			res := run(t, e, sdk.Task{
				Timeout: 500 * time.Millisecond,
				Payload: payload(t, map[string]any{"argv": []string{"sh", "-c", tc.script}}),
			})
			assert.Less(t, time.Since(start), 10*time.Second)
			assert.Equal(t, sdk.StatusTimedOut, res.Status)
			assert.Contains(t, res.Message, "timed out after 500ms")

			pids := pidsIn(t, res.Output)
			require.Len(t, pids, 2, "output: %s", res.Output)
			for _, pid := range pids {
				require.Eventually(t, func() bool { return processGone(pid) },
					5*time.Second, 20*time.Millisecond, "pid %d still runs", pid)
			}
		})
	}
}

func TestExecuteCancel(t *testing.T) {
	e := configured(t, `{"env_allowlist": ["PATH"]}`)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan sdk.Result, 1)
	dir := t.TempDir()
	marker := filepath.Join(dir, "started")
	go func() {
		res, err := e.Execute(ctx, sdk.Task{Payload: payload(t, map[string]any{
			"argv": []string{"sh", "-c", "touch " + marker + "; sleep 100"},
		})}, nopReporter{})
		assert.NoError(t, err)
		done <- res
	}()

	require.Eventually(t, func() bool {
		_, err := os.Stat(marker)
		return err == nil
	}, 5*time.Second, 10*time.Millisecond)
	cancel()

	select {
	case res := <-done:
		assert.Equal(t, sdk.StatusCancelled, res.Status)
	case <-time.After(10 * time.Second):
		t.Fatal("Execute did not return after cancel")
	}
}

func TestExecuteNoTimeoutAfterExit(t *testing.T) {
	e := configured(t, `{"env_allowlist": ["PATH"], "default_timeout": "1m"}`)
	res := run(t, e, sdk.Task{Payload: payload(t, map[string]any{"argv": []string{"true"}})})
	assert.Equal(t, sdk.StatusSucceeded, res.Status)
}

func TestExecuteOutputTail(t *testing.T) {
	e := configured(t, `{"env_allowlist": ["PATH"], "max_output_bytes": 4096}`)
	script := `i=0; while [ $i -lt 2000 ]; do echo line$i; i=$((i+1)); done`

	t.Run("payload limit", func(t *testing.T) {
		res := run(t, e, sdk.Task{Payload: payload(t, map[string]any{
			"argv": []string{"sh", "-c", script}, "max_output_bytes": 100,
		})})
		assert.Len(t, res.Output, 100)
		assert.True(t, strings.HasSuffix(string(res.Output), "line1998\nline1999\n"))
		assert.Contains(t, res.Message, "output truncated to the last 100 bytes")
	})
	t.Run("config caps payload", func(t *testing.T) {
		res := run(t, e, sdk.Task{Payload: payload(t, map[string]any{
			"argv": []string{"sh", "-c", script}, "max_output_bytes": 1 << 30,
		})})
		assert.Len(t, res.Output, 4096)
		assert.True(t, strings.HasSuffix(string(res.Output), "line1999\n"))
	})
}

func TestExecuteEnvAllowlist(t *testing.T) {
	t.Setenv("DTF_TEST_ALLOWED", "inherited")
	t.Setenv("DTF_TEST_SECRET", "must-not-leak")
	t.Setenv("DTF_TEST_REPLACED", "old")
	e := configured(t, `{"env_allowlist": ["PATH", "DTF_TEST_ALLOWED", "DTF_TEST_REPLACED"]}`)

	res := run(t, e, sdk.Task{Payload: payload(t, map[string]any{
		"argv": []string{"env"},
		"env":  map[string]string{"DTF_TEST_EXTRA": "added", "DTF_TEST_REPLACED": "new"},
	})})
	require.Equal(t, sdk.StatusSucceeded, res.Status)

	lines := strings.Split(strings.TrimSpace(string(res.Output)), "\n")
	assert.Contains(t, lines, "DTF_TEST_ALLOWED=inherited")
	assert.Contains(t, lines, "DTF_TEST_EXTRA=added")
	assert.Contains(t, lines, "DTF_TEST_REPLACED=new")
	assert.NotContains(t, lines, "DTF_TEST_REPLACED=old")
	assert.NotContains(t, string(res.Output), "DTF_TEST_SECRET")
	assert.NotContains(t, string(res.Output), "HOME=")
}

func TestExecutePayloadPath(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "hello-dtf")
	require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\necho from payload path\n"), 0o755))

	e := configured(t, `{"env_allowlist": ["PATH"]}`)
	res := run(t, e, sdk.Task{Payload: payload(t, map[string]any{
		"argv": []string{"hello-dtf"},
		"env":  map[string]string{"PATH": dir + ":/usr/bin:/bin"},
	})})
	assert.Equal(t, sdk.StatusSucceeded, res.Status)
	assert.Equal(t, "from payload path\n", string(res.Output))
}

func TestExecuteWorkingDirectory(t *testing.T) {
	dir := t.TempDir()
	e := configured(t, `{"env_allowlist": ["PATH"]}`)
	res := run(t, e, sdk.Task{Payload: payload(t, map[string]any{
		"argv": []string{"pwd"}, "dir": dir,
	})})
	resolved, err := filepath.EvalSymlinks(dir)
	require.NoError(t, err)
	assert.Equal(t, resolved, strings.TrimSpace(string(res.Output)))
}

func TestExecuteInvalidPayload(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	cases := []struct {
		name    string
		payload string
		want    string
	}{
		{"missing argv", `{"env": {"A": "1"}}`, "argv is missing"},
		{"empty argv", `{"argv": []}`, "argv is missing"},
		{"unknown field", `{"argv": ["true"], "cwd": "/"}`, `unknown field "cwd"`},
		{"missing dir", `{"argv": ["true"], "dir": "` + missing + `"}`, `dir "` + missing + `"`},
		{"dir is a file", `{"argv": ["true"], "dir": "/dev/null"}`, "is not a directory"},
		{"bad env name", `{"argv": ["true"], "env": {"A=B": "1"}}`, `env name "A=B"`},
		{"unknown program", `{"argv": ["dtf-no-such-program"]}`, `argv[0] "dtf-no-such-program"`},
		{"not an object", `["true"]`, "invalid command payload"},
	}
	e := configured(t, `{"env_allowlist": ["PATH"]}`)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.Execute(context.Background(),
				sdk.Task{Type: TaskType, Payload: json.RawMessage(tc.payload)}, nopReporter{})
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestConfigureErrors(t *testing.T) {
	cases := []struct {
		name   string
		config string
		want   string
	}{
		{"unknown field", `{"allowlist": []}`, `allowlist: the plugin has no setting "allowlist"`},
		{"wrong type", `{"max_output_bytes": "1k"}`, `max_output_bytes: "1k" is not a valid int`},
		{"bad timeout", `{"default_timeout": "10"}`, `default_timeout is "10"`},
		{"negative output", `{"max_output_bytes": -1}`, "max_output_bytes is -1"},
		{"bad env name", `{"env_allowlist": ["A=B"]}`, `"A=B" is not a variable name`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := NewExecutor().Configure(json.RawMessage(tc.config))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestConfigureEmptyKeepsDefaults(t *testing.T) {
	for _, raw := range []string{"", "null", "{}"} {
		e := NewExecutor()
		require.NoError(t, e.Configure(json.RawMessage(raw)))
		assert.Equal(t, defaultMaxOutputBytes, e.maxOutputBytes)
		assert.Equal(t, defaultTimeout, e.defaultTimeout)
	}
}
