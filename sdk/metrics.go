package sdk

import (
	"context"
	"encoding/json"
	"time"
)

// MetricsPlugin receives the worker host's events and exports them, for
// example as Prometheus metrics, and keeps the compact summary of the
// worker that the host sends to the coordinator. A host may load several
// metrics plugins, and each gets every event. Serve one with ServeMetrics.
//
// Record and Summary may run concurrently with each other and with the
// plugin's own listener, such as a scrape endpoint, so a plugin guards the
// state that they share.
type MetricsPlugin interface {
	// Info describes the plugin. TaskTypes is ignored. It is called by
	// ServeMetrics for -version, so it returns constant values.
	Info() Info
	// Configure receives the plugin block's config as a JSON object, {}
	// without a config block, and does the slow setup, such as binding a
	// listener. It returns how often the host calls Summary, or zero for
	// never. A *ConfigError reports problems at the lines of the settings
	// in worker.hcl. A plugin that implements ConfigValidator gets
	// ValidateConfig instead when the host only checks the config.
	Configure(config json.RawMessage) (summaryInterval time.Duration, err error)
	// Record applies events in the order in which they happened. The host
	// bounds each call with a timeout, which ctx carries, and drops events
	// while the plugin is slow, so a plugin must not rely on seeing every
	// event. An error counts the batch's events as dropped.
	Record(ctx context.Context, batch EventBatch) error
	// Summary returns the worker's summary since the plugin started.
	Summary(ctx context.Context) (WorkerSummary, error)
}

// EventBatch is the events of one Record call and the host's drop counts.
type EventBatch struct {
	// Events are in the order in which they happened.
	Events []HostEvent
	// DroppedBufferFull counts the events that the host dropped for this
	// plugin since the host started because the plugin's buffer was full.
	// DroppedRecordFailed counts those in Record calls that failed or timed
	// out. Both include the events of earlier processes of the plugin.
	DroppedBufferFull   uint64
	DroppedRecordFailed uint64
}

// HostEvent is one thing that happened on the worker. Exactly one of the
// pointer fields is set. All of them are nil for an event type that this
// SDK version does not know, which a plugin ignores, so that a newer host
// can add types.
type HostEvent struct {
	// Time is when the host recorded the event, by the worker's clock. It
	// is zero when the host did not set it.
	Time time.Time

	// State is a transition of the connection, as the connector reported it.
	State *StateChange
	// Reconnected ends an outage.
	Reconnected *Reconnected
	// ConnectorStats is the connector's periodic snapshot of its counters.
	ConnectorStats *ConnectorStats
	// HostStats are the host's own queue depths, sent with each
	// ConnectorStats.
	HostStats *HostStats
	// TaskFinished is an attempt's outcome as the host recorded it.
	TaskFinished *TaskFinished
	// PluginRestart is a crashed plugin that the host launched again.
	PluginRestart *PluginRestart
}

// Reconnected reports that the worker has a session again after it lost
// one, because the connection dropped or the connector plugin stopped.
type Reconnected struct {
	// Outage is the time from the loss to the new connected state.
	Outage time.Duration
	// Resumed is true when the coordinator resumed the previous session.
	Resumed bool
	// Attempts is the number of connection attempts during the outage.
	Attempts int
}

// HostStats are the worker host's queue depths.
type HostStats struct {
	// RunningTasks is the number of attempts running on the worker.
	RunningTasks int
	// HeldOutcomes is the number of outcomes in the outbox that the
	// coordinator has not acknowledged.
	HeldOutcomes int
	// Slots is the number of attempts the worker runs at once.
	Slots int
}

// TaskFinished is an attempt's outcome as the host recorded it.
type TaskFinished struct {
	// Status is the attempt's terminal state. It is empty when the host
	// sent a status that this SDK version does not know.
	Status Status
	// Duration is the time from the start of the attempt to its outcome.
	Duration  time.Duration
	Retryable bool
	// Released is set when the worker gave the attempt back unfinished.
	Released bool
}

// PluginRestart reports a crashed plugin that the host launched again.
type PluginRestart struct {
	// Plugin is the plugin block's name in worker.hcl.
	Plugin string
	// Kind is the plugin kind: executor, connector or metrics.
	Kind string
	// Exit describes how the crashed process ended, such as "signal: killed".
	Exit string
}

// WorkerSummary is the compact summary of a worker over the window from
// WindowStart to WindowEnd, usually since the metrics plugin started.
type WorkerSummary struct {
	WindowStart time.Time
	WindowEnd   time.Time
	Reconnects  uint64
	// Disconnected is the time without a session in the window, including
	// an outage that still lasts.
	Disconnected time.Duration
	// SmoothedRTT is the newest smoothed round-trip time.
	SmoothedRTT    time.Duration
	FramesIn       uint64
	FramesOut      uint64
	BytesIn        uint64
	BytesOut       uint64
	TasksSucceeded uint64
	TasksFailed    uint64
	TasksCancelled uint64
	TasksTimedOut  uint64
	PluginRestarts uint64
	// EventsDropped is the host's count of events that it dropped for this
	// plugin, for both reasons of EventBatch.
	EventsDropped uint64
}
