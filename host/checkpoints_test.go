package host

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/internal/ratelog"
	"github.com/dtf-io/dtf/plugin/pb"
	"github.com/dtf-io/dtf/protocol"
	wirepb "github.com/dtf-io/dtf/protocol/pb"
	"github.com/dtf-io/dtf/sdk"
)

// stepExecutor serves "step" tasks: it saves one checkpoint for each value
// received on steps, with the value as data, and succeeds when steps is
// closed. resumed receives the checkpoint each attempt started from.
type stepExecutor struct {
	steps   chan string
	resumed chan *sdk.Checkpoint
}

func newStepExecutor() *stepExecutor {
	return &stepExecutor{steps: make(chan string), resumed: make(chan *sdk.Checkpoint, 4)}
}

func (e *stepExecutor) Info() sdk.Info {
	return sdk.Info{Name: "step", Version: "test", TaskTypes: []string{"step"}}
}

func (e *stepExecutor) Configure(json.RawMessage) error { return nil }

func (e *stepExecutor) Execute(ctx context.Context, task sdk.Task, r sdk.Reporter) (sdk.Result, error) {
	e.resumed <- task.Checkpoint
	for {
		select {
		case data, ok := <-e.steps:
			if !ok {
				return sdk.Result{Status: sdk.StatusSucceeded}, nil
			}
			if err := r.Checkpoint([]byte(data), 0.5, "at "+data); err != nil {
				return sdk.Result{}, err
			}
		case <-ctx.Done():
			return sdk.Result{}, ctx.Err()
		}
	}
}

// startStepHost runs a host with a stepExecutor and a synced session.
func startStepHost(t *testing.T) (*harness, *fakeConnector, *stepExecutor) {
	t.Helper()
	exec := newStepExecutor()
	hs := startHost(t, testConfig(t, "stepper"), map[string]sdk.Executor{"stepper": exec})
	c := nextConnector(t, hs)
	c.state("connected", "")
	expectFrame(t, c, "state_sync")
	c.frame(t, syncResultFrame())
	return hs, c, exec
}

// step makes the executor save a checkpoint and returns its frame.
func step(t *testing.T, c *fakeConnector, exec *stepExecutor, data string) *wirepb.Checkpoint {
	t.Helper()
	exec.steps <- data
	cp := expectFrame(t, c, "checkpoint").GetCheckpoint()
	require.Equal(t, data, string(cp.GetData()))
	return cp
}

func checkpointAckFrame(taskID string, attempt uint32, sequence uint64) *wirepb.Frame {
	return &wirepb.Frame{Body: &wirepb.Frame_CheckpointAck{CheckpointAck: &wirepb.CheckpointAck{
		Ref: &wirepb.TaskRef{TaskId: taskID, Attempt: attempt}, Sequence: sequence, Applied: true,
	}}}
}

func TestCheckpointFramesNumbered(t *testing.T) {
	_, c, exec := startStepHost(t)
	c.frame(t, assignFrame("t1", 2, "step"))
	assert.Nil(t, <-exec.resumed, "an Assign without a checkpoint is a fresh start")

	for i := 1; i <= 3; i++ {
		cp := step(t, c, exec, fmt.Sprint(i))
		assert.Equal(t, "t1", cp.GetRef().GetTaskId())
		assert.EqualValues(t, 2, cp.GetRef().GetAttempt())
		assert.EqualValues(t, i, cp.GetSequence())
		assert.InDelta(t, 0.5, cp.GetFraction(), 1e-9)
		assert.Equal(t, "at "+fmt.Sprint(i), cp.GetMessage())
		assert.Positive(t, cp.GetSavedUnixMs())
	}
	close(exec.steps)
	expectFrame(t, c, "task_outcome")
}

func TestOutcomeCarriesUnacknowledgedCheckpoint(t *testing.T) {
	_, c, exec := startStepHost(t)
	c.frame(t, assignFrame("t1", 1, "step"))
	<-exec.resumed
	for i := 1; i <= 3; i++ {
		step(t, c, exec, fmt.Sprint(i))
	}
	close(exec.steps)

	outcome := expectFrame(t, c, "task_outcome").GetTaskOutcome()
	require.NotNil(t, outcome.GetCheckpoint(), "the newest checkpoint was never acknowledged")
	assert.EqualValues(t, 3, outcome.GetCheckpoint().GetSequence())
	assert.Equal(t, "3", string(outcome.GetCheckpoint().GetData()))
	assert.EqualValues(t, 1, outcome.GetCheckpoint().GetRef().GetAttempt())
}

