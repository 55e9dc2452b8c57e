package connector

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/protocol/pb"
)

func queuedFrame(level Priority, n int) *pb.Frame {
	return &pb.Frame{Body: &pb.Frame_TaskProgress{TaskProgress: &pb.TaskProgress{
		Message: fmt.Sprintf("%d-%d", level, n),
	}}}
}

func TestPriorityOf(t *testing.T) {
	assert.Equal(t, PriorityControl, priorityOf("state_sync"))
	assert.Equal(t, PriorityOutcome, priorityOf("task_outcome"))
	assert.Equal(t, PriorityProgress, priorityOf("task_started"))
	assert.Equal(t, PriorityProgress, priorityOf("task_progress"))
	assert.Equal(t, PriorityTelemetry, priorityOf("worker_metrics"))
	assert.Equal(t, PriorityTelemetry, priorityOf("plugin_list"))
}

func TestSendQueueOrdersByPriority(t *testing.T) {
	q := newSendQueue(16)
	ctx := context.Background()
	require.NoError(t, q.Push(ctx, PriorityProgress, queuedFrame(PriorityProgress, 0)))
	require.NoError(t, q.Push(ctx, PriorityOutcome, queuedFrame(PriorityOutcome, 0)))
	require.NoError(t, q.Push(ctx, PriorityControl, queuedFrame(PriorityControl, 0)))
	require.NoError(t, q.Push(ctx, PriorityOutcome, queuedFrame(PriorityOutcome, 1)))

	var order []string
	for frame, _ := q.Pop(); frame != nil; frame, _ = q.Pop() {
		order = append(order, frame.GetTaskProgress().GetMessage())
	}
	assert.Equal(t, []string{"0-0", "1-0", "1-1", "3-0"}, order)
}

func TestSendQueueAntiStarvation(t *testing.T) {
	q := newSendQueue(100)
	ctx := context.Background()
	for n := range 40 {
		require.NoError(t, q.Push(ctx, PriorityControl, queuedFrame(PriorityControl, n)))
	}
	for n := range 3 {
		require.NoError(t, q.Push(ctx, PriorityOutcome, queuedFrame(PriorityOutcome, n)))
		require.NoError(t, q.Push(ctx, PriorityTelemetry, queuedFrame(PriorityTelemetry, n)))
	}

	// Count, per lower level, the frames of higher levels served between
	// two of its own.
	var higher [priorityLevels]int
	served := 0
	for frame, level := q.Pop(); frame != nil; frame, level = q.Pop() {
		served++
		for waiting := level + 1; int(waiting) < priorityLevels; waiting++ {
			higher[waiting]++
		}
		if level != PriorityControl {
			assert.LessOrEqual(t, higher[level], starvationLimit,
				"level %d waited for %d frames of higher levels", level, higher[level])
			higher[level] = 0
		}
	}
	assert.Equal(t, 46, served)
}

func TestSendQueueBackpressure(t *testing.T) {
	q := newSendQueue(2)
	ctx := context.Background()
	require.NoError(t, q.Push(ctx, PriorityOutcome, queuedFrame(PriorityOutcome, 0)))
	require.NoError(t, q.Push(ctx, PriorityOutcome, queuedFrame(PriorityOutcome, 1)))
	require.NoError(t, q.Push(ctx, PriorityControl, queuedFrame(PriorityControl, 0)),
		"levels are bounded one by one")

	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, q.Push(short, PriorityOutcome, queuedFrame(PriorityOutcome, 2)), context.DeadlineExceeded)

	// A pop from the full level makes room for a blocked push.
	pushed := make(chan error, 1)
	go func() { pushed <- q.Push(ctx, PriorityOutcome, queuedFrame(PriorityOutcome, 3)) }()
	_, level := q.Pop()
	assert.Equal(t, PriorityControl, level)
	_, level = q.Pop()
	assert.Equal(t, PriorityOutcome, level)
	select {
	case err := <-pushed:
		assert.NoError(t, err)
	case <-time.After(waitFor):
		t.Fatal("push stayed blocked after a pop")
	}

	// Close fails blocked and later pushes.
	q.Close()
	assert.ErrorIs(t, q.Push(ctx, PriorityOutcome, queuedFrame(PriorityOutcome, 4)), errQueueClosed)
}
