package coordinator

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/protocol"
	"github.com/dtf-io/dtf/protocol/pb"
)

func checkpointFrame(ref *pb.TaskRef, sequence uint64, data []byte) *pb.Frame {
	return &pb.Frame{Body: &pb.Frame_Checkpoint{Checkpoint: &pb.Checkpoint{
		Ref:         ref,
		Sequence:    sequence,
		Data:        data,
		Fraction:    float64(sequence) / 10,
		Message:     fmt.Sprintf("step %d", sequence),
		SavedUnixMs: time.Now().UnixMilli(),
	}}}
}

// sendCheckpoint sends a checkpoint and returns its acknowledgement.
func sendCheckpoint(t *testing.T, w *fakeWorker, ref *pb.TaskRef, sequence uint64, data []byte) *pb.CheckpointAck {
	t.Helper()
	w.send(checkpointFrame(ref, sequence, data))
	ack := w.expect("checkpoint_ack").GetCheckpointAck()
	assert.Equal(t, ref.GetTaskId(), ack.GetRef().GetTaskId())
	assert.Equal(t, ref.GetAttempt(), ack.GetRef().GetAttempt())
	assert.Equal(t, sequence, ack.GetSequence())
	return ack
}

func TestCheckpointHandlerAcks(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	w, _ := connectSynced(t, ts, "w1", []string{"command"})
	task := submit(t, ts, commandSpec()).Tasks[0]
	assign := w.expect("assign").GetAssign()
	assert.Nil(t, assign.GetCheckpoint(), "the first attempt starts fresh")
	ref := assign.GetRef()

	assert.True(t, sendCheckpoint(t, w, ref, 1, []byte("one")).GetApplied())
	assert.True(t, sendCheckpoint(t, w, ref, 2, []byte("two")).GetApplied())

	older := sendCheckpoint(t, w, ref, 1, []byte("one"))
	assert.False(t, older.GetApplied())
	assert.Contains(t, older.GetReason(), "stale checkpoint 1 of attempt 1")

	replay := sendCheckpoint(t, w, ref, 2, []byte("two"))
	assert.False(t, replay.GetApplied())
	assert.Contains(t, replay.GetReason(), "duplicate")

	big := sendCheckpoint(t, w, ref, 3, make([]byte, protocol.MaxCheckpointBytes+1))
	assert.False(t, big.GetApplied())
	assert.Contains(t, big.GetReason(), "exceeds the limit of 1048576 bytes")

	unknown := sendCheckpoint(t, w, &pb.TaskRef{TaskId: "t-absent", Attempt: 1}, 1, []byte("x"))
	assert.False(t, unknown.GetApplied())
	assert.Equal(t, "unknown task t-absent", unknown.GetReason())

	stats := ts.Stats()
	assert.EqualValues(t, 1, stats.StaleCheckpoints, "the replayed copy is not counted as stale")
	assert.EqualValues(t, 2, stats.RejectedCheckpoints)

	view := getTask(t, ts, task.ID)
	require.NotNil(t, view.Checkpoint)
	assert.Equal(t, 1, view.Checkpoint.Attempt)
	assert.EqualValues(t, 2, view.Checkpoint.Sequence)
	assert.Equal(t, 3, view.Checkpoint.SizeBytes)
	assert.InDelta(t, 0.2, view.Checkpoint.Fraction, 1e-9)
	assert.Equal(t, "step 2", view.Checkpoint.Message)
	assert.False(t, view.Checkpoint.Stored.IsZero())
}

func TestCheckpointResumesNextAttempt(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.Workers.ReassignAfter = 300 * time.Millisecond
	ts := startServer(t, cfg)

	w1, _ := connectSynced(t, ts, "w1", []string{"command"})
	task := submit(t, ts, commandSpec()).Tasks[0]
	first := w1.expect("assign").GetAssign().GetRef()
	for seq := uint64(1); seq <= 3; seq++ {
		require.True(t, sendCheckpoint(t, w1, first, seq, []byte(fmt.Sprint("state-", seq))).GetApplied())
	}
	w1.close()
	require.Eventually(t, func() bool {
		return getTask(t, ts, task.ID).State == api.StateQueued
	}, waitFor, 20*time.Millisecond, "the task is requeued after reassign_after")

	w2, _ := connectSynced(t, ts, "w2", []string{"command"})
	assign := w2.expect("assign").GetAssign()
	second := assign.GetRef()
	require.EqualValues(t, 2, second.GetAttempt())
	resume := assign.GetCheckpoint()
	require.NotNil(t, resume, "a retried attempt gets the stored checkpoint")
	assert.EqualValues(t, 1, resume.GetRef().GetAttempt())
	assert.EqualValues(t, 3, resume.GetSequence())
	assert.Equal(t, "state-3", string(resume.GetData()))
	assert.Equal(t, "step 3", resume.GetMessage())

	view := getTask(t, ts, task.ID)
	require.Len(t, view.Attempts, 2)
	require.NotNil(t, view.Attempts[1].ResumedFrom)
	assert.Equal(t, api.CheckpointRef{Attempt: 1, Sequence: 3}, *view.Attempts[1].ResumedFrom)

	// The old worker comes back and sends a late checkpoint of attempt 1.
	w1b, _ := connectSynced(t, ts, "w1", []string{"command"}, first)
	late := sendCheckpoint(t, w1b, first, 4, []byte("state-4"))
	assert.False(t, late.GetApplied())
	assert.Contains(t, late.GetReason(), "stale attempt 1, current attempt is 2")
	assert.EqualValues(t, 1, ts.Stats().StaleCheckpoints)

	// The outcome of attempt 2 overtook its only checkpoint and carries it.
	outcome := outcomeFrame(second, pb.Status_STATUS_SUCCEEDED)
	outcome.GetTaskOutcome().Checkpoint = checkpointFrame(second, 1, []byte("final")).GetCheckpoint()
	w2.send(outcome)
	require.True(t, w2.expect("outcome_ack").GetOutcomeAck().GetApplied())

	done := getTask(t, ts, task.ID)
	assert.Equal(t, api.StateSucceeded, done.State)
	require.NotNil(t, done.Checkpoint)
	assert.Equal(t, 2, done.Checkpoint.Attempt)
	assert.EqualValues(t, 1, done.Checkpoint.Sequence)
	assert.Equal(t, len("final"), done.Checkpoint.SizeBytes)
}
