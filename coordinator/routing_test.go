package coordinator

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/protocol/pb"
)

// connectLabeled connects a synced worker with one slot and labels.
func connectLabeled(t *testing.T, ts *testServer, id string, labels map[string]string) *fakeWorker {
	t.Helper()
	w, first := connectWorker(t, ts, &pb.Hello{WorkerId: id, TaskTypes: []string{"command"}, Slots: 1,
		Labels: labels})
	require.NotNil(t, first.GetWelcome(), "first frame: %v", first)
	w.send(&pb.Frame{Body: &pb.Frame_StateSync{StateSync: &pb.StateSync{}}})
	w.expect("state_sync_result")
	return w
}

func labeledSpec(labels map[string]string) api.TaskSpec {
	spec := commandSpec()
	spec.Labels = labels
	return spec
}

func TestRoutingByRequiredLabels(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	cpu := connectLabeled(t, ts, "w1-cpu", map[string]string{"os": "linux"})

	gpuTask := submit(t, ts, labeledSpec(map[string]string{"gpu": "true"})).Tasks[0]
	assert.Equal(t, map[string]string{"gpu": "true"}, gpuTask.Labels)
	assert.Equal(t, `no connected worker serving type "command" has label gpu=true`,
		getTask(t, ts, gpuTask.ID).QueuedReason)

	// A task behind the gpu task in the queue still reaches the cpu worker.
	plain := submit(t, ts, labeledSpec(map[string]string{"os": "linux"})).Tasks[0]
	assert.Equal(t, plain.ID, cpu.expect("assign").GetAssign().GetRef().GetTaskId())

	gpu := connectLabeled(t, ts, "w2-gpu", map[string]string{"gpu": "true", "os": "windows"})
	assert.Equal(t, gpuTask.ID, gpu.expect("assign").GetAssign().GetRef().GetTaskId())

	// Each label exists on some worker, but no worker has both.
	both := submit(t, ts, labeledSpec(map[string]string{"gpu": "true", "os": "linux"})).Tasks[0]
	assert.Equal(t, `no connected worker serving type "command" has all of the labels gpu=true,os=linux`,
		getTask(t, ts, both.ID).QueuedReason)
	// A label with another value is no match either.
	wrongValue := submit(t, ts, labeledSpec(map[string]string{"os": "darwin"})).Tasks[0]
	assert.Equal(t, `no connected worker serving type "command" has label os=darwin`,
		getTask(t, ts, wrongValue.ID).QueuedReason)
	assert.Empty(t, cpu.frames, "the cpu worker got no task it lacks labels for")
	assert.Empty(t, gpu.frames, "the gpu worker got no task it lacks labels for")
}

func TestRoutingWaitsForFreeSlot(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	w := connectLabeled(t, ts, "w1", map[string]string{"gpu": "true"})
	first := submit(t, ts, labeledSpec(map[string]string{"gpu": "true"})).Tasks[0]
	ref := w.expect("assign").GetAssign().GetRef()
	require.Equal(t, first.ID, ref.GetTaskId())

	second := submit(t, ts, labeledSpec(map[string]string{"gpu": "true"})).Tasks[0]
	assert.Equal(t, "waiting for a free slot", getTask(t, ts, second.ID).QueuedReason)
	w.send(outcomeFrame(ref, pb.Status_STATUS_SUCCEEDED))
	w.expect("outcome_ack")
	assert.Equal(t, second.ID, w.expect("assign").GetAssign().GetRef().GetTaskId())
}

func TestSubmitLabelValidation(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	long := strings.Repeat("x", maxLabelNameBytes+1)
	cases := []struct {
		name   string
		labels string
		want   string
	}{
		{"not an object", `["gpu"]`, "must be an object of strings"},
		{"number value", `{"gpu": 1}`, "must be an object of strings"},
		{"empty name", `{"": "x"}`, "a label name is empty"},
		{"name with equals", `{"a=b": "x"}`, `label name "a=b" contains '=', ',' or a control character`},
		{"long name", `{"` + long + `": "x"}`, "over the limit of 128"},
		{"control in value", `{"os": "li\nux"}`, `value of label "os" contains a control character`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := `{"tasks":[{"type":"command","payload":{},"labels":` + tc.labels + `}]}`
			var resp api.Error
			status := doJSON(t, http.MethodPost, ts.url+"/v1/tasks", body, &resp)
			assert.Equal(t, http.StatusBadRequest, status)
			assert.Equal(t, "tasks[0].labels", resp.Field)
			assert.Contains(t, resp.Error, tc.want)
		})
	}
}

func TestHelloWithInvalidLabelsRejected(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	labels := map[string]string{}
	for i := range maxLabels + 1 {
		labels[strings.Repeat("l", i+1)] = "v"
	}
	_, first := connectWorker(t, ts, &pb.Hello{WorkerId: "w1", TaskTypes: []string{"command"}, Labels: labels})
	reject := first.GetReject()
	require.NotNil(t, reject, "first frame: %v", first)
	assert.Equal(t, pb.Reject_CODE_PROTOCOL_ERROR, reject.GetCode())
	assert.Contains(t, reject.GetMessage(), "65 labels is over the limit of 64")
}
