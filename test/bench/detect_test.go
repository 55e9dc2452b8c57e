package bench

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/dtf-io/dtf/coordinator"
	"github.com/dtf-io/dtf/coordinator/config"
	"github.com/dtf-io/dtf/plugin/pb"
)

// detectionBackoff keeps the reconnection after each blackhole short,
// because only the detection is measured. The dial timeout ends a dial
// into the blackhole well before the next iteration would need it.
var detectionBackoff = backoff{base: 50 * time.Millisecond, multiplier: 2, cap: 500 * time.Millisecond}

// BenchmarkBlackholeDetection measures how long each side takes to notice
// a connection whose packets silently vanish. Each iteration turns on the
// proxy's blackhole on a healthy session, then waits until the plugin
// reports backing_off because of its heartbeat timeout (worker-detect-ms)
// and until coordinator.Stats lists the session as detached because of the
// coordinator's own heartbeat timeout (coordinator-detect-ms). Both clocks
// start at the Blackhole call, and the -max-ms metrics are the largest
// figure of the run. Both sides use the interval and timeout in the
// benchmark's name.
//
// The phase sets when the blackhole starts. With phase=after-frame it
// starts right after a state sync round trip, so both sides have just
// received a frame and wait a whole timeout: the worst case, which shows
// what detection adds to the configured timeout. With phase=random it
// starts at a uniformly random point of one heartbeat interval after that
// round trip, as an outage would, so each side's figure lies between
// timeout minus interval and timeout, plus the detection's own cost.
func BenchmarkBlackholeDetection(b *testing.B) {
	for _, hb := range []heartbeat{
		{interval: 500 * time.Millisecond, timeout: 1500 * time.Millisecond},
		{},
	} {
		for _, random := range []bool{false, true} {
			phase := "phase=after-frame"
			if random {
				phase = "phase=random"
			}
			b.Run(hb.String()+"/"+phase, func(b *testing.B) {
				benchmarkBlackholeDetection(b, hb, random)
			})
		}
	}
}

func benchmarkBlackholeDetection(b *testing.B, hb heartbeat, randomPhase bool) {
	coord := startCoordinator(b, hb)
	proxy := startProxy(b, coord.server.Addr())
	worker := startPluginWorker(b, proxy.Addr(), "bench-detect", pluginSettings{
		heartbeat:    hb,
		backoff:      detectionBackoff,
		dialTimeout:  time.Second,
		resetBackoff: true,
	})
	worker.connectAndSync(b)
	disconnects := coord.watchLog("worker disconnected; session kept for resume")

	interval := hb.interval
	if interval == 0 {
		interval = config.DefaultHeartbeatInterval
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var workerDetect, coordinatorDetect durations
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		worker.syncRoundTrip(b)
		if randomPhase {
			// The pause sets the phase of the outage against the
			// heartbeats. It waits for no condition.
			time.Sleep(time.Duration(rng.Int64N(int64(interval))))
		}
		start := time.Now()
		proxy.Blackhole(true)

		lost := worker.waitState(b, "backing_off after the blackhole", isBackingOff)
		if reason := lost.change.GetReason(); !strings.Contains(reason, "heartbeat_timeout") {
			b.Fatalf("worker backed off for another cause than its heartbeat timeout: %s", reason)
		}
		detachedAt := coord.waitStats(b, "the session detached", func(s coordinator.Stats) bool {
			return s.DetachedSessions == 1
		})
		// A FIN from the worker would let the coordinator detach without
		// its own timeout. The proxy holds the FIN behind the heartbeats
		// the worker wrote into the blackhole, and this check confirms it.
		event := disconnects.next(b, "worker_id", worker.id)
		if reason := event.args["reason"]; !strings.Contains(reason, "heartbeat timeout") {
			b.Fatalf("coordinator detached the session for another cause than its heartbeat timeout: %s",
				reason)
		}
		workerDetect.add(lost.at.Sub(start))
		coordinatorDetect.add(detachedAt.Sub(start))

		// Restore the link and wait for the resumed session, outside the
		// figures.
		proxy.Blackhole(false)
		worker.waitState(b, "resumed session", func(change *pb.StateChange) bool {
			return isConnected(change) && change.GetResumed()
		})
		coord.waitStats(b, "the session attached again", func(s coordinator.Stats) bool {
			return s.Sessions == 1 && s.DetachedSessions == 0
		})
	}
	b.StopTimer()
	workerDetect.report(b, "worker-detect")
	coordinatorDetect.report(b, "coordinator-detect")
}
