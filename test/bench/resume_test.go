package bench

import (
	"fmt"
	"testing"
	"time"

	"github.com/dtf-io/dtf/coordinator"
	"github.com/dtf-io/dtf/plugin/pb"
)

// resumeHeartbeat is the heartbeat of both sides in
// BenchmarkRestoreResume. It keeps the wait for a blackhole's detection
// short, and the figures start at the restore, after that wait.
var resumeHeartbeat = heartbeat{interval: 500 * time.Millisecond, timeout: 1500 * time.Millisecond}

// restoreCase is one outage of BenchmarkRestoreResume.
type restoreCase struct {
	// fault is "blackhole" (packets vanish until the restore) or "cut"
	// (the connection is closed and new ones are rejected until the
	// restore).
	fault   string
	backoff backoff
	// attempt is the attempt number of the backing_off change at which the
	// link is restored: 1 restores right after the worker noticed the
	// outage, higher numbers after that many failed attempts in a row.
	attempt uint32
}

func (c restoreCase) String() string {
	return fmt.Sprintf("fault=%s/%s/%s/restore-at-attempt=%d", c.fault, resumeHeartbeat, c.backoff, c.attempt)
}

// BenchmarkRestoreResume measures how long a worker takes to come back
// after an outage ends. Each iteration starts an outage on a healthy
// session, sends a task_progress frame through the plugin once the worker
// reported backing_off, and restores the link when the worker reports the
// backing_off of the case's attempt number. From the restore it measures
// the time until the plugin reports connected with resumed=true
// (resume-ms) and until the coordinator handles the frame sent during the
// outage (frame-ms). backoff-wait-ms is the part of the backoff delay that
// was still left at the restore, taken from the next_retry_unix_ms of the
// last backing_off change. It dominates resume-ms unless the backoff is
// short. resume-after-wait-ms is resume-ms minus that wait: the dial, the
// handshake and the resume, to within the millisecond resolution of
// next_retry_unix_ms.
//
// The plugin runs with healthy_after 0s, so every outage starts again at
// attempt 1, and otherwise with the backoff in the benchmark's name and
// its default dial_timeout of 10s. A blackhole is restored before any dial
// into it, because a dial into a blackhole waits for dial_timeout.
func BenchmarkRestoreResume(b *testing.B) {
	fast := backoff{base: 10 * time.Millisecond, multiplier: 2, cap: 80 * time.Millisecond}
	for _, c := range []restoreCase{
		{fault: "blackhole", backoff: defaultBackoff, attempt: 1},
		{fault: "cut", backoff: defaultBackoff, attempt: 1},
		{fault: "cut", backoff: defaultBackoff, attempt: 4},
		{fault: "cut", backoff: fast, attempt: 1},
	} {
		b.Run(c.String(), func(b *testing.B) {
			benchmarkRestoreResume(b, c)
		})
	}
}

func benchmarkRestoreResume(b *testing.B, c restoreCase) {
	coord := startCoordinator(b, resumeHeartbeat)
	proxy := startProxy(b, coord.server.Addr())
	worker := startPluginWorker(b, proxy.Addr(), "bench-resume", pluginSettings{
		heartbeat:    resumeHeartbeat,
		backoff:      c.backoff,
		resetBackoff: true,
	})
	worker.connectAndSync(b)
	progress := coord.watchLog("task progress")

	var resume, arrival, remaining, afterWait durations
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		worker.syncRoundTrip(b)

		// Start the outage and queue a frame in the plugin once the worker
		// noticed it, so the frame waits in the send queue and not in a
		// socket.
		switch c.fault {
		case "blackhole":
			proxy.Blackhole(true)
		case "cut":
			proxy.Refuse(true)
			proxy.Cut()
		default:
			b.Fatalf("unknown fault %q", c.fault)
		}
		lost := worker.waitState(b, "backing_off after the outage started", isBackingOff)
		marker := fmt.Sprintf("sent during outage %d", i)
		if err := worker.send(progressFrame("bench-outage", marker, 0)); err != nil {
			b.Fatal(err)
		}
		last := lost
		if last.change.GetAttempt() < c.attempt {
			last = worker.waitState(b, fmt.Sprintf("backing_off of attempt %d", c.attempt),
				func(change *pb.StateChange) bool {
					return isBackingOff(change) && change.GetAttempt() >= c.attempt
				})
		}

		// Restore, then wait for the resumed session and for the frame.
		restoredAt := time.Now()
		switch c.fault {
		case "blackhole":
			proxy.Blackhole(false)
		case "cut":
			proxy.Refuse(false)
		}
		wait := max(time.UnixMilli(last.change.GetNextRetryUnixMs()).Sub(restoredAt), 0)
		remaining.add(wait)
		back := worker.waitState(b, "connected state after the restore", isConnected)
		if !back.change.GetResumed() {
			b.Fatalf("worker started new session %s after outage %d in place of resuming the previous one",
				back.change.GetSessionId(), i)
		}
		handled := progress.next(b, "message", marker)
		resume.add(back.at.Sub(restoredAt))
		afterWait.add(max(back.at.Sub(restoredAt)-wait, 0))
		arrival.add(handled.at.Sub(restoredAt))

		// A blackholed connection may still be attached on the coordinator
		// until the resume replaced it.
		coord.waitStats(b, "one attached session", func(s coordinator.Stats) bool {
			return s.Sessions == 1 && s.DetachedSessions == 0
		})
	}
	b.StopTimer()
	resume.report(b, "resume")
	arrival.report(b, "frame")
	remaining.report(b, "backoff-wait")
	afterWait.report(b, "resume-after-wait")
}
