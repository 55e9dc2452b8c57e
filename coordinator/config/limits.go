package config

import (
	"fmt"
	"strings"
	"time"
)

// Caps of the count settings. Each one stops a typo or a huge value from
// letting one connection, session or request hold memory without bound.
// The defaults sit far inside them.
const (
	// maxAttemptsLimit bounds max_attempts so that a typo such as 3000
	// does not keep a failing task cycling through the fleet for hours.
	maxAttemptsLimit = 100
	// minBodyBytes and maxBodyBytesLimit bound max_body_bytes. 64 MiB is
	// 16 times the default, which already fits thousands of tasks.
	minBodyBytes      = 1 << 10
	maxBodyBytesLimit = 64 << 20
	// minFrameBytes keeps room for a Hello with many labels and task
	// types. maxFrameBytesLimit matches the reconnection plugin's cap on
	// its own max_frame_bytes. The plugin passes each frame to the worker
	// host as one gRPC message of at most 16 MiB, so no dtf worker sends a
	// larger frame. A higher limit would only let another client make the
	// coordinator buffer more.
	minFrameBytes      = 1 << 10
	maxFrameBytesLimit = 16 << 20
	// maxSendQueue bounds the unsequenced frames, mostly heartbeat
	// replies, queued for one connection. The reconnection plugin caps its
	// send_queue_frames at the same number.
	maxSendQueue = 1 << 16
	// maxReplayFrames and maxReplayBytes bound one session's replay
	// buffer. The byte cap leaves room for 16 frames of the largest size.
	// A kept frame costs only a pointer and a size on top of its bytes, so
	// the frame cap is generous. The reconnection plugin uses the same
	// caps for its replay buffer.
	maxReplayFrames = 1 << 20
	maxReplayBytes  = 16 * maxFrameBytesLimit
	// maxSessionRate bounds max_sessions_per_second and session_burst.
	// Every admitted session costs a store write, so a bucket larger than
	// this no longer sheds a reconnection storm.
	maxSessionRate = 100_000
	// maxPendingHandshakesLimit bounds max_pending_handshakes. Each pending
	// handshake holds a socket, a goroutine and a read buffer until
	// handshake_timeout.
	maxPendingHandshakesLimit = 1 << 16
	// maxAddressRate bounds connections_per_second_per_address and
	// connection_burst_per_address. A higher rate from one address is no
	// longer a limit, because max_pending_handshakes stops it first.
	maxAddressRate = 100_000
)

// countRange is the allowed range of a whole-number setting and its
// default, which error messages suggest.
type countRange struct {
	min, max, def int
}

// countRanges are the ranges of the count settings by their name in the
// file. Load checks a value in the file where it decodes it, so the error
// shows its line; Validate checks the same ranges on any configuration.
var countRanges = map[string]countRange{
	"max_attempts":                    {1, maxAttemptsLimit, DefaultMaxAttempts},
	"max_body_bytes":                  {minBodyBytes, maxBodyBytesLimit, DefaultMaxBodyBytes},
	"workers.max_frame_bytes":         {minFrameBytes, maxFrameBytesLimit, DefaultMaxFrameBytes},
	"workers.send_queue":              {1, maxSendQueue, DefaultSendQueue},
	"workers.replay_frames":           {1, maxReplayFrames, DefaultReplayFrames},
	"workers.replay_bytes":            {minFrameBytes, maxReplayBytes, DefaultReplayBytes},
	"workers.max_sessions_per_second": {1, maxSessionRate, DefaultMaxSessionsPerSecond},
	"workers.session_burst":           {1, maxSessionRate, DefaultSessionBurst},
	"workers.max_pending_handshakes":  {1, maxPendingHandshakesLimit, DefaultMaxPendingHandshakes},

	"workers.connections_per_second_per_address": {1, maxAddressRate, DefaultConnectionsPerSecondPerAddress},
	"workers.connection_burst_per_address":       {1, maxAddressRate, DefaultConnectionBurstPerAddress},
	// 0 means max_frame_bytes; validateDecodedLimit rejects other values
	// below it.
	"workers.max_decoded_bytes": {0, maxFrameBytesLimit, 0},
}

// countError returns the message for a count setting outside its range.
// value is the number as written, which may not fit an int.
func countError(name, value string, tooSmall bool) string {
	r := countRanges[name]
	problem := "too large"
	if tooSmall {
		problem = "too small"
	}
	return fmt.Sprintf("%s %s is %s; use %d to %d, default %d", name, value, problem, r.min, r.max, r.def)
}

