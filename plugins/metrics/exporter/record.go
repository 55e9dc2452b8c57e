package exporter

import (
	"slices"
	"time"

	"github.com/dtf-io/dtf/sdk"
)

// recorder applies host events to the metric set and to the summary. Its
// methods are called with the Exporter's lock held.
type recorder struct {
	metrics *metricSet
	summary summary

	// state is the newest connection state, and lostAt is when the
	// worker last left the connected state; zero while connected or
	// before the first session.
	state  string
	lostAt time.Time

	// The connector and the host report cumulative counters, which the
	// recorder turns into increments.
	framesIn, framesOut, bytesIn, bytesOut     cumulative
	frameBytesRaw, frameBytesEncoded           cumulative
	droppedFull, droppedFailed                 cumulative
	totalFrameBytesRaw, totalFrameBytesEncoded uint64
}

// summary contains the counts that Summary returns, since the plugin
// started.
type summary struct {
	start        time.Time
	reconnects   uint64
	disconnected time.Duration
	smoothedRTT  time.Duration
	framesIn     uint64
	framesOut    uint64
	bytesIn      uint64
	bytesOut     uint64
	// outcomes counts the task outcomes by status label.
	outcomes           map[string]uint64
	pluginRestarts     uint64
	eventsDroppedTotal uint64
}

// cumulative turns a counter that another process reports into
// increments. A value below the previous one means that the counting
// process restarted from zero, so the whole value is the increment.
type cumulative struct {
	last uint64
}

func (c *cumulative) increment(value uint64) uint64 {
	delta := value
	if value >= c.last {
		delta = value - c.last
	}
	c.last = value
	return delta
}

func newRecorder(metrics *metricSet, start time.Time) *recorder {
	return &recorder{
		metrics: metrics,
		summary: summary{start: start, outcomes: map[string]uint64{}},
	}
}

// record applies one Record call: the events in order, then the host's
// drop counts.
func (r *recorder) record(batch sdk.EventBatch, now time.Time) {
	for _, event := range batch.Events {
		at := event.Time
		if at.IsZero() {
			at = now
		}
		r.apply(event, at)
	}
	full := r.droppedFull.increment(batch.DroppedBufferFull)
	failed := r.droppedFailed.increment(batch.DroppedRecordFailed)
	r.metrics.eventsDropped.WithLabelValues(dropBufferFull).Add(float64(full))
	r.metrics.eventsDropped.WithLabelValues(dropRecordFailed).Add(float64(failed))
	r.summary.eventsDroppedTotal += full + failed
}

// apply applies one event that happened at at. Event types that this
// build does not know are ignored, so a newer host can add them.
func (r *recorder) apply(event sdk.HostEvent, at time.Time) {
	switch {
	case event.State != nil:
		r.applyState(event.State, at)
	case event.Reconnected != nil:
		r.applyReconnected(event.Reconnected)
	case event.ConnectorStats != nil:
		r.applyConnectorStats(event.ConnectorStats)
	case event.HostStats != nil:
		r.metrics.runningTasks.Set(float64(event.HostStats.RunningTasks))
		r.metrics.heldOutcomes.Set(float64(event.HostStats.HeldOutcomes))
		r.metrics.slots.Set(float64(event.HostStats.Slots))
	case event.TaskFinished != nil:
		r.applyTaskFinished(event.TaskFinished)
	case event.PluginRestart != nil:
		restart := event.PluginRestart
		r.metrics.pluginRestarts.WithLabelValues(restart.Plugin, restart.Kind).Inc()
		r.summary.pluginRestarts++
	}
}

func (r *recorder) applyState(change *sdk.StateChange, at time.Time) {
	state := change.State
	if !slices.Contains(connectionStates, state) {
		state = stateOther
	}
	m := r.metrics
	m.stateChanges.WithLabelValues(state).Inc()
	for _, s := range stateLabels() {
		m.connectionState.WithLabelValues(s).Set(0)
	}
	m.connectionState.WithLabelValues(state).Set(1)

	switch {
	case state == "connected":
		m.connected.Set(1)
		r.lostAt = time.Time{}
	case r.state == "connected":
		m.connected.Set(0)
		m.disconnects.Inc()
		r.lostAt = at
	}
	if state == "connecting" || state == "resuming" {
		m.attempts.Inc()
	}
	r.state = state
}

