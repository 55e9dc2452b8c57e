package connector

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/plugin/pb"
	"github.com/dtf-io/dtf/protocol"
	wirepb "github.com/dtf-io/dtf/protocol/pb"
)

// nextStats returns the next stats event for which ok returns true.
func (h *harness) nextStats(ok func(*pb.ConnectorStats) bool) *pb.ConnectorStats {
	h.t.Helper()
	deadline := time.After(waitFor)
	for {
		select {
		case stats := <-h.stream.stats:
			if ok(stats) {
				return stats
			}
		case <-deadline:
			h.t.Fatalf("no matching stats event within %s", waitFor)
			return nil
		}
	}
}

// A stats event follows every state change, so the host receives the
// new connected flag at once rather than at the next interval.
func TestStatsFollowStateChange(t *testing.T) {
	fake := startFake(t, nil)
	// The interval is far longer than the test, so every stats event that
	// arrives comes from a state change.
	h := startConnectorWith(t, fake.url(), fastConfig, Options{StatsInterval: time.Hour})
	h.nextState(StateConnected)
	connected := h.nextStats(func(s *pb.ConnectorStats) bool { return s.GetConnected() })
	assert.Len(t, connected.GetSendQueueFrames(), priorityLevels)
}

// The periodic stats count the frames and bytes of both directions and
// carry the heartbeat round-trip samples measured since the previous one.
func TestStatsCountTraffic(t *testing.T) {
	fake := startFake(t, nil)
	h := startConnectorWith(t, fake.url(), fastConfig, Options{StatsInterval: 50 * time.Millisecond})
	h.nextState(StateConnected)

	stats := h.nextStats(func(s *pb.ConnectorStats) bool {
		return len(s.GetRttSamplesMicros()) > 0 && s.GetFramesIn() > 2
	})
	assert.True(t, stats.GetConnected())
	assert.Greater(t, stats.GetFramesOut(), uint64(0))
	assert.Greater(t, stats.GetBytesIn(), stats.GetFramesIn(), "each message has more than one byte")
	assert.Greater(t, stats.GetBytesOut(), stats.GetFramesOut())
	assert.Positive(t, stats.GetSmoothedRttMicros())
	for _, sample := range stats.GetRttSamplesMicros() {
		assert.Positive(t, sample)
	}
	assert.Equal(t, stats.GetFrameBytesOutRaw(), stats.GetFrameBytesOutEncoded(),
		"without compression the sizes before and after it are equal")

	// The counters of one connector never go backwards.
	next := h.nextStats(func(*pb.ConnectorStats) bool { return true })
	assert.GreaterOrEqual(t, next.GetFramesIn(), stats.GetFramesIn())
}

// With compression negotiated, the frame sizes before and after it show
// the compression ratio of the frames sent.
func TestStatsCompressionRatio(t *testing.T) {
	fake := startFake(t, nil)
	fake.mu.Lock()
	fake.compression = protocol.CompressionDeflate
	fake.mu.Unlock()
	h := startConnectorWith(t, fake.url(), fastConfig, Options{StatsInterval: 50 * time.Millisecond})
	h.nextState(StateConnected)

	data, err := protocol.Encode(&wirepb.Frame{Body: &wirepb.Frame_TaskProgress{TaskProgress: &wirepb.TaskProgress{
		Message: strings.Repeat("a", 16<<10),
	}}})
	require.NoError(t, err)
	_, err = h.connector.Send(context.Background(), &pb.SendRequest{Frame: data})
	require.NoError(t, err)
	select {
	case <-fake.taskFrame:
	case <-time.After(waitFor):
		t.Fatal("the coordinator did not receive the frame")
	}

	stats := h.nextStats(func(s *pb.ConnectorStats) bool { return s.GetFrameBytesOutRaw() > 16<<10 })
	assert.Less(t, stats.GetFrameBytesOutEncoded()*10, stats.GetFrameBytesOutRaw(),
		"16 KiB of one letter compress more than tenfold")
}

// stampSize matches the bytes that EncodeStamped adds in front of a body,
// so the size before compression is exact.
func TestStampSizeMatchesEncoding(t *testing.T) {
	body := []byte{0xba, 0x01, 0x02, 0x08, 0x01} // any bytes: EncodeStamped does not parse them
	for _, tc := range []struct{ seq, ack uint64 }{
		{0, 0}, {1, 0}, {0, 1}, {127, 128}, {1 << 20, 1 << 40}, {^uint64(0), ^uint64(0)},
	} {
		encoded, err := protocol.Codec{}.EncodeStamped(tc.seq, tc.ack, body, "task")
		require.NoError(t, err)
		assert.Equal(t, len(encoded), 1+stampSize(tc.seq, tc.ack)+len(body), "seq %d ack %d", tc.seq, tc.ack)
	}
}

func TestSampleBufferKeepsNewest(t *testing.T) {
	var b sampleBuffer
	for i := range maxRTTSamples + 10 {
		b.add(time.Duration(i))
	}
	samples := b.take()
	require.Len(t, samples, maxRTTSamples)
	assert.Equal(t, time.Duration(10), samples[0])
	assert.Equal(t, time.Duration(maxRTTSamples+9), samples[len(samples)-1])
	assert.Empty(t, b.take(), "take empties the buffer")
}
