package coordinator

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/protocol"
	"github.com/dtf-io/dtf/protocol/pb"
)

func TestHandlerCoverage(t *testing.T) {
	for _, typ := range protocol.Types() {
		dir, ok := protocol.Directions[typ]
		require.True(t, ok, "protocol.Directions misses %s", typ)
		_, handled := frameHandlers[typ]
		switch dir {
		case protocol.ToCoordinator, protocol.Both:
			assert.True(t, handled, "no coordinator handler for %s", typ)
		case protocol.ToWorker:
			assert.False(t, handled, "the coordinator handles %s, which only it sends", typ)
		}
	}
	assert.Len(t, HandledFrameTypes(), len(frameHandlers))
}

func TestSubmitValidation(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	cases := []struct {
		name  string
		body  string
		field string
		want  string
	}{
		{"not json", `{"tasks":`, "", "must be a JSON object"},
		{"unknown top-level field", `{"tasks":[],"priority":1}`, "priority", "unknown field"},
		{"missing tasks", `{}`, "tasks", "missing"},
		{"empty tasks", `{"tasks":[]}`, "tasks", "empty"},
		{"missing type", `{"tasks":[{"payload":{}}]}`, "tasks[0].type", "missing task type"},
		{"unknown type", `{"tasks":[{"type":"x","payload":{}}]}`, "tasks[0].type",
			`tasks[0].type: unknown task type "x"; known types: command, gotest`},
		{"missing payload", `{"tasks":[{"type":"command"}]}`, "tasks[0].payload", "missing"},
		{"array payload", `{"tasks":[{"type":"command","payload":[1]}]}`, "tasks[0].payload",
			"must be a JSON object, got an array"},
		{"string payload", `{"tasks":[{"type":"command","payload":"x"}]}`, "tasks[0].payload",
			"must be a JSON object, got a string"},
		{"unknown task field", `{"tasks":[{"type":"command","payload":{}},{"type":"command","payload":{},"prio":2}]}`,
			"tasks[1].prio", "unknown field"},
		{"bad timeout", `{"tasks":[{"type":"command","payload":{},"timeout":"30"}]}`, "tasks[0].timeout",
			"invalid duration"},
		{"negative max attempts", `{"tasks":[{"type":"command","payload":{},"max_attempts":-1}]}`,
			"tasks[0].max_attempts", "out of range"},
		{"name not a string", `{"tasks":[{"type":"command","payload":{},"name":5}]}`, "tasks[0].name",
			"must be a string"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var apiErr api.Error
			status := doJSON(t, http.MethodPost, ts.url+"/v1/tasks", tc.body, &apiErr)
			assert.Equal(t, http.StatusBadRequest, status)
			assert.Equal(t, tc.field, apiErr.Field)
			assert.Contains(t, apiErr.Error, tc.want)
		})
	}

	var tasks struct{ Tasks []api.Task }
	require.Equal(t, http.StatusOK, doJSON(t, http.MethodGet, ts.url+"/v1/tasks", nil, &tasks))
	assert.Empty(t, tasks.Tasks, "no rejected submission stored a task")
}

func TestAPIBasics(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))

	var health map[string]string
	require.Equal(t, http.StatusOK, doJSON(t, http.MethodGet, ts.url+"/healthz", nil, &health))
	assert.Equal(t, "ok", health["status"])

	var apiErr api.Error
	assert.Equal(t, http.StatusNotFound, doJSON(t, http.MethodGet, ts.url+"/v1/tasks/nope", nil, &apiErr))
	assert.Contains(t, apiErr.Error, `task "nope" not found`)

	assert.Equal(t, http.StatusBadRequest,
		doJSON(t, http.MethodGet, ts.url+"/v1/tasks?state=done", nil, &apiErr))
	assert.Equal(t, "state", apiErr.Field)

	var req api.SubmitRequest
	req.Batch = "nightly"
	req.Tasks = []api.TaskSpec{commandSpec(), commandSpec()}
	var resp api.SubmitResponse
	require.Equal(t, http.StatusCreated, doJSON(t, http.MethodPost, ts.url+"/v1/tasks", req, &resp))
	assert.Equal(t, "nightly", resp.Batch)
	require.Len(t, resp.Tasks, 2)
	assert.Equal(t, 3, resp.Tasks[0].MaxAttempts, "max_attempts defaults to the config's")

	var list struct{ Tasks []api.Task }
	require.Equal(t, http.StatusOK, doJSON(t, http.MethodGet, ts.url+"/v1/tasks?batch=nightly&state=queued",
		nil, &list))
	require.Len(t, list.Tasks, 2)
	assert.Equal(t, resp.Tasks[0].ID, list.Tasks[0].ID, "tasks are listed in creation order")

	var cancelled api.Task
	require.Equal(t, http.StatusOK, doJSON(t, http.MethodPost,
		ts.url+"/v1/tasks/"+resp.Tasks[0].ID+"/cancel", nil, &cancelled))
	assert.Equal(t, api.StateCancelled, cancelled.State)
	assert.Equal(t, http.StatusConflict, doJSON(t, http.MethodPost,
		ts.url+"/v1/tasks/"+resp.Tasks[0].ID+"/cancel", nil, &apiErr))
}

