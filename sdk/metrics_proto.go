package sdk

import (
	"time"

	"github.com/dtf-io/dtf/plugin/pb"
)

// Conversions between the metrics plugin API and the SDK types.

func hostEventFromProto(event *pb.HostEvent) HostEvent {
	out := HostEvent{}
	if ms := event.GetUnixMs(); ms > 0 {
		out.Time = time.UnixMilli(ms)
	}
	switch e := event.GetEvent().(type) {
	case *pb.HostEvent_State:
		state := stateChangeFromProto(e.State)
		out.State = &state
	case *pb.HostEvent_Reconnected:
		out.Reconnected = &Reconnected{
			Outage:   time.Duration(e.Reconnected.GetOutageMs()) * time.Millisecond,
			Resumed:  e.Reconnected.GetResumed(),
			Attempts: int(e.Reconnected.GetAttempts()),
		}
	case *pb.HostEvent_ConnectorStats:
		stats := connectorStatsFromProto(e.ConnectorStats)
		out.ConnectorStats = &stats
	case *pb.HostEvent_HostStats:
		out.HostStats = &HostStats{
			RunningTasks: int(e.HostStats.GetRunningTasks()),
			HeldOutcomes: int(e.HostStats.GetHeldOutcomes()),
			Slots:        int(e.HostStats.GetSlots()),
		}
	case *pb.HostEvent_TaskFinished:
		out.TaskFinished = &TaskFinished{
			Status:    statusFromProto(e.TaskFinished.GetStatus()),
			Duration:  time.Duration(e.TaskFinished.GetDurationMs()) * time.Millisecond,
			Retryable: e.TaskFinished.GetRetryable(),
			Released:  e.TaskFinished.GetReleased(),
		}
	case *pb.HostEvent_PluginRestart:
		out.PluginRestart = &PluginRestart{
			Plugin: e.PluginRestart.GetPlugin(),
			Kind:   e.PluginRestart.GetKind(),
			Exit:   e.PluginRestart.GetExit(),
		}
	}
	return out
}

// statusFromProto converts a status of the plugin API; an unspecified or
// unknown value becomes the empty Status.
func statusFromProto(s pb.Status) Status {
	switch s {
	case pb.Status_STATUS_SUCCEEDED:
		return StatusSucceeded
	case pb.Status_STATUS_FAILED:
		return StatusFailed
	case pb.Status_STATUS_CANCELLED:
		return StatusCancelled
	case pb.Status_STATUS_TIMED_OUT:
		return StatusTimedOut
	default:
		return ""
	}
}

func stateChangeFromProto(s *pb.StateChange) StateChange {
	out := StateChange{
		State:             s.GetState(),
		Reason:            s.GetReason(),
		Attempt:           int(s.GetAttempt()),
		SessionID:         s.GetSessionId(),
		RTT:               time.Duration(s.GetRttMicros()) * time.Microsecond,
		Reconnects:        s.GetReconnects(),
		Resumed:           s.GetResumed(),
		HeartbeatInterval: time.Duration(s.GetHeartbeatIntervalMs()) * time.Millisecond,
		HeartbeatTimeout:  time.Duration(s.GetHeartbeatTimeoutMs()) * time.Millisecond,
	}
	if ms := s.GetNextRetryUnixMs(); ms > 0 {
		out.NextRetry = time.UnixMilli(ms)
	}
	return out
}

func stateChangeToProto(s StateChange) *pb.StateChange {
	out := &pb.StateChange{
		State:               s.State,
		Reason:              s.Reason,
		Attempt:             uint32(s.Attempt),
		SessionId:           s.SessionID,
		RttMicros:           s.RTT.Microseconds(),
		Reconnects:          s.Reconnects,
		Resumed:             s.Resumed,
		HeartbeatIntervalMs: s.HeartbeatInterval.Milliseconds(),
		HeartbeatTimeoutMs:  s.HeartbeatTimeout.Milliseconds(),
	}
	if !s.NextRetry.IsZero() {
		out.NextRetryUnixMs = s.NextRetry.UnixMilli()
	}
	return out
}

func connectorStatsFromProto(s *pb.ConnectorStats) ConnectorStats {
	out := ConnectorStats{
		Connected:            s.GetConnected(),
		FramesIn:             s.GetFramesIn(),
		FramesOut:            s.GetFramesOut(),
		BytesIn:              s.GetBytesIn(),
		BytesOut:             s.GetBytesOut(),
		FrameBytesOutRaw:     s.GetFrameBytesOutRaw(),
		FrameBytesOutEncoded: s.GetFrameBytesOutEncoded(),
		SmoothedRTT:          time.Duration(s.GetSmoothedRttMicros()) * time.Microsecond,
		RTTVariance:          time.Duration(s.GetRttVarianceMicros()) * time.Microsecond,
		ReplayFrames:         int(s.GetReplayFrames()),
		ReplayBytes:          s.GetReplayBytes(),
		Resumes:              s.GetResumes(),
	}
	for _, sample := range s.GetRttSamplesMicros() {
		out.RTTSamples = append(out.RTTSamples, time.Duration(sample)*time.Microsecond)
	}
	for _, queued := range s.GetSendQueueFrames() {
		out.SendQueueFrames = append(out.SendQueueFrames, int(queued))
	}
	return out
}

func connectorStatsToProto(s ConnectorStats) *pb.ConnectorStats {
	out := &pb.ConnectorStats{
		Connected:            s.Connected,
		FramesIn:             s.FramesIn,
		FramesOut:            s.FramesOut,
		BytesIn:              s.BytesIn,
		BytesOut:             s.BytesOut,
		FrameBytesOutRaw:     s.FrameBytesOutRaw,
		FrameBytesOutEncoded: s.FrameBytesOutEncoded,
		SmoothedRttMicros:    s.SmoothedRTT.Microseconds(),
		RttVarianceMicros:    s.RTTVariance.Microseconds(),
		ReplayFrames:         uint32(s.ReplayFrames),
		ReplayBytes:          s.ReplayBytes,
		Resumes:              s.Resumes,
	}
	for _, sample := range s.RTTSamples {
		out.RttSamplesMicros = append(out.RttSamplesMicros, sample.Microseconds())
	}
	for _, queued := range s.SendQueueFrames {
		out.SendQueueFrames = append(out.SendQueueFrames, uint32(queued))
	}
	return out
}

func workerSummaryToProto(s WorkerSummary) *pb.WorkerSummary {
	out := &pb.WorkerSummary{
		Reconnects:        s.Reconnects,
		DisconnectedMs:    s.Disconnected.Milliseconds(),
		SmoothedRttMicros: s.SmoothedRTT.Microseconds(),
		FramesIn:          s.FramesIn,
		FramesOut:         s.FramesOut,
		BytesIn:           s.BytesIn,
		BytesOut:          s.BytesOut,
		TasksSucceeded:    s.TasksSucceeded,
		TasksFailed:       s.TasksFailed,
		TasksCancelled:    s.TasksCancelled,
		TasksTimedOut:     s.TasksTimedOut,
		PluginRestarts:    s.PluginRestarts,
		EventsDropped:     s.EventsDropped,
	}
	if !s.WindowStart.IsZero() {
		out.WindowStartUnixMs = s.WindowStart.UnixMilli()
	}
	if !s.WindowEnd.IsZero() {
		out.WindowEndUnixMs = s.WindowEnd.UnixMilli()
	}
	return out
}