// checkCount returns an error when value is outside the range of the count
// setting name.
func checkCount(name string, value int) error {
	r := countRanges[name]
	if value < r.min || value > r.max {
		return fmt.Errorf("%s", countError(name, fmt.Sprint(value), value < r.min))
	}
	return nil
}

// Ranges of the heartbeat settings in a file. The 50ms floor allows at
// most 20 heartbeats per second on a connection, while an interval of a
// few nanoseconds keeps a core busy. The shortest timeout spans three of
// the shortest intervals, the ratio of the defaults. A connection silent for
// minutes risks being closed by a NAT or load balancer idle timer, hence
// the one-minute ceiling on the interval. The timeout ceiling bounds how
// long a dead worker's tasks wait before the grace period starts.
const (
	minHeartbeatInterval = 50 * time.Millisecond
	maxHeartbeatInterval = time.Minute
	minHeartbeatTimeout  = 3 * minHeartbeatInterval
	maxHeartbeatTimeout  = 10 * time.Minute
	// minCodeHeartbeatInterval is the floor Validate applies to any
	// configuration. Welcome carries the interval in whole milliseconds,
	// so a shorter one would reach the worker as zero, which means none.
	// Tests build configurations in code with intervals of a few
	// milliseconds to make heartbeats frequent.
	minCodeHeartbeatInterval = time.Millisecond
)

// durationRange is the allowed range of a duration setting in a file.
type durationRange struct {
	min, max time.Duration
}

// durationRanges are the ranges of the duration settings by their name in
// the file. They hold for values read from a file only: tests and
// benchmarks build configurations in code with heartbeats of milliseconds
// or of many minutes, and Validate accepts those.
var durationRanges = map[string]durationRange{
	"shutdown_timeout": {100 * time.Millisecond, time.Hour},
	// A retry delay past an hour or a day looks like a stuck queue, not a
	// backoff; 0 for the base retries at once.
	"retry_backoff_base": {0, time.Hour},
	"retry_backoff_max":  {0, 24 * time.Hour},
	// The grace must cover killing a task's processes and delivering the
	// outcome over a slow link, but a day past the timeout is a hung task.
	"task_timeout_grace":         {time.Second, 24 * time.Hour},
	"schedule_interval":          {10 * time.Millisecond, time.Minute},
	"workers.heartbeat_interval": {minHeartbeatInterval, maxHeartbeatInterval},
	"workers.heartbeat_timeout":  {minHeartbeatTimeout, maxHeartbeatTimeout},
	// A worker away for longer than a day is not coming back with its
	// running tasks, which would otherwise never be reassigned.
	"workers.reassign_after":    {0, 24 * time.Hour},
	"workers.handshake_timeout": {10 * time.Millisecond, 5 * time.Minute},
	"workers.session_ttl":       {0, 24 * time.Hour},
	// 0 means four times heartbeat_timeout, which the ceiling allows for
	// the longest heartbeat_timeout.
	"workers.max_heartbeat_timeout": {0, 4 * maxHeartbeatTimeout},
	// The HTTP server's timeouts. The header floor leaves a client on a
	// slow link time to send a few hundred bytes of headers. The ceilings
	// stop at an hour, because an hour per request or per idle connection
	// no longer bounds anything.
	"http_read_header_timeout": {100 * time.Millisecond, 5 * time.Minute},
	"http_read_timeout":        {time.Second, time.Hour},
	"http_idle_timeout":        {time.Second, time.Hour},
}

// formatDuration writes d the way a user writes it in a file: "1h" and
// "10m" instead of "1h0m0s" and "10m0s".
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// validateDecodedLimit checks workers.max_decoded_bytes. A limit below
// max_frame_bytes would reject a compressed frame that the same frame sent
// uncompressed would pass.
func validateDecodedLimit(w Workers) error {
	if w.MaxDecodedBytes == 0 {
		return nil
	}
	if err := checkCount("workers.max_decoded_bytes", w.MaxDecodedBytes); err != nil {
		return err
	}
	if w.MaxDecodedBytes < w.MaxFrameBytes {
		return fmt.Errorf("workers.max_decoded_bytes %d is smaller than workers.max_frame_bytes %d; "+
			"use 0 for the same limit or at least %d", w.MaxDecodedBytes, w.MaxFrameBytes, w.MaxFrameBytes)
	}
	return nil
}

// DecodedLimit returns the bound of a frame after decompression:
// MaxDecodedBytes, or MaxFrameBytes when that is 0.
func (w Workers) DecodedLimit() int {
	if w.MaxDecodedBytes == 0 {
		return w.MaxFrameBytes
	}
	return w.MaxDecodedBytes
}