func TestUnservedTypeStaysQueued(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	task := submit(t, ts, api.TaskSpec{Type: "gotest", Payload: []byte(`{"packages":["./..."]}`)}).Tasks[0]
	assert.Equal(t, `no connected worker serves type "gotest"`, task.QueuedReason)

	w, _ := connectSynced(t, ts, "w1", []string{"command"})
	got := getTask(t, ts, task.ID)
	assert.Equal(t, api.StateQueued, got.State)
	assert.Equal(t, `no connected worker serves type "gotest"`, got.QueuedReason)

	// A command task goes to the worker while the gotest task keeps waiting.
	cmd := submit(t, ts, commandSpec()).Tasks[0]
	assign := w.expect("assign").GetAssign()
	assert.Equal(t, cmd.ID, assign.GetRef().GetTaskId())
	assert.Equal(t, api.StateQueued, getTask(t, ts, task.ID).State)
}

func TestAssignAndOutcome(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	w, result := connectSynced(t, ts, "w1", []string{"command"})
	assert.Empty(t, result.GetKeep())
	assert.Empty(t, result.GetCancel())

	spec := commandSpec()
	spec.Name = "echo"
	spec.Timeout = "90s"
	task := submit(t, ts, spec).Tasks[0]

	assign := w.expect("assign").GetAssign()
	ref := assign.GetRef()
	assert.Equal(t, task.ID, ref.GetTaskId())
	assert.Equal(t, uint32(1), ref.GetAttempt())
	assert.Equal(t, "command", assign.GetType())
	assert.Equal(t, "echo", assign.GetName())
	assert.JSONEq(t, `{"argv":["true"]}`, string(assign.GetPayload()))
	assert.Equal(t, int64(90000), assign.GetTimeoutMs())

	running := getTask(t, ts, task.ID)
	assert.Equal(t, api.StateRunning, running.State, "the attempt is committed before Assign is sent")
	assert.Equal(t, "w1", running.WorkerID)

	w.send(&pb.Frame{Body: &pb.Frame_TaskStarted{TaskStarted: &pb.TaskStarted{Ref: ref}}})
	w.send(&pb.Frame{Body: &pb.Frame_TaskProgress{TaskProgress: &pb.TaskProgress{Ref: ref, Fraction: 0.5}}})
	w.send(outcomeFrame(ref, pb.Status_STATUS_SUCCEEDED))
	ack := w.expect("outcome_ack").GetOutcomeAck()
	assert.True(t, ack.GetApplied())
	assert.Equal(t, task.ID, ack.GetRef().GetTaskId())

	done := getTask(t, ts, task.ID)
	assert.Equal(t, api.StateSucceeded, done.State)
	require.NotNil(t, done.Outcome)
	assert.Equal(t, "ok\n", done.Outcome.Output)
	assert.JSONEq(t, `{"n":1}`, string(done.Outcome.Result))
	require.Len(t, done.Attempts, 1)
	assert.Equal(t, api.StateSucceeded, done.Attempts[0].State)

	// The same outcome again, as after a lost acknowledgement.
	w.send(outcomeFrame(ref, pb.Status_STATUS_FAILED))
	dup := w.expect("outcome_ack").GetOutcomeAck()
	assert.False(t, dup.GetApplied())
	assert.Contains(t, dup.GetReason(), "duplicate")
	assert.Equal(t, api.StateSucceeded, getTask(t, ts, task.ID).State)

	var workers struct{ Workers []api.Worker }
	require.Equal(t, http.StatusOK, doJSON(t, http.MethodGet, ts.url+"/v1/workers", nil, &workers))
	require.Len(t, workers.Workers, 1)
	assert.True(t, workers.Workers[0].Connected)
	assert.Equal(t, 1, workers.Workers[0].Connects)
	assert.Equal(t, 0, workers.Workers[0].Running)
}

