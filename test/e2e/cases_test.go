package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/protocol"
	"github.com/dtf-io/dtf/protocol/pb"
	"github.com/dtf-io/dtf/test/cluster"
)

// A 30-second task whose coordinator restarts at second 10 reports once,
// and the task is not handed out again while its first attempt is alive.
func TestResultAcrossCoordinatorRestart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.startWorker("worker-1", 1)
	e.waitConnected("worker-1")

	batch := e.submitCommands([]string{"sh", "-c", "sleep 30; echo finished"})
	e.waitRunning(batch, 1)
	started := time.Now()

	// Restart at second 10 of the task.
	waitUntil(t, started.Add(10*time.Second))
	require.NoError(t, e.coordinator.Stop(10*time.Second))
	e.startCoordinator()

	tasks := e.waitTerminal(batch, 2*time.Minute)
	e.requireExactlyOnce(tasks)
	assert.Len(t, tasks[0].Attempts, 1, "the task was handed out again: %+v", tasks[0].Attempts)
	assert.Contains(t, tasks[0].Outcome.Output, "finished")
	// A graceful restart keeps the session: the worker resumes it instead of
	// starting a new one and syncing its state.
	assert.Contains(t, e.coordinator.Log(), "worker resumed its session")
	assert.NotContains(t, e.coordinator.Log(), "session not resumable")
}

// A link that drops every packet in both directions right after a task is
// accepted is noticed by both sides; the worker reconnects once the link
// returns and the task's outcome arrives once.
func TestSilentLinkAfterTaskAccepted(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	worker := e.startWorker("worker-1", 1)
	e.waitConnected("worker-1")

	batch := e.submitCommands([]string{"sh", "-c", "sleep 3; echo done"})
	e.waitRunning(batch, 1)
	e.proxy.Blackhole(true)

	// The coordinator's heartbeat timeout is 2 s, the worker's too; allow
	// one more timeout for scheduling and polling.
	e.waitDisconnectedWithin("worker-1", 4*time.Second)
	err := cluster.Poll(context.Background(), 4*time.Second, 50*time.Millisecond, func() (bool, error) {
		return strings.Contains(worker.Log(), "disconnected from coordinator"), nil
	})
	require.NoError(t, err, "worker did not notice the silent link\n%s", worker.Log())

	e.proxy.Blackhole(false)
	tasks := e.waitTerminal(batch, time.Minute)
	e.requireExactlyOnce(tasks)
	workers, err := e.client.ListWorkers(context.Background())
	require.NoError(t, err)
	require.Len(t, workers, 1)
	assert.GreaterOrEqual(t, workers[0].Connects, 2)
}

// A worker host killed with SIGKILL leaves no plugin or task process
// behind, and the restarted host starts clean and finishes the task.
func TestHostKilledLeavesNoPlugins(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	worker := e.startWorker("worker-1", 1)
	e.waitConnected("worker-1")

	// The first attempt sleeps long; the retry finds the flag and exits.
	// The sleep's unique argument marks both the shell and its child.
	marker := fmt.Sprintf("60.%06d", time.Now().UnixNano()%1000000)
	flag := filepath.Join(e.dir, "flag")
	script := fmt.Sprintf("if [ -e %s ]; then exit 0; fi; touch %s; sleep %s", flag, flag, marker)
	batch := e.submitCommands([]string{"sh", "-c", script})
	e.waitRunning(batch, 1)
	err := cluster.Poll(context.Background(), 10*time.Second, 50*time.Millisecond, func() (bool, error) {
		return len(processesWith(marker)) > 0, nil
	})
	require.NoError(t, err, "task process did not start")

	plugins := cluster.ChildrenOf(worker.Pid())
	require.Len(t, plugins, 3, "the worker runs the reconnection, command and gotest plugins")
	worker.Kill()
	err = cluster.Poll(context.Background(), 5*time.Second, 50*time.Millisecond, func() (bool, error) {
		return len(cluster.Alive(plugins)) == 0 && len(processesWith(marker)) == 0, nil
	})
	require.NoError(t, err, "left behind: plugins %v, task processes %v",
		cluster.Alive(plugins), processesWith(marker))

	e.startWorker("worker-1", 1)
	tasks := e.waitTerminal(batch, time.Minute)
	require.Len(t, tasks, 1)
	task := tasks[0]
	assert.Equal(t, api.StateSucceeded, task.State)
	require.Len(t, task.Attempts, 2)
	assert.Equal(t, "lost", task.Attempts[0].State)
	assert.Equal(t, api.StateSucceeded, task.Attempts[1].State)
}

