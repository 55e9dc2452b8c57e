package host

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dtf-io/dtf/protocol"
	wirepb "github.com/dtf-io/dtf/protocol/pb"
	"github.com/dtf-io/dtf/sdk"
)

func syncFrame() *wirepb.Frame {
	return &wirepb.Frame{Body: &wirepb.Frame_StateSync{StateSync: &wirepb.StateSync{}}}
}

func TestSendUsesSendBatch(t *testing.T) {
	_, c := startSynced(t)

	c.frame(t, assignFrame("t1", 1, "echo"))
	assert.Equal(t, []string{"t1"}, nextOutcomes(t, c, 1))
	assert.Positive(t, c.batchCalls.Load())
	assert.Zero(t, c.sendCalls.Load(), "a connector with SendBatch must not get unary Sends")
}

func TestSendFallsBackToUnarySend(t *testing.T) {
	cfg := testConfig(t, "echo-runner")
	hs := startHost(t, cfg, map[string]sdk.Executor{
		"echo-runner": &testExecutor{name: "e", types: []string{"echo"}},
	})
	c := nextConnector(t, hs)
	c.unaryOnly.Store(true)
	connectedState(c, false)
	expectFrame(t, c, "state_sync")
	c.frame(t, syncResultFrame())

	c.frame(t, assignFrame("t1", 1, "echo"))
	assert.Equal(t, []string{"t1"}, nextOutcomes(t, c, 1))
	assert.Zero(t, c.batchCalls.Load())
	// The state sync, task_started, one progress report and the outcome.
	assert.GreaterOrEqual(t, c.sendCalls.Load(), int32(4))
	assert.Contains(t, hs.logs.String(), "connector plugin does not implement SendBatch")
}

func TestSendRejectionReachesCaller(t *testing.T) {
	hs, c := startSynced(t)

	tests := []struct {
		name string
		set  func(bool)
		want codes.Code
	}{
		{"no session", c.unavailable.Store, codes.Unavailable},
		{"full queue", c.exhausted.Store, codes.ResourceExhausted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.set(true)
			defer tt.set(false)
			err := hs.host.send(context.Background(), syncFrame(), waitFor)
			assert.Equal(t, tt.want, status.Code(err), "got %v", err)
		})
	}
	require.NoError(t, hs.host.send(context.Background(), syncFrame(), waitFor))
	expectFrame(t, c, "state_sync")
}

func TestProgressDoesNotWaitForPlugin(t *testing.T) {
	cfg := testConfig(t, "chatty-runner")
	hs := startHost(t, cfg, map[string]sdk.Executor{
		"chatty-runner": &testExecutor{name: "c", types: []string{"chatty"}},
	})
	c := nextConnector(t, hs)
	connectedState(c, false)
	expectFrame(t, c, "state_sync")
	c.frame(t, syncResultFrame())

	// While the plugin holds every SendBatch call, the task still runs to
	// its end, because task_started and progress do not wait for the
	// plugin's result. A synchronous send would block each of them for
	// up to bestEffortTimeout and then drop it.
	c.holdBatches.Store(true)
	c.frame(t, assignFrame("t1", 1, "chatty"))
	require.Eventually(t, func() bool { return len(outboxFiles(t, cfg)) == 1 }, waitFor, time.Millisecond,
		"the outcome must be recorded while the plugin holds the progress frames")
	c.holdBatches.Store(false)
	close(c.release)

	var types []string
	var fractions []float64
	for len(types) == 0 || types[len(types)-1] != "task_outcome" {
		select {
		case frame := <-c.sent:
			if protocol.TypeOf(frame) == "plugin_list" {
				// The host sends it after the connect, apart from the task.
				continue
			}
			types = append(types, protocol.TypeOf(frame))
			if progress := frame.GetTaskProgress(); progress != nil {
				fractions = append(fractions, progress.GetFraction())
			}
		case <-time.After(waitFor):
			t.Fatalf("host sent %v and no outcome", types)
		}
	}
	want := []string{"task_started"}
	for range chattyReports {
		want = append(want, "task_progress")
	}
	want = append(want, "task_outcome")
	assert.Equal(t, want, types, "every frame must arrive, in the order the task produced it")
	assert.IsIncreasing(t, fractions)
	assert.Zero(t, c.sendCalls.Load())
}