func TestSlotsBoundAssignments(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	w, _ := connectSynced(t, ts, "w1", []string{"command"}) // two slots
	resp := submit(t, ts, commandSpec(), commandSpec(), commandSpec())

	first := w.expect("assign").GetAssign().GetRef()
	w.expect("assign")
	third := getTask(t, ts, resp.Tasks[2].ID)
	assert.Equal(t, api.StateQueued, third.State)
	assert.Equal(t, "waiting for a free slot", third.QueuedReason)

	w.send(outcomeFrame(first, pb.Status_STATUS_SUCCEEDED))
	w.expect("outcome_ack")
	assert.Equal(t, resp.Tasks[2].ID, w.expect("assign").GetAssign().GetRef().GetTaskId(),
		"a freed slot takes the next queued task")
}

func TestGracePeriodRequeueAndStaleOutcome(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.Workers.ReassignAfter = 300 * time.Millisecond
	ts := startServer(t, cfg)

	task, stale := loseAttempt(t, ts, commandSpec())
	requeued := getTask(t, ts, task.ID)
	require.Len(t, requeued.Attempts, 1)
	assert.Equal(t, "lost", requeued.Attempts[0].State)
	assert.Contains(t, requeued.Attempts[0].Reason, "did not reconnect within reassign_after")

	w2, _ := connectSynced(t, ts, "w2", []string{"command"})
	current := w2.expect("assign").GetAssign().GetRef()
	assert.Equal(t, uint32(2), current.GetAttempt())

	// w1 comes back still running attempt 1. The sync result cancels it,
	// and its outcome for attempt 1 is rejected as stale.
	w1b, result := connectSynced(t, ts, "w1", []string{"command"}, stale)
	require.Len(t, result.GetCancel(), 1)
	assert.Equal(t, task.ID, result.GetCancel()[0].GetTaskId())
	assert.Empty(t, result.GetKeep())

	w1b.send(outcomeFrame(stale, pb.Status_STATUS_SUCCEEDED))
	ack := w1b.expect("outcome_ack").GetOutcomeAck()
	assert.False(t, ack.GetApplied())
	assert.Contains(t, ack.GetReason(), "stale attempt 1")

	w2.send(outcomeFrame(current, pb.Status_STATUS_FAILED))
	assert.True(t, w2.expect("outcome_ack").GetOutcomeAck().GetApplied())
	final := getTask(t, ts, task.ID)
	assert.Equal(t, api.StateFailed, final.State)
	assert.Equal(t, 2, final.Outcome.Attempt)
}

func TestReconnectWithinGraceKeepsAttempt(t *testing.T) {
	ts := startServer(t, testConfig(t, "")) // reassign_after 30s
	w, _ := connectSynced(t, ts, "w1", []string{"command"})
	task := submit(t, ts, commandSpec()).Tasks[0]
	ref := w.expect("assign").GetAssign().GetRef()
	other := submit(t, ts, commandSpec()).Tasks[0]
	otherRef := w.expect("assign").GetAssign().GetRef()
	w.close()
	// A new session of w1 is turned away while the old one is attached.
	require.Eventually(t, func() bool { return ts.Stats().Sessions == 0 }, waitFor, 10*time.Millisecond)

	// The worker kept the first attempt but lost the second.
	w2, result := connectSynced(t, ts, "w1", []string{"command"}, ref)
	require.Len(t, result.GetKeep(), 1)
	assert.Equal(t, task.ID, result.GetKeep()[0].GetTaskId())
	assert.Empty(t, result.GetCancel())

	reassigned := w2.expect("assign").GetAssign().GetRef()
	assert.Equal(t, other.ID, reassigned.GetTaskId(), "the attempt the worker lost is requeued at once")
	assert.Equal(t, otherRef.GetAttempt()+1, reassigned.GetAttempt())

	w2.send(outcomeFrame(ref, pb.Status_STATUS_SUCCEEDED))
	assert.True(t, w2.expect("outcome_ack").GetOutcomeAck().GetApplied())
}

