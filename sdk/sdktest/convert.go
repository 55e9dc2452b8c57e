package sdktest

import (
	"time"

	"github.com/dtf-io/dtf/plugin/pb"
	"github.com/dtf-io/dtf/sdk"
)

// Conversions between the SDK types and the plugin API, in the direction
// that the worker host uses them.

func hostEventToProto(e sdk.HostEvent) *pb.HostEvent {
	out := &pb.HostEvent{}
	if !e.Time.IsZero() {
		out.UnixMs = e.Time.UnixMilli()
	}
	switch {
	case e.State != nil:
		out.Event = &pb.HostEvent_State{State: stateChangeToProto(*e.State)}
	case e.Reconnected != nil:
		out.Event = &pb.HostEvent_Reconnected{Reconnected: &pb.Reconnected{
			OutageMs: e.Reconnected.Outage.Milliseconds(),
			Resumed:  e.Reconnected.Resumed,
			Attempts: uint32(e.Reconnected.Attempts),
		}}
	case e.ConnectorStats != nil:
		out.Event = &pb.HostEvent_ConnectorStats{ConnectorStats: connectorStatsToProto(*e.ConnectorStats)}
	case e.HostStats != nil:
		out.Event = &pb.HostEvent_HostStats{HostStats: &pb.HostStats{
			RunningTasks: uint32(e.HostStats.RunningTasks),
			HeldOutcomes: uint32(e.HostStats.HeldOutcomes),
			Slots:        uint32(e.HostStats.Slots),
		}}
	case e.TaskFinished != nil:
		out.Event = &pb.HostEvent_TaskFinished{TaskFinished: &pb.TaskFinished{
			Status:     statusToProto(e.TaskFinished.Status),
			DurationMs: e.TaskFinished.Duration.Milliseconds(),
			Retryable:  e.TaskFinished.Retryable,
			Released:   e.TaskFinished.Released,
		}}
	case e.PluginRestart != nil:
		out.Event = &pb.HostEvent_PluginRestart{PluginRestart: &pb.PluginRestart{
			Plugin: e.PluginRestart.Plugin,
			Kind:   e.PluginRestart.Kind,
			Exit:   e.PluginRestart.Exit,
		}}
	}
	return out
}

// statusToProto converts a status; an unknown one becomes
// STATUS_UNSPECIFIED.
func statusToProto(s sdk.Status) pb.Status {
	switch s {
	case sdk.StatusSucceeded:
		return pb.Status_STATUS_SUCCEEDED
	case sdk.StatusFailed:
		return pb.Status_STATUS_FAILED
	case sdk.StatusCancelled:
		return pb.Status_STATUS_CANCELLED
	case sdk.StatusTimedOut:
		return pb.Status_STATUS_TIMED_OUT
	default:
		return pb.Status_STATUS_UNSPECIFIED
	}
}

func stateChangeToProto(s sdk.StateChange) *pb.StateChange {
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

func stateChangeFromProto(s *pb.StateChange) sdk.StateChange {
	out := sdk.StateChange{
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

func connectorStatsToProto(s sdk.ConnectorStats) *pb.ConnectorStats {
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

func connectorStatsFromProto(s *pb.ConnectorStats) sdk.ConnectorStats {
	out := sdk.ConnectorStats{
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
