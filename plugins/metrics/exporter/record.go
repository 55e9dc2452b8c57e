package exporter

import (
	"slices"
	"time"

	"github.com/dtf-io/dtf/plugin/pb"
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
func (r *recorder) record(req *pb.RecordRequest, now time.Time) {
	for _, event := range req.GetEvents() {
		at := now
		if ms := event.GetUnixMs(); ms > 0 {
			at = time.UnixMilli(ms)
		}
		r.apply(event, at)
	}
	full := r.droppedFull.increment(req.GetDroppedBufferFull())
	failed := r.droppedFailed.increment(req.GetDroppedRecordFailed())
	r.metrics.eventsDropped.WithLabelValues(dropBufferFull).Add(float64(full))
	r.metrics.eventsDropped.WithLabelValues(dropRecordFailed).Add(float64(failed))
	r.summary.eventsDroppedTotal += full + failed
}

// apply applies one event that happened at at. Event types that this
// build does not know are ignored, so a newer host can add them.
func (r *recorder) apply(event *pb.HostEvent, at time.Time) {
	switch e := event.GetEvent().(type) {
	case *pb.HostEvent_State:
		r.applyState(e.State, at)
	case *pb.HostEvent_Reconnected:
		r.applyReconnected(e.Reconnected)
	case *pb.HostEvent_ConnectorStats:
		r.applyConnectorStats(e.ConnectorStats)
	case *pb.HostEvent_HostStats:
		r.metrics.runningTasks.Set(float64(e.HostStats.GetRunningTasks()))
		r.metrics.heldOutcomes.Set(float64(e.HostStats.GetHeldOutcomes()))
		r.metrics.slots.Set(float64(e.HostStats.GetSlots()))
	case *pb.HostEvent_TaskFinished:
		r.applyTaskFinished(e.TaskFinished)
	case *pb.HostEvent_PluginRestart:
		restart := e.PluginRestart
		r.metrics.pluginRestarts.WithLabelValues(restart.GetPlugin(), restart.GetKind()).Inc()
		r.summary.pluginRestarts++
	}
}

func (r *recorder) applyState(change *pb.StateChange, at time.Time) {
	state := change.GetState()
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
func (r *recorder) applyReconnected(e *pb.Reconnected) {
	outage := time.Duration(e.GetOutageMs()) * time.Millisecond
	r.metrics.reconnects.Inc()
	if e.GetResumed() {
		r.metrics.resumed.Inc()
	}
	r.metrics.disconnectedTime.Add(outage.Seconds())
	r.metrics.outages.Observe(outage.Seconds())
	r.summary.reconnects++
	r.summary.disconnected += outage
}

func (r *recorder) applyConnectorStats(s *pb.ConnectorStats) {
	m := r.metrics
	framesIn := r.framesIn.increment(s.GetFramesIn())
	framesOut := r.framesOut.increment(s.GetFramesOut())
	bytesIn := r.bytesIn.increment(s.GetBytesIn())
	bytesOut := r.bytesOut.increment(s.GetBytesOut())
	m.framesReceived.Add(float64(framesIn))
	m.framesSent.Add(float64(framesOut))
	m.bytesReceived.Add(float64(bytesIn))
	m.bytesSent.Add(float64(bytesOut))
	r.summary.framesIn += framesIn
	r.summary.framesOut += framesOut
	r.summary.bytesIn += bytesIn
	r.summary.bytesOut += bytesOut

	r.totalFrameBytesRaw += r.frameBytesRaw.increment(s.GetFrameBytesOutRaw())
	r.totalFrameBytesEncoded += r.frameBytesEncoded.increment(s.GetFrameBytesOutEncoded())
	if r.totalFrameBytesEncoded > 0 {
		m.compressionRatio.Set(float64(r.totalFrameBytesRaw) / float64(r.totalFrameBytesEncoded))
	}

	for _, sample := range s.GetRttSamplesMicros() {
		m.rtt.Observe(micros(sample).Seconds())
	}
	if s.GetSmoothedRttMicros() > 0 {
		r.summary.smoothedRTT = micros(s.GetSmoothedRttMicros())
		m.smoothedRTT.Set(r.summary.smoothedRTT.Seconds())
		m.rttVariance.Set(micros(s.GetRttVarianceMicros()).Seconds())
	}
	for i, queued := range s.GetSendQueueFrames() {
		if i < len(sendQueueLevels) {
			m.sendQueue.WithLabelValues(sendQueueLevels[i]).Set(float64(queued))
		}
	}
	m.replayFrames.Set(float64(s.GetReplayFrames()))
	m.replayBytes.Set(float64(s.GetReplayBytes()))
}

func (r *recorder) applyTaskFinished(e *pb.TaskFinished) {
	status := statusLabel(e.GetStatus())
	r.metrics.outcomes.WithLabelValues(status).Inc()
	r.metrics.taskDuration.Observe((time.Duration(e.GetDurationMs()) * time.Millisecond).Seconds())
	r.summary.outcomes[status]++
}

// statusLabel returns the status label of an outcome status.
func statusLabel(s pb.Status) string {
	switch s {
	case pb.Status_STATUS_SUCCEEDED:
		return "succeeded"
	case pb.Status_STATUS_FAILED:
		return "failed"
	case pb.Status_STATUS_CANCELLED:
		return "cancelled"
	case pb.Status_STATUS_TIMED_OUT:
		return "timed_out"
	default:
		return "unspecified"
	}
}

// snapshot returns the summary over the window from the plugin's start to
// now. The time without a session includes an outage that still lasts.
func (r *recorder) snapshot(now time.Time) *pb.WorkerSummary {
	s := r.summary
	disconnected := s.disconnected
	if !r.lostAt.IsZero() && now.After(r.lostAt) {
		disconnected += now.Sub(r.lostAt)
	}
	return &pb.WorkerSummary{
		WindowStartUnixMs: s.start.UnixMilli(),
		WindowEndUnixMs:   now.UnixMilli(),
		Reconnects:        s.reconnects,
		DisconnectedMs:    disconnected.Milliseconds(),
		SmoothedRttMicros: s.smoothedRTT.Microseconds(),
		FramesIn:          s.framesIn,
		FramesOut:         s.framesOut,
		BytesIn:           s.bytesIn,
		BytesOut:          s.bytesOut,
		TasksSucceeded:    s.outcomes["succeeded"],
		TasksFailed:       s.outcomes["failed"],
		TasksCancelled:    s.outcomes["cancelled"],
		TasksTimedOut:     s.outcomes["timed_out"],
		PluginRestarts:    s.pluginRestarts,
		EventsDropped:     s.eventsDroppedTotal,
	}
}

func micros(us int64) time.Duration {
	return time.Duration(us) * time.Microsecond
}
