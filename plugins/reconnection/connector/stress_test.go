package connector

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/coordinator/config"
	"github.com/dtf-io/dtf/plugin/pb"
	"github.com/dtf-io/dtf/protocol"
	wirepb "github.com/dtf-io/dtf/protocol/pb"
	"github.com/dtf-io/dtf/test/faultproxy"
)

// stressHost plays the worker host in the stress test. It runs each
// assigned task by sending task_started, progress frames, checkpoints and
// an outcome through the connector, syncs its state after every new
// session, and records every frame the connector forwards.
type stressHost struct {
	t         *testing.T
	connector *Connector
	frames    <-chan []byte
	// progressPerTask and checkpointsPerTask are the numbers of progress
	// frames and checkpoints each task sends.
	progressPerTask    int
	checkpointsPerTask int

	mu          sync.Mutex
	seqs        []uint64
	assigned    []*wirepb.TaskRef
	acks        []*wirepb.OutcomeAck
	syncResults int
	unexpected  []string
	running     map[string]*wirepb.TaskRef
	// checkpointAcks contains each task's checkpoint_ack frames in the
	// order they were forwarded, and checkpointsAcked is closed once a
	// task has all of them.
	checkpointAcks   map[string][]*wirepb.CheckpointAck
	checkpointsAcked map[string]chan struct{}
	// tasks counts the goroutines that run assigned tasks.
	tasks sync.WaitGroup
}

func newStressHost(t *testing.T, h *harness, progressPerTask, checkpointsPerTask int) *stressHost {
	return &stressHost{
		t:                  t,
		connector:          h.connector,
		frames:             h.stream.frames,
		progressPerTask:    progressPerTask,
		checkpointsPerTask: checkpointsPerTask,
		running:            make(map[string]*wirepb.TaskRef),
		checkpointAcks:     make(map[string][]*wirepb.CheckpointAck),
		checkpointsAcked:   make(map[string]chan struct{}),
	}
}

// send encodes frame and passes it to the connector's Send. It runs on
// goroutines other than the test's, so it reports failures with assert.
func (host *stressHost) send(frame *wirepb.Frame) {
	data, err := protocol.Encode(frame)
	if !assert.NoError(host.t, err) {
		return
	}
	_, err = host.connector.Send(context.Background(), &pb.SendRequest{Frame: data})
	assert.NoError(host.t, err, "send %s", protocol.TypeOf(frame))
}

// onState sends the state sync that a new session needs before the
// coordinator assigns anything. A resumed session needs none.
func (host *stressHost) onState(change *pb.StateChange) {
	if change.GetState() != StateConnected || change.GetResumed() {
		return
	}
	host.mu.Lock()
	report := &wirepb.StateSync{}
	for _, ref := range host.running {
		report.Running = append(report.Running, ref)
	}
	host.mu.Unlock()
	host.send(&wirepb.Frame{Body: &wirepb.Frame_StateSync{StateSync: report}})
}

// run handles forwarded frames until stop is closed.
func (host *stressHost) run(stop <-chan struct{}) {
	for {
		select {
		case data := <-host.frames:
			host.handle(data)
		case <-stop:
			return
		}
	}
}