func TestCheckpointAckForgetsCovered(t *testing.T) {
	hs, c, exec := startStepHost(t)
	ref := taskRef{TaskID: "t1", Attempt: 1}
	c.frame(t, assignFrame("t1", 1, "step"))
	<-exec.resumed
	step(t, c, exec, "1")
	step(t, c, exec, "2")

	// An acknowledgement of an older sequence keeps the newer checkpoint.
	c.frame(t, checkpointAckFrame("t1", 1, 1))
	c.frame(t, checkpointAckFrame("other", 1, 9))
	step(t, c, exec, "3")
	pending := hs.host.pendingCheckpoint(ref)
	require.NotNil(t, pending)
	assert.EqualValues(t, 3, pending.GetSequence())

	// An acknowledgement that covers the newest one clears it, even when
	// the coordinator did not apply it.
	c.frame(t, &wirepb.Frame{Body: &wirepb.Frame_CheckpointAck{CheckpointAck: &wirepb.CheckpointAck{
		Ref: ref.proto(), Sequence: 3, Applied: false, Reason: "stale",
	}}})
	require.Eventually(t, func() bool { return hs.host.pendingCheckpoint(ref) == nil }, waitFor, 10*time.Millisecond)

	close(exec.steps)
	outcome := expectFrame(t, c, "task_outcome").GetTaskOutcome()
	assert.Nil(t, outcome.GetCheckpoint(), "an acknowledged checkpoint is not sent again")
}

func TestPendingCheckpointResentAfterSync(t *testing.T) {
	_, c, exec := startStepHost(t)
	c.frame(t, assignFrame("t1", 1, "step"))
	<-exec.resumed
	step(t, c, exec, "1")
	step(t, c, exec, "2")

	// A new session starts with an empty send queue, so the pending
	// checkpoint goes out again after the state sync result.
	c.state("connected", "")
	sync := expectFrame(t, c, "state_sync").GetStateSync()
	require.Len(t, sync.GetRunning(), 1)
	c.frame(t, syncResultFrame())
	again := expectFrame(t, c, "checkpoint").GetCheckpoint()
	assert.EqualValues(t, 2, again.GetSequence())
	assert.Equal(t, "2", string(again.GetData()))

	close(exec.steps)
	expectFrame(t, c, "task_outcome")
}

func TestAssignCheckpointReachesExecutor(t *testing.T) {
	_, c, exec := startStepHost(t)
	assign := assignFrame("t1", 4, "step")
	assign.GetAssign().Checkpoint = &wirepb.Checkpoint{
		Ref:      &wirepb.TaskRef{TaskId: "t1", Attempt: 3},
		Sequence: 37,
		Data:     []byte("state-37"),
		Fraction: 0.37,
		Message:  "step 37",
	}
	c.frame(t, assign)

	resumed := <-exec.resumed
	require.NotNil(t, resumed)
	assert.Equal(t, "state-37", string(resumed.Data))
	assert.Equal(t, 3, resumed.Attempt)
	assert.EqualValues(t, 37, resumed.Sequence)
	assert.InDelta(t, 0.37, resumed.Fraction, 1e-9)
	assert.Equal(t, "step 37", resumed.Message)

	// The new attempt numbers its own checkpoints from 1.
	cp := step(t, c, exec, "38")
	assert.EqualValues(t, 4, cp.GetRef().GetAttempt())
	assert.EqualValues(t, 1, cp.GetSequence())
	close(exec.steps)
	expectFrame(t, c, "task_outcome")
}

func TestOversizedCheckpointDropped(t *testing.T) {
	h, err := New(testConfig(t, "stepper"), nil)
	require.NoError(t, err)
	task := &runningTask{ref: taskRef{TaskID: "t1", Attempt: 1}}

	h.saveCheckpoint(task, &pb.Checkpoint{Data: make([]byte, protocol.MaxCheckpointBytes+1)})
	assert.Nil(t, task.takePendingCheckpoint())
	assert.Zero(t, task.checkpoints.sequence, "a dropped checkpoint takes no sequence number")

	h.saveCheckpoint(task, &pb.Checkpoint{Data: make([]byte, protocol.MaxCheckpointBytes)})
	kept := task.takePendingCheckpoint()
	require.NotNil(t, kept, "data at the limit is kept")
	assert.EqualValues(t, 1, kept.GetSequence())
}

// TestRejectedCheckpointLogging checks that rejections trailing an attempt
// that ended here are not warned about, and that those of a running
// attempt give one warning per task and interval.
func TestRejectedCheckpointLogging(t *testing.T) {
	var logs bytes.Buffer
	h := &Host{
		logger:         hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info}),
		running:        map[taskRef]*runningTask{},
		checkpointLogs: ratelog.New(time.Hour),
	}
	reject := func(taskID string, sequence uint64) *wirepb.Frame {
		return &wirepb.Frame{Body: &wirepb.Frame_CheckpointAck{CheckpointAck: &wirepb.CheckpointAck{
			Ref: &wirepb.TaskRef{TaskId: taskID, Attempt: 1}, Sequence: sequence, Reason: "late: attempt 1 ended",
		}}}
	}

	for sequence := range uint64(5) {
		h.handleCheckpointAck(reject("ended", sequence+1))
	}
	assert.Empty(t, logs.String(), "rejections after the attempt ended here")

	h.running[taskRef{TaskID: "live", Attempt: 1}] = &runningTask{}
	for sequence := range uint64(5) {
		h.handleCheckpointAck(reject("live", sequence+1))
	}
	assert.Equal(t, 1, strings.Count(logs.String(), "checkpoint of a running attempt rejected by coordinator"),
		logs.String())
	assert.Contains(t, logs.String(), "task_id=live")
}