func TestRestartKeepsRunningTask(t *testing.T) {
	dataDir := t.TempDir()
	ts := startServer(t, testConfig(t, dataDir))
	w, _ := connectSynced(t, ts, "w1", []string{"command"})
	task := submit(t, ts, commandSpec()).Tasks[0]
	ref := w.expect("assign").GetAssign().GetRef()

	ts.stop()
	reject := w.expect("reject").GetReject()
	assert.Equal(t, pb.Reject_CODE_SHUTTING_DOWN, reject.GetCode())
	assert.Positive(t, reject.GetRetryAfterMs())
	w.waitClosed()

	ts2 := startServer(t, testConfig(t, dataDir))
	restored := getTask(t, ts2, task.ID)
	assert.Equal(t, api.StateRunning, restored.State, "the restart keeps the running attempt")
	assert.Equal(t, 1, restored.Attempt)

	w2, result := connectSynced(t, ts2, "w1", []string{"command"}, ref)
	require.Len(t, result.GetKeep(), 1)
	w2.send(outcomeFrame(ref, pb.Status_STATUS_SUCCEEDED))
	assert.True(t, w2.expect("outcome_ack").GetOutcomeAck().GetApplied())
	assert.Equal(t, api.StateSucceeded, getTask(t, ts2, task.ID).State)
}

func TestRestartRequeuesAfterGrace(t *testing.T) {
	dataDir := t.TempDir()
	ts := startServer(t, testConfig(t, dataDir))
	w, _ := connectSynced(t, ts, "w1", []string{"command"})
	task := submit(t, ts, commandSpec()).Tasks[0]
	w.expect("assign")
	ts.stop()
	w.waitClosed()

	cfg := testConfig(t, dataDir)
	cfg.Workers.ReassignAfter = 200 * time.Millisecond
	ts2 := startServer(t, cfg)
	require.Eventually(t, func() bool {
		return getTask(t, ts2, task.ID).State == api.StateQueued
	}, waitFor, 20*time.Millisecond, "a worker that never returns loses its attempt after the grace period")
}

func TestCancelRunningTask(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	w, _ := connectSynced(t, ts, "w1", []string{"command"})
	task := submit(t, ts, commandSpec()).Tasks[0]
	ref := w.expect("assign").GetAssign().GetRef()

	var cancelled api.Task
	require.Equal(t, http.StatusOK, doJSON(t, http.MethodPost, ts.url+"/v1/tasks/"+task.ID+"/cancel", nil,
		&cancelled))
	assert.Equal(t, api.StateCancelled, cancelled.State)
	cancel := w.expect("cancel_task").GetCancelTask()
	assert.Equal(t, task.ID, cancel.GetRef().GetTaskId())
	assert.Equal(t, ref.GetAttempt(), cancel.GetRef().GetAttempt())

	w.send(outcomeFrame(ref, pb.Status_STATUS_CANCELLED))
	ack := w.expect("outcome_ack").GetOutcomeAck()
	assert.False(t, ack.GetApplied())
	assert.Equal(t, "task is cancelled", ack.GetReason())
}

func TestUnknownFrameCounted(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	w, _ := connectSynced(t, ts, "w1", []string{"command"})

	// Field 99 is no body field of this build, like a frame of a newer
	// protocol revision.
	// The leading 0 is the encoding byte of an uncompressed message.
	unknown := protowire.AppendTag([]byte{0}, 99, protowire.BytesType)
	unknown = protowire.AppendBytes(unknown, []byte("future"))
	w.sendRaw(unknown)
	w.sendRaw(unknown)
	// A frame only the coordinator sends is counted too.
	w.send(&pb.Frame{Body: &pb.Frame_Assign{Assign: &pb.Assign{}}})

	require.Eventually(t, func() bool { return ts.Stats().UnknownFrames == 2 }, waitFor, 10*time.Millisecond)
	require.Eventually(t, func() bool { return ts.Stats().UnexpectedFrames == 1 }, waitFor, 10*time.Millisecond)

	w.send(&pb.Frame{Body: &pb.Frame_Heartbeat{Heartbeat: &pb.Heartbeat{SentUnixNano: 42}}})
	reply := w.expect("heartbeat").GetHeartbeat()
	assert.True(t, reply.GetReply())
	assert.Equal(t, int64(42), reply.GetEchoUnixNano())
	assert.Equal(t, 1, ts.Stats().Sessions, "the session stays up")
}

