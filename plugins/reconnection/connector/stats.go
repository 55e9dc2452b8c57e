package connector

import (
	"context"
	"sync"
	"time"

	"github.com/dtf-io/dtf/plugin/pb"
)

// DefaultStatsInterval is how often the Events stream carries a stats
// event when Options leaves StatsInterval zero. A stats event also follows
// every state change.
const DefaultStatsInterval = 5 * time.Second

// maxRTTSamples bounds the round-trip samples that one stats event
// carries. With the fastest heartbeat interval that the config allows,
// 50ms, one default stats interval measures 100 samples, and the oldest
// are left out.
const maxRTTSamples = 64

// sampleBuffer keeps the newest round-trip samples until the next stats
// event takes them. It is safe for concurrent use.
type sampleBuffer struct {
	mu      sync.Mutex
	samples []time.Duration
}

func (b *sampleBuffer) add(sample time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.samples) == maxRTTSamples {
		copy(b.samples, b.samples[1:])
		b.samples = b.samples[:maxRTTSamples-1]
	}
	b.samples = append(b.samples, sample)
}

// take returns the kept samples, oldest first, and empties the buffer.
func (b *sampleBuffer) take() []time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	samples := b.samples
	b.samples = nil
	return samples
}

// statsEvent returns a stats event with the current counters and the
// round-trip samples since the previous one.
func (c *Connector) statsEvent() *pb.ConnectorEvent {
	stats := c.Stats()
	out := &pb.ConnectorStats{
		Connected:            stats.Connected,
		FramesIn:             stats.FramesIn,
		FramesOut:            stats.FramesOut,
		BytesIn:              stats.BytesIn,
		BytesOut:             stats.BytesOut,
		FrameBytesOutRaw:     stats.FrameBytesRaw,
		FrameBytesOutEncoded: stats.FrameBytesEncoded,
		SmoothedRttMicros:    stats.SmoothedRTT.Microseconds(),
		RttVarianceMicros:    stats.RTTVariance.Microseconds(),
		ReplayFrames:         uint32(stats.Unacknowledged),
		ReplayBytes:          uint64(stats.UnacknowledgedBytes),
		Resumes:              stats.Resumes,
	}
	for _, sample := range c.stats.rttSamples.take() {
		out.RttSamplesMicros = append(out.RttSamplesMicros, sample.Microseconds())
	}
	for _, queued := range stats.Queued {
		out.SendQueueFrames = append(out.SendQueueFrames, uint32(queued))
	}
	return &pb.ConnectorEvent{Event: &pb.ConnectorEvent_Stats{Stats: out}}
}

// emitStats queues a stats event for the Events stream without waiting.
// While the event queue is full, the event is dropped with its round-trip
// samples, because the next one carries the same counters.
func (c *Connector) emitStats(loop *eventLoop) {
	select {
	case loop.events <- c.statsEvent():
	default:
	}
}

// reportStats emits a stats event every interval until ctx ends.
func (c *Connector) reportStats(ctx context.Context, loop *eventLoop, interval time.Duration) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			c.emitStats(loop)
		}
	}
}
