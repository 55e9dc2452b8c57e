package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
)

func TestStartAttemptConcurrent(t *testing.T) {
	ctx := context.Background()
	st := openTestStore(t, filepath.Join(t.TempDir(), "dtf.db"))
	require.NoError(t, st.CreateTasks(ctx, []NewTask{newTask("t1", 3)}, testNow))

	const workers = 8
	errs := make([]error, workers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, errs[i] = st.StartAttempt(ctx, "t1", fmt.Sprintf("w%d", i), testNow)
		}()
	}
	close(start)
	wg.Wait()

	started := 0
	for _, err := range errs {
		if err == nil {
			started++
			continue
		}
		assert.ErrorIs(t, err, ErrConflict)
	}
	assert.Equal(t, 1, started, "exactly one worker starts the task")

	task, err := st.GetTask(ctx, "t1")
	require.NoError(t, err)
	assert.Equal(t, 1, task.Attempt)
	assert.Len(t, task.Attempts, 1)
}

func TestPragmas(t *testing.T) {
	st := openTestStore(t, filepath.Join(t.TempDir(), "dtf.db"))
	var mode string
	require.NoError(t, st.write.QueryRow(`PRAGMA journal_mode`).Scan(&mode))
	assert.Equal(t, "wal", mode)
	var synchronous, foreignKeys, busy int
	require.NoError(t, st.write.QueryRow(`PRAGMA synchronous`).Scan(&synchronous))
	assert.Equal(t, 2, synchronous, "synchronous is FULL")
	require.NoError(t, st.write.QueryRow(`PRAGMA foreign_keys`).Scan(&foreignKeys))
	assert.Equal(t, 1, foreignKeys)
	require.NoError(t, st.write.QueryRow(`PRAGMA busy_timeout`).Scan(&busy))
	assert.Equal(t, int(busyTimeout.Milliseconds()), busy)
}

func TestMigrationsAppliedOnce(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "dtf.db")
	files, err := fs.Glob(migrations, "migrations/*.sql")
	require.NoError(t, err)
	require.NotEmpty(t, files)

	for range 3 {
		st, err := OpenSQLite(ctx, path)
		require.NoError(t, err)
		var count, distinct int
		require.NoError(t, st.read.QueryRow(`SELECT COUNT(*), COUNT(DISTINCT version)
			FROM schema_migrations`).Scan(&count, &distinct))
		assert.Equal(t, len(files), count)
		assert.Equal(t, len(files), distinct)
		require.NoError(t, st.Close())
	}
}

func TestInvalidInput(t *testing.T) {
	ctx := context.Background()
	st := openTestStore(t, filepath.Join(t.TempDir(), "dtf.db"))
	require.NoError(t, st.CreateTasks(ctx, []NewTask{newTask("t1", 3)}, testNow))
	_, err := st.StartAttempt(ctx, "t1", "w1", testNow)
	require.NoError(t, err)

	noID := newTask("", 3)
	noType := newTask("x", 3)
	noType.Type = ""
	zeroAttempts := newTask("x", 0)
	badPayload := newTask("x", 3)
	badPayload.Payload = json.RawMessage(`{"argv":`)
	running := Outcome{TaskID: "t1", Attempt: 1, WorkerID: "w1", Status: api.StateRunning}

	cases := []struct {
		name string
		call func() error
		want string
	}{
		{"create empty id", func() error {
			return st.CreateTasks(ctx, []NewTask{noID}, testNow)
		}, "tasks[0]: id is empty"},
		{"create repeated id", func() error {
			return st.CreateTasks(ctx, []NewTask{newTask("x", 3), newTask("x", 3)}, testNow)
		}, `tasks[1]: id "x" is also used by tasks[0]`},
		{"create empty type", func() error {
			return st.CreateTasks(ctx, []NewTask{noType}, testNow)
		}, "type is empty"},
		{"create zero attempts", func() error {
			return st.CreateTasks(ctx, []NewTask{zeroAttempts}, testNow)
		}, "max_attempts 0 is invalid"},
		{"create invalid payload", func() error {
			return st.CreateTasks(ctx, []NewTask{badPayload}, testNow)
		}, "payload is not valid JSON"},
		{"get empty id", func() error {
			_, err := st.GetTask(ctx, "")
			return err
		}, "task id is empty"},
		{"start empty worker", func() error {
			_, err := st.StartAttempt(ctx, "t1", "", testNow)
			return err
		}, "worker id is empty"},
		{"lose empty id", func() error {
			_, err := st.EndAttempt(ctx, AttemptEnd{TaskID: "", Attempt: 1, State: AttemptLost, Reason: "gone"}, testNow)
			return err
		}, "task id is empty"},
		{"outcome unknown status", func() error {
			_, err := st.ApplyOutcome(ctx, running, testNow)
			return err
		}, `unknown status "running"`},
		{"outcome attempt zero", func() error {
			_, err := st.ApplyOutcome(ctx, Outcome{TaskID: "t1", WorkerID: "w1", Status: api.StateFailed}, testNow)
			return err
		}, "attempt 0 is invalid"},
		{"outcome empty worker", func() error {
			_, err := st.ApplyOutcome(ctx, Outcome{TaskID: "t1", Attempt: 1, Status: api.StateFailed}, testNow)
			return err
		}, "worker id is empty"},
		{"cancel empty id", func() error {
			_, err := st.CancelTask(ctx, "", "", testNow)
			return err
		}, "task id is empty"},
		{"worker empty id", func() error {
			return st.UpsertWorker(ctx, WorkerRecord{Slots: 1})
		}, "worker id is empty"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.False(t, errors.Is(err, ErrNotFound), "invalid input is not a missing task")
		})
	}

	task, err := st.GetTask(ctx, "t1")
	require.NoError(t, err)
	assert.Equal(t, api.StateRunning, task.State, "no invalid call changed the task")
	tasks, err := st.ListTasks(ctx, TaskFilter{})
	require.NoError(t, err)
	assert.Len(t, tasks, 1, "no invalid submission created a task")
}

func TestListTasksByState(t *testing.T) {
	ctx := context.Background()
	st := openTestStore(t, filepath.Join(t.TempDir(), "dtf.db"))
	require.NoError(t, st.CreateTasks(ctx, []NewTask{newTask("a", 3), newTask("b", 3), newTask("c", 3)}, testNow))
	_, err := st.StartAttempt(ctx, "b", "w1", testNow)
	require.NoError(t, err)

	queued, err := st.ListTasks(ctx, TaskFilter{State: api.StateQueued})
	require.NoError(t, err)
	require.Len(t, queued, 2)
	assert.Equal(t, "a", queued[0].ID)
	assert.Equal(t, "c", queued[1].ID)

	running, err := st.ListTasks(ctx, TaskFilter{Batch: "b1", State: api.StateRunning})
	require.NoError(t, err)
	require.Len(t, running, 1)
	assert.Equal(t, "b", running[0].ID)

	none, err := st.ListTasks(ctx, TaskFilter{Batch: "other"})
	require.NoError(t, err)
	assert.NotNil(t, none, "an empty result is an empty list, not nil")
	assert.Empty(t, none)
}