func (host *stressHost) handle(data []byte) {
	frame, err := protocol.Decode(data, protocol.DefaultMaxFrameBytes)
	if !assert.NoError(host.t, err, "forwarded frame") {
		return
	}
	host.mu.Lock()
	defer host.mu.Unlock()
	host.seqs = append(host.seqs, frame.GetSeq())
	switch body := frame.GetBody().(type) {
	case *wirepb.Frame_Assign:
		ref := body.Assign.GetRef()
		host.assigned = append(host.assigned, ref)
		host.running[ref.GetTaskId()] = ref
		acked := make(chan struct{})
		if host.checkpointsPerTask == 0 {
			close(acked)
		}
		host.checkpointsAcked[ref.GetTaskId()] = acked
		host.tasks.Add(1)
		go func() {
			defer host.tasks.Done()
			host.runTask(ref, acked)
		}()
	case *wirepb.Frame_CheckpointAck:
		id := body.CheckpointAck.GetRef().GetTaskId()
		host.checkpointAcks[id] = append(host.checkpointAcks[id], body.CheckpointAck)
		if len(host.checkpointAcks[id]) == host.checkpointsPerTask {
			close(host.checkpointsAcked[id])
		}
	case *wirepb.Frame_OutcomeAck:
		host.acks = append(host.acks, body.OutcomeAck)
		delete(host.running, body.OutcomeAck.GetRef().GetTaskId())
	case *wirepb.Frame_StateSyncResult:
		host.syncResults++
	default:
		host.unexpected = append(host.unexpected, protocol.TypeOf(frame))
	}
}

func (host *stressHost) runTask(ref *wirepb.TaskRef, checkpointsAcked <-chan struct{}) {
	host.send(&wirepb.Frame{Body: &wirepb.Frame_TaskStarted{TaskStarted: &wirepb.TaskStarted{Ref: ref}}})
	for step := range host.progressPerTask {
		host.send(&wirepb.Frame{Body: &wirepb.Frame_TaskProgress{TaskProgress: &wirepb.TaskProgress{
			Ref:     ref,
			Message: fmt.Sprintf("step %d", step),
		}}})
	}
	for sequence := range host.checkpointsPerTask {
		host.send(&wirepb.Frame{Body: &wirepb.Frame_Checkpoint{Checkpoint: &wirepb.Checkpoint{
			Ref:      ref,
			Sequence: uint64(sequence + 1),
			Data:     fmt.Appendf(nil, "checkpoint %d", sequence+1),
		}}})
	}
	// The outcome's level is above the checkpoints', so it would overtake
	// checkpoints still queued, and the coordinator would reject those as
	// stale once the task ended. An executor that checkpoints waits the
	// same way before it reports its result.
	select {
	case <-checkpointsAcked:
	case <-time.After(4 * waitFor):
		assert.Fail(host.t, "checkpoints not acknowledged", "task %s", ref.GetTaskId())
	}
	host.send(&wirepb.Frame{Body: &wirepb.Frame_TaskOutcome{TaskOutcome: &wirepb.TaskOutcome{
		Ref:    ref,
		Status: wirepb.Status_STATUS_SUCCEEDED,
		Output: []byte("ok\n"),
	}}})
}

func (host *stressHost) counts() (acks, syncResults int) {
	host.mu.Lock()
	defer host.mu.Unlock()
	return len(host.acks), host.syncResults
}

// faultKind is one kind of fault that the fault proxy injects while the
// stress test's traffic runs.
type faultKind struct {
	name string
	// minConnections is the fewest welcomed connections the faults must
	// cause, counting the first.
	minConnections int
	// inject runs the kind's schedule of faults, which a closed stop may
	// end early, and returns how many faults it injected. short selects a
	// reduced schedule for -short.
	inject func(proxy *faultproxy.Proxy, short bool, stop <-chan struct{}) int
	// check, when not nil, checks the state history for signs that the
	// fault took effect.
	check func(t *testing.T, states []recordedState)
}

// Timers of the stress test. The blackhole outlasts the heartbeat timeouts
// of both sides, so both give up on the silent connection.
const (
	stressWorkerTimeout      = 400 * time.Millisecond
	stressWorkerMaxTimeout   = time.Second
	stressCoordinatorTimeout = time.Second
	stressBlackholeFor       = stressWorkerMaxTimeout + 300*time.Millisecond
)

// pause waits for d and returns false when stop is closed first.
func pause(d time.Duration, stop <-chan struct{}) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-stop:
		return false
	}
}

