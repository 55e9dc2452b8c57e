package host

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	dtfplugin "github.com/dtf-io/dtf/plugin"
	"github.com/dtf-io/dtf/protocol"
	wirepb "github.com/dtf-io/dtf/protocol/pb"
	"github.com/dtf-io/dtf/sdk"
)

// largeExecutor returns results over every bound: 5 MB of output, a 6 MB
// message of short lines, 2 MiB of data and a long progress message.
type largeExecutor struct{}

func (largeExecutor) Info() sdk.Info {
	return sdk.Info{Name: "large", Version: "test", TaskTypes: []string{"large"}}
}

func (largeExecutor) Configure(json.RawMessage) error { return nil }

func (largeExecutor) Execute(_ context.Context, _ sdk.Task, r sdk.Reporter) (sdk.Result, error) {
	r.Progress(0.5, strings.Repeat("p\n", 1<<20))
	output := bytes.Repeat([]byte("o"), 5_000_000)
	copy(output[len(output)-4:], "tail")
	data := []byte(`"` + strings.Repeat("d", 2<<20) + `"`)
	return sdk.Result{
		Status:  sdk.StatusFailed,
		Message: strings.Repeat("m\n", 3_000_000),
		Output:  output,
		Data:    data,
	}, nil
}

func TestLargeResultFitsOneFrame(t *testing.T) {
	cfg := testConfig(t, "large")
	hs := startHost(t, cfg, map[string]sdk.Executor{"large": largeExecutor{}})
	c := nextConnector(t, hs)
	connectedState(c, false)
	expectFrame(t, c, "state_sync")
	c.frame(t, syncResultFrame())

	c.frame(t, assignFrame("big", 1, "large"))
	progress := expectFrame(t, c, "task_progress").GetTaskProgress()
	assert.LessOrEqual(t, len(progress.GetMessage()), dtfplugin.MaxResultMessageBytes)
	assert.NotContains(t, progress.GetMessage(), "\n")

	outcome := expectFrame(t, c, "task_outcome").GetTaskOutcome()
	assert.Equal(t, wirepb.Status_STATUS_FAILED, outcome.GetStatus())
	assert.Len(t, outcome.GetOutput(), dtfplugin.MaxResultOutputBytes)
	assert.True(t, bytes.HasSuffix(outcome.GetOutput(), []byte("tail")), "the output's tail is kept")
	assert.Nil(t, outcome.GetResult())
	message := outcome.GetMessage()
	assert.LessOrEqual(t, len(message), dtfplugin.MaxResultMessageBytes)
	assert.NotContains(t, message, "\n")
	assert.True(t, strings.HasPrefix(message, "m / m / m"), "message starts %q", message[:20])
	assert.Contains(t, message, "output cut to its last 1048576 of 5000000 bytes")
	assert.Contains(t, message, "result data of 2097154 bytes dropped")

	// The acknowledgement frees the attempt, so the outcome was sendable.
	c.frame(t, ackFrame("big", 1))
	require.Eventually(t, func() bool { return len(outboxFiles(t, cfg)) == 0 }, waitFor, 10*time.Millisecond)

	// The log line of the outcome is one short quoted line.
	logs := hs.logs.String()
	assert.Less(t, strings.Count(logs, "\nm"), 10, "the message's lines reached the log")
	assert.Contains(t, logs, "outcome bounded to fit one frame")
}

// A held outcome over the connector's frame limit, as an outbox from before
// the bounds may hold, is replaced with a failed outcome that names the
// rejection.
func TestRejectedOutcomeBecomesFailure(t *testing.T) {
	cfg := testConfig(t, "echo-runner")
	outbox, err := OpenOutbox(filepath.Join(cfg.DataDir, "outbox"))
	require.NoError(t, err)
	require.NoError(t, outbox.Put(&wirepb.TaskOutcome{
		Ref: &wirepb.TaskRef{TaskId: "wedged", Attempt: 1}, Status: wirepb.Status_STATUS_SUCCEEDED,
		Output: bytes.Repeat([]byte("o"), protocol.DefaultMaxFrameBytes+1),
	}))

	hs := startHost(t, cfg, map[string]sdk.Executor{"echo-runner": &testExecutor{name: "e", types: []string{"echo"}}})
	c := nextConnector(t, hs)
	connectedState(c, false)
	expectFrame(t, c, "state_sync")
	c.frame(t, syncResultFrame())

	outcome := expectFrame(t, c, "task_outcome").GetTaskOutcome()
	assert.Equal(t, "wedged", outcome.GetRef().GetTaskId())
	assert.Equal(t, wirepb.Status_STATUS_FAILED, outcome.GetStatus())
	assert.Empty(t, outcome.GetOutput())
	assert.Contains(t, outcome.GetMessage(), "rejected this attempt's succeeded outcome")
	assert.Contains(t, outcome.GetMessage(), "max_frame_bytes")

	// The outbox file holds the failed outcome, so a restart sends it too.
	stored, err := outbox.Get(taskRef{"wedged", 1})
	require.NoError(t, err)
	assert.Equal(t, wirepb.Status_STATUS_FAILED, stored.GetStatus())

	c.frame(t, ackFrame("wedged", 1))
	require.Eventually(t, func() bool { return len(outboxFiles(t, cfg)) == 0 }, waitFor, 10*time.Millisecond)
}

// A connector that rejects even the small failed outcome makes the host
// drop it, so the outbox does not keep it forever.
func TestRejectedFailureIsDropped(t *testing.T) {
	hs, c := startSynced(t)
	c.rejectOutcomes.Store(true)
	c.frame(t, assignFrame("t1", 1, "echo"))

	require.Eventually(t, func() bool { return c.failedSends.Load() >= 2 && !hs.host.isHeld(taskRef{"t1", 1}) },
		waitFor, 10*time.Millisecond)
	// The host logs the loss after it dropped the held outcome.
	assert.Eventually(t, func() bool {
		return strings.Contains(hs.logs.String(), "connector rejected the failed outcome")
	}, waitFor, 10*time.Millisecond)
	assert.Equal(t, int32(2), c.failedSends.Load(), "the outcome was sent after it was dropped")
}

func TestBoundOutcomeKeepsSmallOutcome(t *testing.T) {
	outcome := &wirepb.TaskOutcome{
		Ref:     &wirepb.TaskRef{TaskId: "t", Attempt: 1},
		Status:  wirepb.Status_STATUS_SUCCEEDED,
		Message: "ok",
		Output:  []byte("out"),
		Result:  []byte(`{"a":1}`),
	}
	assert.Empty(t, boundOutcome(outcome))
	assert.Equal(t, "ok", outcome.GetMessage())
	assert.Equal(t, "out", string(outcome.GetOutput()))
	assert.JSONEq(t, `{"a":1}`, string(outcome.GetResult()))
}