func TestHandshakeRejections(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.Workers.Token = "right-token"
	ts := startServer(t, cfg)

	cases := []struct {
		name  string
		hello *pb.Hello
		code  pb.Reject_Code
	}{
		{"wrong token", &pb.Hello{WorkerId: "w1", Token: "wrong"}, pb.Reject_CODE_UNAUTHENTICATED},
		{"missing token", &pb.Hello{WorkerId: "w1"}, pb.Reject_CODE_UNAUTHENTICATED},
		{"missing worker id", &pb.Hello{Token: "right-token"}, pb.Reject_CODE_PROTOCOL_ERROR},
		{"worker id with a newline", &pb.Hello{WorkerId: "w1\nlevel=ERROR", Token: "right-token"},
			pb.Reject_CODE_PROTOCOL_ERROR},
		{"worker id too long", &pb.Hello{WorkerId: strings.Repeat("w", 5000), Token: "right-token"},
			pb.Reject_CODE_PROTOCOL_ERROR},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w, first := connectWorker(t, ts, tc.hello)
			require.NotNil(t, first.GetReject(), "first frame: %v", first)
			assert.Equal(t, tc.code, first.GetReject().GetCode())
			w.waitClosed()
		})
	}

	t.Run("first frame not hello", func(t *testing.T) {
		w := &fakeWorker{t: t, conn: dialRaw(t, ts), frames: make(chan *pb.Frame, 10), done: make(chan struct{})}
		t.Cleanup(w.close)
		go w.readLoop()
		w.send(&pb.Frame{Body: &pb.Frame_StateSync{StateSync: &pb.StateSync{}}})
		assert.Equal(t, pb.Reject_CODE_REGISTER_AGAIN, w.expect("reject").GetReject().GetCode())
		w.waitClosed()
	})

	t.Run("right token", func(t *testing.T) {
		_, first := connectWorker(t, ts, &pb.Hello{WorkerId: "w1", Token: "right-token"})
		assert.NotEmpty(t, first.GetWelcome().GetSessionId())
	})

	t.Run("missing subprotocol", func(t *testing.T) {
		resp, err := httpClient.Get(ts.url + protocol.ConnectPath)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	})
}

func TestSecondWorkerWithSameIDIsRejected(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	first, _ := connectSynced(t, ts, "w1", []string{"command"})

	// A second process with the same worker_id and no session of its own
	// is turned away while the first one is heard from.
	_, frame := connectWorker(t, ts, &pb.Hello{WorkerId: "w1", TaskTypes: []string{"command"}, Slots: 2})
	reject := frame.GetReject()
	require.NotNil(t, reject, "first frame: %v", frame)
	assert.Equal(t, pb.Reject_CODE_WORKER_ID_IN_USE, reject.GetCode())
	assert.Contains(t, reject.GetMessage(), `worker_id "w1" is connected from 127.0.0.1:`)
	assert.Contains(t, reject.GetMessage(), "give each worker its own worker_id")
	assert.Positive(t, reject.GetRetryAfterMs())

	// The first worker keeps its session and its work.
	task := submit(t, ts, commandSpec()).Tasks[0]
	assert.Equal(t, task.ID, first.expect("assign").GetAssign().GetRef().GetTaskId())
	assert.Equal(t, 1, ts.Stats().Sessions)
}

func TestSilentSessionIsReplaced(t *testing.T) {
	// A worker whose link died without a close reconnects with a new
	// session before the coordinator's read times out, for example after
	// its host restarted. Once the old connection stayed silent for the
	// heartbeat timeout, the new hello replaces it.
	cfg := testConfig(t, "")
	cfg.Workers.HeartbeatInterval = 200 * time.Millisecond
	cfg.Workers.HeartbeatTimeout = 600 * time.Millisecond
	ts := startServer(t, cfg)
	conn := dialRaw(t, ts)
	defer conn.Close()
	data, err := protocol.Encode(&pb.Frame{Body: &pb.Frame_Hello{Hello: &pb.Hello{WorkerId: "w1"}}})
	require.NoError(t, err)
	require.NoError(t, conn.WriteMessage(2, data))
	require.Eventually(t, func() bool { return ts.Stats().Sessions == 1 }, waitFor, 10*time.Millisecond)

	var frame *pb.Frame
	require.Eventually(t, func() bool {
		_, frame = connectWorker(t, ts, &pb.Hello{WorkerId: "w1", TaskTypes: []string{"command"}, Slots: 2})
		return frame.GetWelcome() != nil
	}, waitFor, 100*time.Millisecond, "the silent session kept its worker_id; last frame: %v", frame)
}

