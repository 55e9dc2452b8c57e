package api

import "time"

// StreamPath is the coordinator's server-sent event stream of worker
// changes, worker samples and task counts.
const StreamPath = "/v1/stream"

// Event names of the stream at StreamPath. Each event's data is one JSON
// object of the type named beside it.
const (
	// StreamHello is the first event: a StreamHelloData.
	StreamHello = "hello"
	// StreamSnapshot carries every worker's row and the task counts: a
	// StreamSnapshotData. It follows the hello and repeats at the
	// interval that StreamHelloData names.
	StreamSnapshot = "snapshot"
	// StreamWorkerEvent carries one new entry of a worker's timeline as
	// soon as the coordinator records it: a StreamWorkerEventData.
	StreamWorkerEvent = "worker_event"
	// StreamSamples carries the newest sample of every worker after each
	// sampling round: a StreamSamplesData.
	StreamSamples = "samples"
)

// WorkerEvent is one entry of a worker's connection timeline.
type WorkerEvent struct {
	Time time.Time `json:"time"`
	// State is the state the worker entered: connected, draining,
	// disconnected or drained. An entry may repeat the previous state, as
	// when a session resumes on a new connection before the coordinator
	// noticed that the old one died, or when a detached session expires.
	State     string `json:"state"`
	SessionID string `json:"session_id,omitempty"`
	// Resumed is set on a connected entry whose session continued, so the
	// worker needed no state sync.
	Resumed bool   `json:"resumed,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// WorkerSample is one periodic sample of a worker, for charts.
type WorkerSample struct {
	Time  time.Time `json:"time"`
	State string    `json:"state"`
	// RTTMs is the smoothed heartbeat round-trip time in milliseconds while
	// the worker is connected or draining, and 0 otherwise.
	RTTMs      float64 `json:"rtt_ms"`
	Reconnects int     `json:"reconnects"`
	Running    int     `json:"running"`
}

// WorkerTimeline is the body of GET /v1/workers/{id}/timeline: the
// connection history that the coordinator keeps in memory for one worker.
type WorkerTimeline struct {
	WorkerID   string    `json:"worker_id"`
	State      string    `json:"state"`
	StateSince time.Time `json:"state_since"`
	Reconnects int       `json:"reconnects"`
	DowntimeMs int64     `json:"downtime_ms"`
	// Events are the newest timeline entries, oldest first, at most
	// MaxEvents of them.
	Events []WorkerEvent `json:"events"`
	// Samples are the newest samples, oldest first, at most MaxSamples of
	// them, one every SampleIntervalMs.
	Samples          []WorkerSample `json:"samples"`
	MaxEvents        int            `json:"max_events"`
	MaxSamples       int            `json:"max_samples"`
	SampleIntervalMs int64          `json:"sample_interval_ms"`
}

// StreamHelloData opens the stream with the bounds and intervals in force.
type StreamHelloData struct {
	ServerTime         time.Time `json:"server_time"`
	SnapshotIntervalMs int64     `json:"snapshot_interval_ms"`
	SampleIntervalMs   int64     `json:"sample_interval_ms"`
	MaxEvents          int       `json:"max_events"`
	MaxSamples         int       `json:"max_samples"`
}

// StreamSnapshotData is every worker's row, as GET /v1/workers returns
// them, and the number of tasks in each state.
type StreamSnapshotData struct {
	Time    time.Time      `json:"time"`
	Workers []Worker       `json:"workers"`
	Tasks   map[string]int `json:"tasks"`
}

// StreamWorkerEventData is a new timeline entry with the worker's totals
// after it.
type StreamWorkerEventData struct {
	WorkerID   string      `json:"worker_id"`
	Event      WorkerEvent `json:"event"`
	State      string      `json:"state"`
	StateSince time.Time   `json:"state_since"`
	Reconnects int         `json:"reconnects"`
	DowntimeMs int64       `json:"downtime_ms"`
}

// StreamSamplesData is one sampling round: the newest sample of each
// worker by worker ID.
type StreamSamplesData struct {
	Time    time.Time               `json:"time"`
	Samples map[string]WorkerSample `json:"samples"`
}