// applyReconnected counts a reconnect and its outage, as the host measured
// it.
func (r *recorder) applyReconnected(e *sdk.Reconnected) {
	outage := e.Outage
	r.metrics.reconnects.Inc()
	if e.Resumed {
		r.metrics.resumed.Inc()
	}
	r.metrics.disconnectedTime.Add(outage.Seconds())
	r.metrics.outages.Observe(outage.Seconds())
	r.summary.reconnects++
	r.summary.disconnected += outage
}

func (r *recorder) applyConnectorStats(s *sdk.ConnectorStats) {
	m := r.metrics
	framesIn := r.framesIn.increment(s.FramesIn)
	framesOut := r.framesOut.increment(s.FramesOut)
	bytesIn := r.bytesIn.increment(s.BytesIn)
	bytesOut := r.bytesOut.increment(s.BytesOut)
	m.framesReceived.Add(float64(framesIn))
	m.framesSent.Add(float64(framesOut))
	m.bytesReceived.Add(float64(bytesIn))
	m.bytesSent.Add(float64(bytesOut))
	r.summary.framesIn += framesIn
	r.summary.framesOut += framesOut
	r.summary.bytesIn += bytesIn
	r.summary.bytesOut += bytesOut

	r.totalFrameBytesRaw += r.frameBytesRaw.increment(s.FrameBytesOutRaw)
	r.totalFrameBytesEncoded += r.frameBytesEncoded.increment(s.FrameBytesOutEncoded)
	if r.totalFrameBytesEncoded > 0 {
		m.compressionRatio.Set(float64(r.totalFrameBytesRaw) / float64(r.totalFrameBytesEncoded))
	}

	for _, sample := range s.RTTSamples {
		m.rtt.Observe(sample.Seconds())
	}
	if s.SmoothedRTT > 0 {
		r.summary.smoothedRTT = s.SmoothedRTT
		m.smoothedRTT.Set(r.summary.smoothedRTT.Seconds())
		m.rttVariance.Set(s.RTTVariance.Seconds())
	}
	for i, queued := range s.SendQueueFrames {
		if i < len(sendQueueLevels) {
			m.sendQueue.WithLabelValues(sendQueueLevels[i]).Set(float64(queued))
		}
	}
	m.replayFrames.Set(float64(s.ReplayFrames))
	m.replayBytes.Set(float64(s.ReplayBytes))
}

func (r *recorder) applyTaskFinished(e *sdk.TaskFinished) {
	status := statusLabel(e.Status)
	r.metrics.outcomes.WithLabelValues(status).Inc()
	r.metrics.taskDuration.Observe(e.Duration.Seconds())
	r.summary.outcomes[status]++
}

// statusLabel returns the status label of an outcome status. The empty
// status of an unknown or unspecified value gets "unspecified".
func statusLabel(s sdk.Status) string {
	switch s {
	case sdk.StatusSucceeded, sdk.StatusFailed, sdk.StatusCancelled, sdk.StatusTimedOut:
		return string(s)
	default:
		return "unspecified"
	}
}

// snapshot returns the summary over the window from the plugin's start to
// now. The time without a session includes an outage that still lasts.
func (r *recorder) snapshot(now time.Time) sdk.WorkerSummary {
	s := r.summary
	disconnected := s.disconnected
	if !r.lostAt.IsZero() && now.After(r.lostAt) {
		disconnected += now.Sub(r.lostAt)
	}
	return sdk.WorkerSummary{
		WindowStart:    s.start,
		WindowEnd:      now,
		Reconnects:     s.reconnects,
		Disconnected:   disconnected,
		SmoothedRTT:    s.smoothedRTT,
		FramesIn:       s.framesIn,
		FramesOut:      s.framesOut,
		BytesIn:        s.bytesIn,
		BytesOut:       s.bytesOut,
		TasksSucceeded: s.outcomes["succeeded"],
		TasksFailed:    s.outcomes["failed"],
		TasksCancelled: s.outcomes["cancelled"],
		TasksTimedOut:  s.outcomes["timed_out"],
		PluginRestarts: s.pluginRestarts,
		EventsDropped:  s.eventsDroppedTotal,
	}
}