func TestHeartbeatTimeoutClosesSession(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.Workers.HeartbeatTimeout = 300 * time.Millisecond
	cfg.Workers.HeartbeatInterval = 100 * time.Millisecond
	ts := startServer(t, cfg)

	// A raw connection that sends hello and then stays silent.
	conn := dialRaw(t, ts)
	defer conn.Close()
	data, err := protocol.Encode(&pb.Frame{Body: &pb.Frame_Hello{Hello: &pb.Hello{WorkerId: "quiet"}}})
	require.NoError(t, err)
	require.NoError(t, conn.WriteMessage(2, data))
	require.Eventually(t, func() bool { return ts.Stats().Sessions == 1 }, waitFor, 10*time.Millisecond)
	require.Eventually(t, func() bool { return ts.Stats().Sessions == 0 }, waitFor, 10*time.Millisecond,
		"a silent session is closed after heartbeat_timeout")
}

func TestStateSyncListsAppliedOutcomes(t *testing.T) {
	ts := startServer(t, testConfig(t, "")) // reassign_after 30s
	w, _ := connectSynced(t, ts, "w1", []string{"command"})
	done := submit(t, ts, commandSpec()).Tasks[0]
	doneRef := w.expect("assign").GetAssign().GetRef()
	open := submit(t, ts, commandSpec()).Tasks[0]
	openRef := w.expect("assign").GetAssign().GetRef()
	w.send(outcomeFrame(doneRef, pb.Status_STATUS_SUCCEEDED))
	require.True(t, w.expect("outcome_ack").GetOutcomeAck().GetApplied())
	w.close()
	require.Eventually(t, func() bool { return ts.Stats().Sessions == 0 }, waitFor, 10*time.Millisecond)

	// The worker lost the acknowledgement of the first outcome in the cut,
	// holds the outcome of the second, not sent yet, and one of a task the
	// coordinator does not know.
	w2, first := connectWorker(t, ts, &pb.Hello{WorkerId: "w1", TaskTypes: []string{"command"}, Slots: 2})
	require.NotNil(t, first.GetWelcome(), "first frame: %v", first)
	unknown := &pb.TaskRef{TaskId: "no-such-task", Attempt: 1}
	w2.send(&pb.Frame{Body: &pb.Frame_StateSync{StateSync: &pb.StateSync{
		HeldOutcomes: []*pb.TaskRef{doneRef, openRef, unknown},
	}}})
	result := w2.expect("state_sync_result").GetStateSyncResult()
	require.Len(t, result.GetApplied(), 1, "only the applied outcome is listed")
	assert.Equal(t, done.ID, result.GetApplied()[0].GetTaskId())
	assert.Equal(t, uint32(1), result.GetApplied()[0].GetAttempt())

	// The outcome the coordinator lacks is still accepted after the sync.
	w2.send(outcomeFrame(openRef, pb.Status_STATUS_SUCCEEDED))
	require.True(t, w2.expect("outcome_ack").GetOutcomeAck().GetApplied())
	assert.Equal(t, api.StateSucceeded, getTask(t, ts, open.ID).State)
}

func TestLateOutcomeOfLostAttemptApplied(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.Workers.ReassignAfter = 300 * time.Millisecond
	ts := startServer(t, cfg)

	task, ref := loseAttempt(t, ts, commandSpec())

	// The task finished on w1 during the cut, and no other worker took it.
	w1b := reconnectHolding(t, ts, ref)
	w1b.send(outcomeFrame(ref, pb.Status_STATUS_SUCCEEDED))
	ack := w1b.expect("outcome_ack").GetOutcomeAck()
	assert.True(t, ack.GetApplied(), "reason: %s", ack.GetReason())

	done := getTask(t, ts, task.ID)
	assert.Equal(t, api.StateSucceeded, done.State)
	require.NotNil(t, done.Outcome)
	assert.Equal(t, 1, done.Outcome.Attempt)
	require.Len(t, done.Attempts, 1, "no second attempt")
	assert.Equal(t, api.StateSucceeded, done.Attempts[0].State)
}

