package host

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	wirepb "github.com/dtf-io/dtf/protocol/pb"
)

func TestOutboxDurability(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "outbox")
	outbox, err := OpenOutbox(dir)
	require.NoError(t, err)

	outcomes := []*wirepb.TaskOutcome{
		{Ref: &wirepb.TaskRef{TaskId: "t1", Attempt: 1}, Status: wirepb.Status_STATUS_SUCCEEDED,
			Output: []byte("ok\n"), Result: []byte(`{"a":1}`), StartedUnixMs: 10, FinishedUnixMs: 20},
		{Ref: &wirepb.TaskRef{TaskId: "../escape/id", Attempt: 4}, Status: wirepb.Status_STATUS_FAILED},
	}
	for _, outcome := range outcomes {
		require.NoError(t, outbox.Put(outcome))
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, tempPrefix+"123"), []byte("partial"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "bad-1.json"), []byte("{not json"), 0o600))

	reopened, err := OpenOutbox(dir)
	require.NoError(t, err)
	loaded, problems, err := reopened.Load()
	require.NoError(t, err)
	require.Len(t, problems, 1)
	assert.Contains(t, problems[0].Error(), "bad-1.json")
	require.Len(t, loaded, 2)
	byID := map[string]*wirepb.TaskOutcome{}
	for _, outcome := range loaded {
		byID[outcome.GetRef().GetTaskId()] = outcome
	}
	for _, want := range outcomes {
		assert.True(t, proto.Equal(want, byID[want.GetRef().GetTaskId()]), "outcome %v", want.GetRef())
	}

	names := dirNames(t, dir)
	assert.NotContains(t, names, tempPrefix+"123", "leftover temporary file removed")
	assert.Contains(t, names, "bad-1.json"+corruptSuffix)
	for _, name := range names {
		assert.NotContains(t, name, "/", "file name %q", name)
	}

	require.NoError(t, reopened.Delete(taskRef{TaskID: "t1", Attempt: 1}))
	require.NoError(t, reopened.Delete(taskRef{TaskID: "t1", Attempt: 1}), "second delete is harmless")
	require.NoError(t, reopened.Delete(taskRef{TaskID: "../escape/id", Attempt: 4}))
	loaded, _, err = reopened.Load()
	require.NoError(t, err)
	assert.Empty(t, loaded)
}

func TestOutboxPutReplaces(t *testing.T) {
	outbox, err := OpenOutbox(t.TempDir())
	require.NoError(t, err)
	ref := &wirepb.TaskRef{TaskId: "t1", Attempt: 1}
	require.NoError(t, outbox.Put(&wirepb.TaskOutcome{Ref: ref, Message: "first"}))
	require.NoError(t, outbox.Put(&wirepb.TaskOutcome{Ref: ref, Message: "second"}))
	loaded, _, err := outbox.Load()
	require.NoError(t, err)
	require.Len(t, loaded, 1)
	assert.Equal(t, "second", loaded[0].GetMessage())
}

func dirNames(t *testing.T, dir string) []string {
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}