// injectAtRandom calls fault at random intervals of 20 to 120 ms, at most
// maxFaults times and for at most within.
func injectAtRandom(fault func(), maxFaults int, within time.Duration, stop <-chan struct{}) int {
	rng := rand.New(rand.NewPCG(3, 4))
	deadline := time.Now().Add(within)
	injected := 0
	for injected < maxFaults && time.Now().Before(deadline) {
		if !pause(20*time.Millisecond+time.Duration(rng.Int64N(int64(100*time.Millisecond))), stop) {
			break
		}
		fault()
		injected++
	}
	return injected
}

// repeatFault calls fault, which returns after its fault ended, times
// times with a gap before each call. A closed stop skips the calls not yet
// started, but never shortens a fault, so that each fault that starts has
// its whole effect.
func repeatFault(times int, gap time.Duration, stop <-chan struct{}, fault func()) int {
	injected := 0
	for range times {
		if !pause(gap, stop) {
			break
		}
		injected++
		fault()
	}
	return injected
}

// degradeAndCut applies a degraded link through set, cuts the connection
// in the middle of it so that the resume and replay run over the degraded
// link too, and removes the degradation through unset once stop is closed.
func degradeAndCut(proxy *faultproxy.Proxy, set, unset func(), stop <-chan struct{}) int {
	set()
	defer unset()
	if !pause(600*time.Millisecond, stop) {
		return 1
	}
	proxy.Cut()
	<-stop
	return 2
}

var faultKinds = []faultKind{
	{
		name:           "cut",
		minConnections: 3,
		inject: func(proxy *faultproxy.Proxy, short bool, stop <-chan struct{}) int {
			return injectAtRandom(func() { proxy.Cut() }, 30, 1500*time.Millisecond, stop)
		},
	},
	{
		name:           "reset",
		minConnections: 3,
		inject: func(proxy *faultproxy.Proxy, short bool, stop <-chan struct{}) int {
			return injectAtRandom(func() { proxy.Reset() }, 30, 1500*time.Millisecond, stop)
		},
	},
	{
		name:           "blackhole",
		minConnections: 2,
		inject: func(proxy *faultproxy.Proxy, short bool, stop <-chan struct{}) int {
			// One blackhole: the traffic, held back by it, ends about when
			// the blackhole does, so a second one would find no traffic.
			return repeatFault(1, 100*time.Millisecond, stop, func() {
				proxy.Blackhole(true)
				defer proxy.Blackhole(false)
				time.Sleep(stressBlackholeFor)
			})
		},
		check: func(t *testing.T, states []recordedState) {
			timedOut := 0
			for _, s := range states {
				if s.change.GetState() == StateBackingOff && strings.Contains(s.change.GetReason(), "heartbeat_timeout") {
					timedOut++
				}
			}
			assert.Positive(t, timedOut, "no connection ended by heartbeat_timeout; states:\n%s", describeStates(states))
		},
	},
	{
		name:           "delay",
		minConnections: 2,
		inject: func(proxy *faultproxy.Proxy, short bool, stop <-chan struct{}) int {
			return degradeAndCut(proxy, func() { proxy.Delay(40 * time.Millisecond) }, func() { proxy.Delay(0) }, stop)
		},
	},
	{
		name:           "throttle",
		minConnections: 2,
		inject: func(proxy *faultproxy.Proxy, short bool, stop <-chan struct{}) int {
			return degradeAndCut(proxy, func() { proxy.Throttle(12 << 10) }, func() { proxy.Throttle(0) }, stop)
		},
	},
	{
		name:           "close after upgrade",
		minConnections: 2,
		inject: func(proxy *faultproxy.Proxy, short bool, stop <-chan struct{}) int {
			times := 2
			if short {
				times = 1
			}
			return repeatFault(times, 100*time.Millisecond, stop, func() {
				proxy.CloseAfterUpgrade(true)
				defer proxy.CloseAfterUpgrade(false)
				proxy.Cut()
				time.Sleep(400 * time.Millisecond)
			})
		},
		check: func(t *testing.T, states []recordedState) {
			failedDials := countState(states, StateConnecting) + countState(states, StateResuming) -
				countState(states, StateConnected)
			assert.Positive(t, failedDials, "no dial failed after the upgrade; states:\n%s", describeStates(states))
		},
	},
}