// A frame that arrives after its worker was evicted gets the reply
// "register again", and the coordinator keeps accepting workers.
func TestLateFrameFromEvictedWorker(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	url := "ws://" + e.addr + protocol.ConnectPath
	dialer := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}, HandshakeTimeout: 5 * time.Second}

	// A worker that sends hello and then falls silent is evicted after the
	// heartbeat timeout.
	conn, _, err := dialer.Dial(url, nil)
	require.NoError(t, err)
	defer conn.Close()
	writeFrame(t, conn, &pb.Frame{Body: &pb.Frame_Hello{Hello: &pb.Hello{
		WorkerId: "silent", Token: token, Slots: 1, TaskTypes: []string{"command"},
	}}})
	e.waitConnected("silent")
	e.waitDisconnectedWithin("silent", 5*time.Second)

	// Its delayed outcome arrives on a fresh connection.
	late, _, err := dialer.Dial(url, nil)
	require.NoError(t, err)
	defer late.Close()
	writeFrame(t, late, &pb.Frame{Body: &pb.Frame_TaskOutcome{TaskOutcome: &pb.TaskOutcome{
		Ref: &pb.TaskRef{TaskId: "t-late", Attempt: 1}, Status: pb.Status_STATUS_SUCCEEDED,
	}}})
	reply := readFrame(t, late, 5*time.Second)
	require.NotNil(t, reply.GetReject(), "got %s", protocol.TypeOf(reply))
	assert.Equal(t, pb.Reject_CODE_REGISTER_AGAIN, reply.GetReject().GetCode())

	// A new worker is accepted within a second.
	fresh, _, err := dialer.Dial(url, nil)
	require.NoError(t, err)
	defer fresh.Close()
	writeFrame(t, fresh, &pb.Frame{Body: &pb.Frame_Hello{Hello: &pb.Hello{
		WorkerId: "fresh", Token: token, Slots: 1, TaskTypes: []string{"command"},
	}}})
	welcome := readFrame(t, fresh, time.Second)
	require.NotNil(t, welcome.GetWelcome(), "got %s", protocol.TypeOf(welcome))
}

func writeFrame(t *testing.T, conn *websocket.Conn, frame *pb.Frame) {
	t.Helper()
	data, err := protocol.Encode(frame)
	require.NoError(t, err)
	require.NoError(t, conn.WriteMessage(websocket.BinaryMessage, data))
}

// readFrame returns the next frame that is not a heartbeat.
func readFrame(t *testing.T, conn *websocket.Conn, timeout time.Duration) *pb.Frame {
	t.Helper()
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(timeout)))
	for {
		_, data, err := conn.ReadMessage()
		require.NoError(t, err)
		frame, err := protocol.Decode(data, 0)
		require.NoError(t, err)
		if frame.GetHeartbeat() == nil {
			return frame
		}
	}
}

// waitUntil blocks until the wall clock reaches at; the test's schedule of
// faults is defined in task time.
func waitUntil(t *testing.T, at time.Time) {
	t.Helper()
	select {
	case <-time.After(time.Until(at)):
	case <-t.Context().Done():
		t.Fatal("test ended while waiting")
	}
}

// processesWith returns the pids whose command line contains marker.
func processesWith(marker string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, entry := range entries {
		var pid int
		if _, err := fmt.Sscanf(entry.Name(), "%d", &pid); err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", entry.Name(), "cmdline"))
		if err == nil && strings.Contains(string(cmdline), marker) {
			pids = append(pids, pid)
		}
	}
	return pids
}