// TestLateOutcomeOfLostAttemptRejected checks that a late outcome of a lost
// attempt leaves the task queued when it would not end the task. A
// retryable failure would only queue the task again, as the loss did. A
// cancel report follows the coordinator's own cancel of the lost attempt.
func TestLateOutcomeOfLostAttemptRejected(t *testing.T) {
	cases := []struct {
		name       string
		status     pb.Status
		retry      bool
		message    string
		lostCancel bool
	}{
		{"retryable failure", pb.Status_STATUS_FAILED, true, "", false},
		{"cancel report", pb.Status_STATUS_CANCELLED, false, "worker w1 did not reconnect within reassign_after", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, "")
			cfg.Workers.ReassignAfter = 300 * time.Millisecond
			ts := startServer(t, cfg)
			spec := commandSpec()
			spec.MaxAttempts = 3
			task, ref := loseAttempt(t, ts, spec)

			w := reconnectHolding(t, ts, ref)
			late := outcomeFrame(ref, tc.status)
			late.GetTaskOutcome().Retryable = tc.retry
			late.GetTaskOutcome().Message = tc.message
			w.send(late)
			ack := w.expect("outcome_ack").GetOutcomeAck()
			assert.False(t, ack.GetApplied())
			assert.Contains(t, ack.GetReason(), "attempt 1 already ended, and the task is queued for its next attempt")
			assert.Equal(t, api.StateQueued, getTask(t, ts, task.ID).State)
			// The report of the coordinator's own cancel is expected, so
			// it does not count toward the stale-outcome alert.
			stale := uint64(1)
			if tc.lostCancel {
				stale = 0
			}
			assert.Equal(t, stale, ts.Stats().StaleOutcomes)
			families := scrapeMetrics(t, ts, "")
			assert.EqualValues(t, 1-stale, metricValue(t, families, "dtf_coordinator_outcomes_rejected_total",
				"reason", "lost_cancel"))
		})
	}
}

// TestLateOutcomeHoldsTask checks that a queued task whose lost attempt's
// outcome the returning worker holds is not started again before that
// outcome arrives, even though the worker serves its type.
func TestLateOutcomeHoldsTask(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.Workers.ReassignAfter = 300 * time.Millisecond
	ts := startServer(t, cfg)
	heldTask, ref := loseAttempt(t, ts, commandSpec())
	w, _ := reconnectSyncing(t, ts, &pb.StateSync{HeldOutcomes: []*pb.TaskRef{ref}})

	// The heldTask task is the oldest in the queue, so without the hold it
	// would be the first one assigned.
	other := submit(t, ts, commandSpec()).Tasks[0]
	assign := w.expect("assign").GetAssign().GetRef()
	assert.Equal(t, other.ID, assign.GetTaskId(), "the heldTask task %s was assigned again", heldTask.ID)

	w.send(outcomeFrame(ref, pb.Status_STATUS_SUCCEEDED))
	ack := w.expect("outcome_ack").GetOutcomeAck()
	assert.True(t, ack.GetApplied(), "reason: %s", ack.GetReason())
	task := getTask(t, ts, heldTask.ID)
	assert.Equal(t, api.StateSucceeded, task.State)
	assert.Len(t, task.Attempts, 1, "the task ran once")
}

// TestLateOutcomeHoldsTaskOnResume is TestLateOutcomeHoldsTask for a
// worker that resumes its session and replays the outcome.
func TestLateOutcomeHoldsTaskOnResume(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.Workers.ReassignAfter = 300 * time.Millisecond
	ts := startServer(t, cfg)
	w := newSeqWorker(t, ts, "w1")
	require.NotNil(t, w.connect().GetWelcome())
	w.sync()
	heldTask := submit(t, ts, commandSpec()).Tasks[0]
	ref := w.expect("assign").GetAssign().GetRef()
	w.cut()
	require.Eventually(t, func() bool {
		return getTask(t, ts, heldTask.ID).State == api.StateQueued
	}, waitFor, 20*time.Millisecond, "the task is requeued after reassign_after")

	require.True(t, w.connect().GetWelcome().GetResumed())
	w.expect("cancel_task")
	other := submit(t, ts, commandSpec()).Tasks[0]
	assign := w.expect("assign").GetAssign().GetRef()
	assert.Equal(t, other.ID, assign.GetTaskId(), "the heldTask task %s was assigned again", heldTask.ID)

	w.send(outcomeFrame(ref, pb.Status_STATUS_SUCCEEDED))
	ack := w.expect("outcome_ack").GetOutcomeAck()
	assert.True(t, ack.GetApplied(), "reason: %s", ack.GetReason())
	assert.Len(t, getTask(t, ts, heldTask.ID).Attempts, 1, "the task ran once")
}

