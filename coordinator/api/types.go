// Package api defines the coordinator's HTTP JSON API types and a client
// for them. The dtf CLI, the tests and the demo use the client.
package api

import (
	"encoding/json"
	"time"
)

// Task states. Queued and running are live; the other four are terminal.
const (
	StateQueued    = "queued"
	StateRunning   = "running"
	StateSucceeded = "succeeded"
	StateFailed    = "failed"
	StateCancelled = "cancelled"
	StateTimedOut  = "timed_out"
)

// Worker states in the API's worker view.
const (
	WorkerConnected    = "connected"
	WorkerDraining     = "draining"
	WorkerDisconnected = "disconnected"
	WorkerDrained      = "drained"
)

// Terminal reports whether a task state is final.
func Terminal(state string) bool {
	switch state {
	case StateSucceeded, StateFailed, StateCancelled, StateTimedOut:
		return true
	}
	return false
}

// TaskSpec is one task in a submission.
type TaskSpec struct {
	// Name is a human label, for example the package a test task runs.
	Name string `json:"name,omitempty"`
	// Type selects the executor; it must be one of the coordinator's
	// task_types.
	Type string `json:"type"`
	// Payload is passed to the executor as is and must be a JSON object.
	Payload json.RawMessage `json:"payload"`
	// Timeout is a Go duration string such as "5m"; empty means none.
	Timeout string `json:"timeout,omitempty"`
	// MaxAttempts bounds how often the task is handed out; 0 means the
	// coordinator's default. Attempts that a draining worker released do
	// not count.
	MaxAttempts int `json:"max_attempts,omitempty"`
	// Labels are the worker labels the task requires: it runs only on a
	// worker whose labels include each of them with the same value, such
	// as {"gpu": "true"}.
	Labels map[string]string `json:"labels,omitempty"`
}

// SubmitRequest is the body of POST /v1/tasks.
type SubmitRequest struct {
	// Batch groups the tasks so that they can be watched together; empty
	// makes the coordinator choose one.
	Batch string     `json:"batch,omitempty"`
	Tasks []TaskSpec `json:"tasks"`
}

// SubmitResponse answers POST /v1/tasks.
type SubmitResponse struct {
	Batch string `json:"batch"`
	Tasks []Task `json:"tasks"`
}