// TestStressReconnectsExactlyOnce runs task traffic at every send queue
// level in both directions while the fault proxy injects one kind of
// fault, and checks that each frame arrives exactly once and in order
// within its level on both sides.
func TestStressReconnectsExactlyOnce(t *testing.T) {
	for _, kind := range faultKinds {
		t.Run(kind.name, func(t *testing.T) {
			runStress(t, kind)
		})
	}
}

// stressTraffic is the amount of traffic of one stress run.
type stressTraffic struct {
	senders, perSender, metrics, tasks, progressPerTask, checkpointsPerTask int
}

func runStress(t *testing.T, kind faultKind) {
	const sendEvery = 10 * time.Millisecond
	traffic := stressTraffic{senders: 4, perSender: 150, metrics: 60, tasks: 30, progressPerTask: 3,
		checkpointsPerTask: 3}
	if testing.Short() {
		traffic = stressTraffic{senders: 2, perSender: 50, metrics: 20, tasks: 10, progressPerTask: 2,
			checkpointsPerTask: 2}
	}

	// The coordinator logs each frame it handles at trace level. That log is
	// the only record of progress and worker_metrics frames, which it
	// neither stores nor counts.
	coord := startRealCoordinator(t, hclog.Trace, func(cfg *config.Config) {
		cfg.Workers.HeartbeatInterval = 100 * time.Millisecond
		cfg.Workers.HeartbeatTimeout = stressCoordinatorTimeout
	})
	proxy := startProxy(t, coord.addr())
	// A small send queue makes Send block while the link is down. A high
	// failure_threshold keeps the breaker from pausing the test for a
	// cooldown when handshakes are cut in flight.
	config := fmt.Sprintf(`{"heartbeat_interval": "50ms", "heartbeat_timeout": %q,
		"max_heartbeat_timeout": %q, "backoff_base": "5ms", "backoff_cap": "40ms",
		"dial_timeout": "500ms", "handshake_timeout": "500ms", "send_queue_frames": 32,
		"failure_threshold": 1000}`, stressWorkerTimeout, stressWorkerMaxTimeout)
	h := startConnector(t, "ws://"+proxy.Addr(), config)
	host := newStressHost(t, h, traffic.progressPerTask, traffic.checkpointsPerTask)
	recorder := recordStates(t, h, host.onState)
	stopHost := make(chan struct{})
	hostDone := make(chan struct{})
	go func() {
		defer close(hostDone)
		host.run(stopHost)
	}()
	t.Cleanup(func() {
		close(stopHost)
		<-hostDone
	})

	// The first session syncs before anything else is sent.
	require.Eventually(t, func() bool {
		_, syncs := host.counts()
		return syncs == 1
	}, waitFor, 5*time.Millisecond, "no state_sync_result")

	ctx, cancel := context.WithTimeout(context.Background(), 4*waitFor)
	defer cancel()
	specs := make([]api.TaskSpec, traffic.tasks)
	for i := range specs {
		specs[i] = api.TaskSpec{Type: "command", Payload: json.RawMessage(`{"argv":["true"]}`)}
	}
	submitted, err := coord.client.Submit(ctx, api.SubmitRequest{Tasks: specs})
	require.NoError(t, err)

	// Faults, senders and the tasks of the coordinator run together.
	stopFaults := make(chan struct{})
	faultsDone := make(chan int, 1)
	go func() { faultsDone <- kind.inject(proxy, testing.Short(), stopFaults) }()
	var wg sync.WaitGroup
	for i := range traffic.senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ticker := time.NewTicker(sendEvery)
			defer ticker.Stop()
			for n := range traffic.perSender {
				<-ticker.C
				host.send(&wirepb.Frame{Body: &wirepb.Frame_TaskProgress{TaskProgress: &wirepb.TaskProgress{
					Ref:     &wirepb.TaskRef{TaskId: fmt.Sprintf("sender-%d", i)},
					Message: fmt.Sprintf("step %d", n),
				}}})
			}
		}()
	}
	// Telemetry, the lowest level. events_dropped carries a counter, so
	// the coordinator's trace log shows which summary it handled.
	wg.Add(1)
	go func() {
		defer wg.Done()
		ticker := time.NewTicker(2 * sendEvery)
		defer ticker.Stop()
		for n := range traffic.metrics {
			<-ticker.C
			host.send(&wirepb.Frame{Body: &wirepb.Frame_WorkerMetrics{WorkerMetrics: &wirepb.WorkerMetrics{
				EventsDropped: uint64(n + 1),
			}}})
		}
	}()
	wg.Wait()
	require.Eventually(t, func() bool {
		acks, _ := host.counts()
		return acks >= traffic.tasks
	}, 4*waitFor, 10*time.Millisecond, "not every task's outcome was acknowledged")
	close(stopFaults)
	faults := <-faultsDone
	host.tasks.Wait()

	// Every sequenced frame the worker sent reaches the coordinator.
	want := 1 + traffic.senders*traffic.perSender + traffic.metrics +
		traffic.tasks*(2+traffic.progressPerTask+traffic.checkpointsPerTask)
	var received []logEntry
	require.Eventually(t, func() bool {
		received = taskFramesReceived(t, coord)
		return len(received) >= want
	}, waitFor, 10*time.Millisecond, "the coordinator received fewer task frames than the worker sent")

	states := recorder.snapshot()
	stats := h.connector.Stats()
	t.Logf("%s: %d faults, %d connections, %d resumes; worker: %d frames replayed, %d duplicates dropped; "+
		"coordinator: %d duplicates dropped", kind.name, faults, stats.Connections, stats.Resumes,
		stats.ReplayedFrames, stats.DuplicateFrames, coord.server.Stats().DuplicateFrames)
	require.GreaterOrEqual(t, countState(states, StateConnected), kind.minConnections,
		"the faults must force reconnects; states:\n%s", describeStates(states))
	if kind.check != nil {
		kind.check(t, states)
	}

	// Every reconnect resumed the first session, so nothing was dropped
	// and nothing had to be synced again.
	for i, s := range states {
		if s.change.GetState() == StateConnected && countState(states[:i], StateConnected) > 0 {
			require.True(t, s.change.GetResumed(), "reconnect did not resume:\n%s", describeStates(states))
			require.Equal(t, reasonResumed, s.change.GetReason())
		}
	}

	// Worker to coordinator: each sequenced frame was handled once, in
	// sequence order, and the frames of each level in the order they were
	// sent.
	require.Equal(t, want, len(received), "task frames the coordinator handled; more means one was handled twice")
	for i, entry := range received {
		require.Equal(t, int64(i+1), entry.number("seq"), "frame %d handled out of order", i)
	}
	checkProgressOrder(t, coord, traffic.senders, traffic.perSender, submitted.Tasks, traffic.progressPerTask)
	checkMetricsOrder(t, coord, traffic.metrics)

	// Coordinator to worker: the connector forwarded each sequenced frame
	// once and in order, and the tasks in the order they were submitted.
	host.mu.Lock()
	defer host.mu.Unlock()
	assert.Empty(t, host.unexpected, "unexpected frames forwarded")
	assert.Equal(t, 1, host.syncResults, "one state_sync_result, for the only new session")
	require.Equal(t, 1+traffic.tasks*(2+traffic.checkpointsPerTask), len(host.seqs),
		"state_sync_result, and per task one assign, its checkpoint_acks and one outcome_ack")
	for i, seq := range host.seqs {
		require.Equal(t, uint64(i+1), seq, "forwarded frame %d out of sequence", i)
	}
	require.Len(t, host.assigned, traffic.tasks)
	for i, ref := range host.assigned {
		assert.Equal(t, submitted.Tasks[i].ID, ref.GetTaskId(), "assign %d", i)
		assert.Equal(t, uint32(1), ref.GetAttempt(), "assign %d", i)
	}
	acked := make(map[string]int)
	for _, ack := range host.acks {
		acked[ack.GetRef().GetTaskId()]++
		assert.True(t, ack.GetApplied(), "outcome of %s not applied: %s", ack.GetRef().GetTaskId(), ack.GetReason())
	}
	for _, task := range submitted.Tasks {
		assert.Equal(t, 1, acked[task.ID], "outcome_ack count of %s", task.ID)
	}

	// Checkpoints, both ways: the coordinator acknowledges a checkpoint
	// handled twice as a duplicate and one handled after a newer one as
	// stale, both with applied = false. Acks that are all applied and in
	// sequence order show that each checkpoint arrived once and in order.
	for _, task := range submitted.Tasks {
		acks := host.checkpointAcks[task.ID]
		require.Len(t, acks, traffic.checkpointsPerTask, "checkpoint_acks of %s", task.ID)
		for i, ack := range acks {
			assert.Equal(t, uint64(i+1), ack.GetSequence(), "checkpoint_ack %d of %s", i, task.ID)
			assert.True(t, ack.GetApplied(), "checkpoint %d of %s not applied: %s", ack.GetSequence(),
				task.ID, ack.GetReason())
		}
	}

	// The store has one applied outcome per task.
	final, err := coord.client.ListTasks(ctx, submitted.Batch, "")
	require.NoError(t, err)
	require.Len(t, final, traffic.tasks)
	for _, task := range final {
		assert.Equal(t, api.StateSucceeded, task.State, "task %s", task.ID)
		assert.Equal(t, 1, task.Attempt, "task %s", task.ID)
	}
}

