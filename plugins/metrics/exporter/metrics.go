package exporter

import (
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// namespace prefixes every metric that the plugin exports.
const namespace = "dtf_worker"

// connectionStates lists the states that the reconnection plugin reports,
// and stateOther stands for any other, so that the state label has a
// fixed set of values whatever a newer connector sends.
var connectionStates = []string{
	"connecting", "resuming", "connected", "backing_off", "circuit_open", "draining", "closed",
}

const stateOther = "other"

// stateLabels returns every value of the state label.
func stateLabels() []string {
	return append(slices.Clone(connectionStates), stateOther)
}

// sendQueueLevels names the connector's send queue levels, highest
// priority first, as ConnectorStats.send_queue_frames lists them.
var sendQueueLevels = []string{"control", "outcome", "checkpoint", "progress", "telemetry"}

// taskStatuses lists the outcome statuses whose series exist from the
// start. An outcome with a status this build does not know counts as
// "unspecified", a series that appears only with the first such outcome.
var taskStatuses = []string{"succeeded", "failed", "cancelled", "timed_out"}

// Histogram buckets, in seconds. Round-trip times range from a loopback
// link to a link across continents, outages from a dropped packet to a
// long network failure, and tasks from a unit test to a long benchmark.
var (
	rttBuckets      = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}
	outageBuckets   = []float64{0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600}
	durationBuckets = []float64{0.1, 0.5, 1, 5, 10, 30, 60, 300, 600, 1800, 3600, 7200}
)

// metricSet holds the plugin's collectors. Every label has a fixed or
// config-bounded set of values: connection states, statuses, send queue
// levels, drop reasons, and the plugin names and kinds of worker.hcl.
type metricSet struct {
	connected        prometheus.Gauge
	connectionState  *prometheus.GaugeVec
	stateChanges     *prometheus.CounterVec
	attempts         prometheus.Counter
	disconnects      prometheus.Counter
	reconnects       prometheus.Counter
	resumed          prometheus.Counter
	disconnectedTime prometheus.Counter
	outages          prometheus.Histogram

	rtt         prometheus.Histogram
	smoothedRTT prometheus.Gauge
	rttVariance prometheus.Gauge

	framesReceived   prometheus.Counter
	framesSent       prometheus.Counter
	bytesReceived    prometheus.Counter
	bytesSent        prometheus.Counter
	compressionRatio prometheus.Gauge
	sendQueue        *prometheus.GaugeVec
	replayFrames     prometheus.Gauge
	replayBytes      prometheus.Gauge

	runningTasks prometheus.Gauge
	heldOutcomes prometheus.Gauge
	slots        prometheus.Gauge
	outcomes     *prometheus.CounterVec
	taskDuration prometheus.Histogram

	pluginRestarts *prometheus.CounterVec
	eventsDropped  *prometheus.CounterVec
}

// newMetricSet creates the collectors and registers them, with the Go
// runtime and process collectors, on registry.
func newMetricSet(registry *prometheus.Registry) *metricSet {
	f := factory{registry}
	m := &metricSet{
		connected: f.gauge("connected",
			"1 while the worker has a session with the coordinator, else 0."),
		connectionState: f.gaugeVec("connection_state",
			"1 for the connection's current state, 0 for the others.", "state"),
		stateChanges: f.counterVec("connection_state_changes_total",
			"Connection state changes, by the state entered.", "state"),
		attempts: f.counter("connection_attempts_total",
			"Dials of the coordinator, first connections and reconnects alike."),
		disconnects: f.counter("disconnects_total",
			"Sessions lost: the connection left the connected state."),
		reconnects: f.counter("reconnects_total",
			"Sessions opened again after a lost one."),
		resumed: f.counter("resumed_reconnects_total",
			"Reconnects whose previous session the coordinator resumed, so no state sync was needed."),
		disconnectedTime: f.counter("disconnected_seconds_total",
			"Time without a session, summed over the outages that ended."),
		outages: f.histogram("outage_duration_seconds",
			"Duration of each outage, from the lost session to the next connected state.", outageBuckets),
		rtt: f.histogram("rtt_seconds",
			"Heartbeat round-trip time samples.", rttBuckets),
		smoothedRTT: f.gauge("rtt_smoothed_seconds",
			"Smoothed heartbeat round-trip time of the current or last connection."),
		rttVariance: f.gauge("rtt_variance_seconds",
			"Round-trip time variance of the current or last connection."),
		framesReceived: f.counter("frames_received_total",
			"WebSocket messages received from the coordinator, heartbeats included."),
		framesSent: f.counter("frames_sent_total",
			"WebSocket messages sent to the coordinator, heartbeats included."),
		bytesReceived: f.counter("received_bytes_total",
			"Payload bytes of the messages received from the coordinator, as on the wire."),
		bytesSent: f.counter("sent_bytes_total",
			"Payload bytes of the messages sent to the coordinator, as on the wire."),
		compressionRatio: f.gauge("sent_compression_ratio",
			"Size of the frames sent before compression divided by their size after it; 1 without compression."),
		sendQueue: f.gaugeVec("send_queue_frames",
			"Frames waiting in the connector's send queue, by priority level.", "priority"),
		replayFrames: f.gauge("replay_buffer_frames",
			"Frames sent but not yet acknowledged by the coordinator."),
		replayBytes: f.gauge("replay_buffer_bytes",
			"Size of the frames sent but not yet acknowledged by the coordinator."),
		runningTasks: f.gauge("running_tasks",
			"Attempts running on the worker."),
		heldOutcomes: f.gauge("held_outcomes",
			"Task outcomes in the worker's outbox that the coordinator has not acknowledged."),
		slots: f.gauge("slots",
			"Tasks the worker runs at once."),
		outcomes: f.counterVec("task_outcomes_total",
			"Task attempts finished on the worker, by status.", "status"),
		taskDuration: f.histogram("task_duration_seconds",
			"Time from the start of an attempt to its outcome.", durationBuckets),
		pluginRestarts: f.counterVec("plugin_restarts_total",
			"Crashed plugins that the worker host launched again.", "plugin", "kind"),
		eventsDropped: f.counterVec("events_dropped_total",
			"Host events this plugin did not receive: its buffer was full, or a Record call failed.",
			"reason"),
	}
	registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)

	// Every series of a fixed label set exists from the start, so a
	// rate() over it has a zero to start from.
	for _, state := range stateLabels() {
		m.connectionState.WithLabelValues(state)
		m.stateChanges.WithLabelValues(state)
	}
	for _, level := range sendQueueLevels {
		m.sendQueue.WithLabelValues(level)
	}
	for _, status := range taskStatuses {
		m.outcomes.WithLabelValues(status)
	}
	for _, reason := range []string{dropBufferFull, dropRecordFailed} {
		m.eventsDropped.WithLabelValues(reason)
	}
	m.compressionRatio.Set(1)
	return m
}

// Reasons of events_dropped_total.
const (
	dropBufferFull   = "buffer_full"
	dropRecordFailed = "record_failed"
)

// factory creates collectors in namespace and registers them.
type factory struct {
	registry *prometheus.Registry
}

func (f factory) gauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help})
	f.registry.MustRegister(g)
	return g
}

func (f factory) gaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help}, labels)
	f.registry.MustRegister(g)
	return g
}

func (f factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help})
	f.registry.MustRegister(c)
	return c
}

func (f factory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help}, labels)
	f.registry.MustRegister(c)
	return c
}

func (f factory) histogram(name, help string, buckets []float64) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: namespace, Name: name, Help: help, Buckets: buckets,
	})
	f.registry.MustRegister(h)
	return h
}