// Task is a task with its attempts and outcome.
type Task struct {
	ID          string          `json:"id"`
	Batch       string          `json:"batch"`
	Name        string          `json:"name,omitempty"`
	Type        string          `json:"type"`
	Payload     json.RawMessage `json:"payload"`
	TimeoutMS   int64           `json:"timeout_ms,omitempty"`
	MaxAttempts int             `json:"max_attempts"`
	State       string          `json:"state"`
	// Attempt is the current attempt number, 0 before the first assignment.
	// It is also the attempt's fencing token: the coordinator applies an
	// outcome only when it carries the task's current attempt.
	Attempt int `json:"attempt"`
	// Released counts the attempts that draining workers gave back; they
	// do not count against MaxAttempts.
	Released int               `json:"released,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
	WorkerID string            `json:"worker_id,omitempty"`
	Created  time.Time         `json:"created"`
	Updated  time.Time         `json:"updated"`
	// NotBefore is set on a queued task in retry backoff: it is not handed
	// out before this time.
	NotBefore time.Time `json:"not_before,omitzero"`
	// QueuedReason says why a queued task is not running yet.
	QueuedReason string    `json:"queued_reason,omitempty"`
	Attempts     []Attempt `json:"attempts,omitempty"`
	Outcome      *Outcome  `json:"outcome,omitempty"`
	// Checkpoint is the newest stored checkpoint, from which the next
	// attempt resumes; nil when the task saved none.
	Checkpoint *Checkpoint `json:"checkpoint,omitempty"`
}

// Checkpoint describes a task's newest stored checkpoint without its data.
type Checkpoint struct {
	// Attempt saved the checkpoint, and Sequence numbers it among that
	// attempt's checkpoints from 1.
	Attempt  int     `json:"attempt"`
	Sequence uint64  `json:"sequence"`
	Fraction float64 `json:"fraction"`
	Message  string  `json:"message,omitempty"`
	// SizeBytes is the size of the checkpoint's data.
	SizeBytes int `json:"size_bytes"`
	// Saved is when the worker received the checkpoint from its executor,
	// by the worker's clock; Stored is when the coordinator stored it.
	Saved  time.Time `json:"saved"`
	Stored time.Time `json:"stored"`
}

// CheckpointRef names one checkpoint of a task.
type CheckpointRef struct {
	Attempt  int    `json:"attempt"`
	Sequence uint64 `json:"sequence"`
}

// Attempt is one hand-out of a task to a worker. State is running, an
// outcome's status, lost, released or timed_out.
type Attempt struct {
	Attempt  int       `json:"attempt"`
	WorkerID string    `json:"worker_id"`
	State    string    `json:"state"`
	Reason   string    `json:"reason,omitempty"`
	Started  time.Time `json:"started"`
	Ended    time.Time `json:"ended,omitzero"`
	// ResumedFrom is the checkpoint the attempt was handed when it
	// started; nil for a fresh start.
	ResumedFrom *CheckpointRef `json:"resumed_from,omitempty"`
}

// Outcome is the accepted result of a task's attempt.
type Outcome struct {
	Attempt  int             `json:"attempt"`
	WorkerID string          `json:"worker_id"`
	Status   string          `json:"status"`
	ExitCode int             `json:"exit_code"`
	Message  string          `json:"message,omitempty"`
	Output   string          `json:"output,omitempty"`
	Result   json.RawMessage `json:"result,omitempty"`
	Started  time.Time       `json:"started,omitzero"`
	Finished time.Time       `json:"finished,omitzero"`
}

// Worker is a worker the coordinator has seen.
type Worker struct {
	ID        string `json:"id"`
	Connected bool   `json:"connected"`
	// State is connected, draining (connected, but taking no new tasks),
	// disconnected, or drained (left after draining).
	State     string            `json:"state"`
	SessionID string            `json:"session_id,omitempty"`
	TaskTypes []string          `json:"task_types"`
	Slots     int               `json:"slots"`
	Running   int               `json:"running"`
	Labels    map[string]string `json:"labels,omitempty"`
	// Connects counts the sessions the worker opened since the coordinator
	// started.
	Connects      int       `json:"connects"`
	LastSeen      time.Time `json:"last_seen"`
	HostVersion   string    `json:"host_version,omitempty"`
	PluginVersion string    `json:"plugin_version,omitempty"`
	// Plugins are the plugin processes that the worker listed in the hello
	// that opened its current session; empty once the session is gone.
	Plugins []WorkerPlugin `json:"plugins,omitempty"`
	// RTTMs is the smoothed round-trip time of the worker's heartbeats in
	// milliseconds; 0 before the first heartbeat reply.
	RTTMs float64 `json:"rtt_ms"`
	// StateSince is when the worker entered State. It is zero when the
	// coordinator keeps no history of the worker, as for a worker not seen
	// since the coordinator started.
	StateSince time.Time `json:"state_since,omitzero"`
	// Reconnects counts the sessions the worker opened or resumed after its
	// first one, within the coordinator's history of the worker.
	Reconnects int `json:"reconnects"`
	// ResumableUntil is when the coordinator drops the session of a
	// disconnected worker, which can resume it until then
	// (workers.session_ttl after the connection ended). It is zero while
	// the worker is connected, and once no session is left to resume.
	ResumableUntil time.Time `json:"resumable_until,omitzero"`
	// DowntimeMs is the time the worker spent disconnected, the current
	// disconnection included, within the same history, in milliseconds.
	// Time spent drained is not downtime.
	DowntimeMs int64 `json:"downtime_ms"`
	// Metrics is the newest summary from the worker's metrics plugin, kept
	// while the session that sent it exists; nil without one.
	Metrics *WorkerMetrics `json:"metrics,omitempty"`
}

// WorkerPlugin is one plugin process of a worker, as its host reported it.
type WorkerPlugin struct {
	// Name is the plugin block's label in the worker config.
	Name string `json:"name"`
	// Kind is connector, executor or metrics.
	Kind string `json:"kind"`
	// Version is the plugin's own release version.
	Version string `json:"version"`
	// APIVersion is the plugin API version that the host and the plugin
	// negotiated; 0 when the host did not report one.
	APIVersion int `json:"api_version"`
}

// WorkerMetrics is a summary that a worker's metrics plugin sends at its
// summary_interval. Its counts cover the window from WindowStart, when the
// plugin started, to WindowEnd, both by the worker's clock.
type WorkerMetrics struct {
	WindowStart time.Time `json:"window_start"`
	WindowEnd   time.Time `json:"window_end"`
	// Received is when the coordinator received the summary.
	Received   time.Time `json:"received"`
	Reconnects uint64    `json:"reconnects"`
	// DisconnectedMs is the time without a session in the window, in
	// milliseconds, including an outage that lasted when it was sent.
	DisconnectedMs int64   `json:"disconnected_ms"`
	SmoothedRTTMs  float64 `json:"smoothed_rtt_ms"`
	// FramesIn, FramesOut, BytesIn and BytesOut count the WebSocket
	// messages of the worker's connections and their bytes on the wire.
	FramesIn  uint64 `json:"frames_in"`
	FramesOut uint64 `json:"frames_out"`
	BytesIn   uint64 `json:"bytes_in"`
	BytesOut  uint64 `json:"bytes_out"`
	// Outcomes counts the attempts finished on the worker by status:
	// succeeded, failed, cancelled and timed_out.
	Outcomes       map[string]uint64 `json:"outcomes"`
	PluginRestarts uint64            `json:"plugin_restarts"`
	// EventsDropped counts the host events that the metrics plugin did not
	// receive because it was slow or down.
	EventsDropped uint64 `json:"events_dropped"`
}

// Error is the body of every non-2xx response.
type Error struct {
	Error string `json:"error"`
	// Field names the offending request field, such as "tasks[2].type".
	Field string `json:"field,omitempty"`
}
