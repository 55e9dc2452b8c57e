package cli

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
)

func task(id, state string) api.Task {
	return api.Task{ID: id, Name: "name-" + id, Type: "command", State: state, Batch: "b1"}
}

func TestWatchExitCodes(t *testing.T) {
	cases := []struct {
		name     string
		polls    [][]api.Task
		outcomes map[string]*api.Outcome
		want     int
		stdout   []string
	}{
		{
			name: "all succeed",
			polls: [][]api.Task{
				{task("t1", api.StateQueued), task("t2", api.StateRunning)},
				{task("t1", api.StateSucceeded), task("t2", api.StateRunning)},
				{task("t1", api.StateSucceeded), task("t2", api.StateSucceeded)},
			},
			want:   ExitOK,
			stdout: []string{"t1 name-t1 succeeded", "2/2 done", "batch b1: 2 tasks, queued 0  running 0  succeeded 2"},
		},
		{
			name: "one failed",
			polls: [][]api.Task{
				{task("t1", api.StateRunning), task("t2", api.StateRunning)},
				{task("t1", api.StateSucceeded), task("t2", api.StateFailed)},
			},
			outcomes: map[string]*api.Outcome{"t2": {Status: "failed", ExitCode: 3, Message: "exit code 3"}},
			want:     ExitTasksFailed,
			stdout:   []string{"t2 name-t2 failed", "exit code 3", "1 of 2 tasks did not succeed"},
		},
		{
			name:   "timed out",
			polls:  [][]api.Task{{task("t1", api.StateTimedOut)}},
			want:   ExitTasksFailed,
			stdout: []string{"timed_out 1"},
		},
		{
			name:   "cancelled",
			polls:  [][]api.Task{{task("t1", api.StateCancelled)}},
			want:   ExitTasksFailed,
			stdout: []string{"cancelled 1"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fake := &fakeCoordinator{polls: tc.polls, outcomes: tc.outcomes}
			app, stdout, stderr := testApp(fake.start(t), false)
			code := runApp(app, "watch", "-batch", "b1", "-interval", "100ms")
			assert.Equal(t, tc.want, code, "stderr: %s", stderr)
			for _, want := range tc.stdout {
				assert.Contains(t, stdout.String(), want)
			}
			assert.NotContains(t, stdout.String(), "\r", "plain output has no bar")
		})
	}
}

func TestWatchPlainLinesOnlyOnChange(t *testing.T) {
	fake := &fakeCoordinator{polls: [][]api.Task{
		{task("t1", api.StateRunning)},
		{task("t1", api.StateRunning)},
		{task("t1", api.StateRunning)},
		{task("t1", api.StateSucceeded)},
	}}
	app, stdout, _ := testApp(fake.start(t), false)
	require.Equal(t, ExitOK, runApp(app, "watch", "-batch", "b1", "-interval", "100ms"))
	assert.Equal(t, 1, strings.Count(stdout.String(), "0/1 done"))
	assert.Contains(t, stdout.String(), "15:04:05 0/1 done")
}

func TestWatchTerminalBar(t *testing.T) {
	fake := &fakeCoordinator{polls: [][]api.Task{
		{task("t1", api.StateRunning), task("t2", api.StateQueued)},
		{task("t1", api.StateSucceeded), task("t2", api.StateSucceeded)},
	}}
	app, stdout, _ := testApp(fake.start(t), true)
	require.Equal(t, ExitOK, runApp(app, "watch", "-batch", "b1", "-interval", "100ms"))
	out := stdout.String()
	assert.Contains(t, out, "\r\033[K[..............................] 0/2 done")
	assert.Contains(t, out, "[##############################] 2/2 done")
}

func TestWatchErrors(t *testing.T) {
	t.Run("empty batch", func(t *testing.T) {
		fake := &fakeCoordinator{}
		app, _, stderr := testApp(fake.start(t), false)
		assert.Equal(t, ExitError, runApp(app, "watch", "-batch", "nope"))
		assert.Contains(t, stderr.String(), `batch "nope" has no tasks`)
	})
	t.Run("api error", func(t *testing.T) {
		fake := &fakeCoordinator{listErr: http.StatusInternalServerError}
		app, _, stderr := testApp(fake.start(t), false)
		assert.Equal(t, ExitError, runApp(app, "watch", "-batch", "b1"))
		assert.Contains(t, stderr.String(), "500 store unavailable")
	})
	t.Run("unreachable", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		addr := srv.URL
		srv.Close()
		app, _, stderr := testApp(addr, false)
		app.Now = nil
		code := runApp(app, "watch", "-batch", "b1", "-interval", "100ms", "-retry-for", "300ms")
		assert.Equal(t, ExitError, code)
		assert.Contains(t, stderr.String(), "is the coordinator running at "+addr)
		assert.Contains(t, stderr.String(), "stayed unreachable for 300ms")
	})
	t.Run("missing batch", func(t *testing.T) {
		app, _, stderr := testApp("http://127.0.0.1:1", false)
		assert.Equal(t, ExitError, runApp(app, "watch"))
		assert.Contains(t, stderr.String(), "watch needs -batch ID")
	})
	t.Run("interval out of range", func(t *testing.T) {
		app, _, stderr := testApp("http://127.0.0.1:1", false)
		assert.Equal(t, ExitError, runApp(app, "watch", "-batch", "b1", "-interval", "1ms"))
		assert.Contains(t, stderr.String(), "invalid -interval 1ms")
	})
	t.Run("interrupted", func(t *testing.T) {
		fake := &fakeCoordinator{polls: [][]api.Task{{task("t1", api.StateRunning)}}}
		app, _, stderr := testApp(fake.start(t), false)
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		assert.Equal(t, ExitError, app.Run(ctx, []string{"watch", "-batch", "b1", "-interval", "100ms"}))
		assert.Contains(t, stderr.String(), "resume with dtf watch -batch b1")
	})
}

func TestRunSubmitsThenWatches(t *testing.T) {
	fake := &fakeCoordinator{polls: [][]api.Task{{task("t1", api.StateFailed)}},
		outcomes: map[string]*api.Outcome{"t1": {Status: "failed", ExitCode: 1}}}
	app, stdout, stderr := testApp(fake.start(t), false)
	code := runApp(app, "run", "-type", "command", "-name", "hi", "-interval", "100ms",
		"--", "sh", "-c", "exit 1")
	assert.Equal(t, ExitTasksFailed, code, "stderr: %s", stderr)
	require.Len(t, fake.submitted, 1)
	assert.JSONEq(t, `{"argv":["sh","-c","exit 1"]}`, string(fake.submitted[0].Tasks[0].Payload))
	assert.Contains(t, stdout.String(), "submitted 1 tasks in batch b1")
	assert.Contains(t, stdout.String(), "exit code 1")
}
