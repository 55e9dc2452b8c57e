package sdk

import "time"

// Connection states that a connector reports in StateChange.State. The
// worker host acts on StateConnected, StateBackingOff, StateCircuitOpen and
// StateClosed; the others are logged and counted.
const (
	StateConnecting  = "connecting"
	StateConnected   = "connected"
	StateResuming    = "resuming"
	StateBackingOff  = "backing_off"
	StateCircuitOpen = "circuit_open"
	StateDraining    = "draining"
	StateClosed      = "closed"
)

// StateChange is one transition of a connector's connection state machine.
// A connector sends it on its event stream, and metrics plugins receive it
// in HostEvent.State.
type StateChange struct {
	// State is one of the State constants.
	State string
	// Reason is why the state changed, for logs. A StateClosed change
	// whose reason starts with "fatal" stops the worker host, for example
	// after a rejected credential.
	Reason string
	// Attempt counts the connection attempts since the last connected state.
	Attempt int
	// NextRetry is when the next attempt starts while backing off; zero
	// otherwise.
	NextRetry time.Time
	// SessionID names the session with the coordinator, once there is one.
	SessionID string
	// RTT is the newest round-trip time measurement.
	RTT time.Duration
	// Reconnects counts the connections opened after the first one.
	Reconnects uint64
	// Resumed is set on a StateConnected change when the coordinator resumed
	// the previous session, so no frame was lost and the host sends no state
	// sync.
	Resumed bool
	// HeartbeatInterval and HeartbeatTimeout are the values in force.
	HeartbeatInterval time.Duration
	HeartbeatTimeout  time.Duration
}

// ConnectorStats is a snapshot of a connector's counters. The counters
// start at zero when the connector process starts, so a receiver treats a
// smaller value as a counter reset.
type ConnectorStats struct {
	Connected bool
	// FramesIn and FramesOut count WebSocket messages, heartbeats included.
	// BytesIn and BytesOut count their payload bytes as sent on the wire.
	FramesIn  uint64
	FramesOut uint64
	BytesIn   uint64
	BytesOut  uint64
	// FrameBytesOutRaw and FrameBytesOutEncoded are the sizes of the frames
	// sent before and after compression; they are equal while compression
	// is off.
	FrameBytesOutRaw     uint64
	FrameBytesOutEncoded uint64
	// SmoothedRTT and RTTVariance describe the round-trip time of the open
	// connection, or of the last one while disconnected.
	SmoothedRTT time.Duration
	RTTVariance time.Duration
	// RTTSamples lists the round-trip samples measured since the previous
	// snapshot, oldest first. The shipped connector sends at most 64.
	RTTSamples []time.Duration
	// SendQueueFrames is the number of frames in the send queue per
	// priority level, highest priority first: control, outcome, checkpoint,
	// progress, telemetry.
	SendQueueFrames []int
	// ReplayFrames and ReplayBytes describe the frames sent but not yet
	// acknowledged by the coordinator.
	ReplayFrames int
	ReplayBytes  uint64
	// Resumes counts connections that resumed the previous session.
	Resumes uint64
}