// loseAttempt submits spec, hands its first attempt to worker w1 and
// closes w1's connection until the coordinator ends the attempt as lost
// and queues the task again. The server's reassign_after must be short.
// TestLostRunningAttemptHeldForCancelReport checks that a worker that
// comes back in a new session still running a lost attempt gets that
// attempt cancelled, and that its task waits for the report of the
// cancel, whose checkpoint the next attempt then resumes from.
func TestLostRunningAttemptHeldForCancelReport(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.Workers.ReassignAfter = 300 * time.Millisecond
	ts := startServer(t, cfg)
	lost, ref := loseAttempt(t, ts, commandSpec())
	w, result := reconnectSyncing(t, ts, &pb.StateSync{Running: []*pb.TaskRef{ref}})
	require.Len(t, result.GetCancel(), 1, "the lost attempt is cancelled")

	// The lost task is the oldest in the queue, so without the hold it
	// would be the first one assigned.
	other := submit(t, ts, commandSpec()).Tasks[0]
	assert.Equal(t, other.ID, w.expect("assign").GetAssign().GetRef().GetTaskId(),
		"the task %s was assigned again before the report of its cancel", lost.ID)

	report := outcomeFrame(ref, pb.Status_STATUS_CANCELLED)
	report.GetTaskOutcome().Checkpoint = checkpointFrame(ref, 9, []byte("step 9")).GetCheckpoint()
	w.send(report)
	assert.False(t, w.expect("outcome_ack").GetOutcomeAck().GetApplied())

	again := w.expect("assign").GetAssign()
	assert.Equal(t, lost.ID, again.GetRef().GetTaskId())
	assert.EqualValues(t, 2, again.GetRef().GetAttempt())
	require.NotNil(t, again.GetCheckpoint(), "the next attempt resumes from the carried checkpoint")
	assert.EqualValues(t, 9, again.GetCheckpoint().GetSequence())
}

func loseAttempt(t *testing.T, ts *testServer, spec api.TaskSpec) (api.Task, *pb.TaskRef) {
	t.Helper()
	w1, _ := connectSynced(t, ts, "w1", []string{"command"})
	task := submit(t, ts, spec).Tasks[0]
	ref := w1.expect("assign").GetAssign().GetRef()
	w1.close()
	require.Eventually(t, func() bool {
		return getTask(t, ts, task.ID).State == api.StateQueued
	}, waitFor, 20*time.Millisecond, "the task is requeued after reassign_after")
	return task, ref
}

// reconnectSyncing connects w1 again with a new session that serves the
// command type, sends sync and returns the worker and the sync result.
func reconnectSyncing(t *testing.T, ts *testServer, sync *pb.StateSync) (*fakeWorker, *pb.StateSyncResult) {
	t.Helper()
	w, first := connectWorker(t, ts, &pb.Hello{WorkerId: "w1", TaskTypes: []string{"command"}, Slots: 2})
	require.NotNil(t, first.GetWelcome(), "first frame: %v", first)
	w.send(&pb.Frame{Body: &pb.Frame_StateSync{StateSync: sync}})
	return w, w.expect("state_sync_result").GetStateSyncResult()
}

// reconnectHolding connects w1 again with a new session that serves no
// task type, so it gets no assignment, and syncs with the outcome of ref
// held.
func reconnectHolding(t *testing.T, ts *testServer, ref *pb.TaskRef) *fakeWorker {
	t.Helper()
	w, first := connectWorker(t, ts, &pb.Hello{WorkerId: "w1", TaskTypes: []string{"other"}, Slots: 1})
	require.NotNil(t, first.GetWelcome(), "first frame: %v", first)
	w.send(&pb.Frame{Body: &pb.Frame_StateSync{StateSync: &pb.StateSync{HeldOutcomes: []*pb.TaskRef{ref}}}})
	w.expect("state_sync_result")
	return w
}