// taskFramesReceived returns the coordinator's trace entries for the
// sequenced frames it handled, in the order it handled them. The
// coordinator logs a frame only after dropping duplicates.
func taskFramesReceived(t *testing.T, coord *realCoordinator) []logEntry {
	t.Helper()
	entries, invalid := coord.log.withMessage("frame received")
	require.Zero(t, invalid, "coordinator log lines that are not JSON")
	var sequenced []logEntry
	for _, entry := range entries {
		if entry.text("type") != "heartbeat" {
			sequenced = append(sequenced, entry)
		}
	}
	return sequenced
}

// checkProgressOrder checks that the coordinator handled each sender's and
// each task's progress frames exactly once and in the order they were sent.
func checkProgressOrder(
	t *testing.T,
	coord *realCoordinator,
	senders, perSender int,
	tasks []api.Task,
	perTask int,
) {
	t.Helper()
	entries, _ := coord.log.withMessage("task progress")
	byTask := make(map[string][]string)
	for _, entry := range entries {
		id := entry.text("task_id")
		byTask[id] = append(byTask[id], entry.text("message"))
	}
	expect := func(id string, n int) {
		want := make([]string, n)
		for i := range want {
			want[i] = fmt.Sprintf("step %d", i)
		}
		assert.Equal(t, want, byTask[id], "progress frames of %s as the coordinator handled them", id)
	}
	for i := range senders {
		expect(fmt.Sprintf("sender-%d", i), perSender)
	}
	for _, task := range tasks {
		expect(task.ID, perTask)
	}
}

// checkMetricsOrder checks that the coordinator handled the n worker_metrics
// frames exactly once and in the order they were sent, by the counter in
// events_dropped.
func checkMetricsOrder(t *testing.T, coord *realCoordinator, n int) {
	t.Helper()
	entries, _ := coord.log.withMessage("worker metrics received")
	got := make([]int64, 0, len(entries))
	for _, entry := range entries {
		got = append(got, entry.number("events_dropped"))
	}
	want := make([]int64, n)
	for i := range want {
		want[i] = int64(i + 1)
	}
	assert.Equal(t, want, got, "worker_metrics frames as the coordinator handled them")
}
