package connector

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dtf-io/dtf/plugin/pb"
	"github.com/dtf-io/dtf/protocol"
	wirepb "github.com/dtf-io/dtf/protocol/pb"
)

func assignFrame(n int) *wirepb.Frame {
	return &wirepb.Frame{Body: &wirepb.Frame_Assign{Assign: &wirepb.Assign{
		Ref: &wirepb.TaskRef{TaskId: fmt.Sprintf("t-%d", n), Attempt: 1},
	}}}
}

func TestResumeExactlyOnceBothDirections(t *testing.T) {
	fake := resumableFake(t)
	proxy := startProxy(t, fake.addr())
	h := startConnector(t, "ws://"+proxy.Addr(), fastConfig)
	h.nextState(StateConnected)

	const frames = 300
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for n := range frames {
			_, err := h.connector.Send(context.Background(),
				&pb.SendRequest{Frame: progressFrame(t, "t-1", n)})
			assert.NoError(t, err)
			time.Sleep(time.Millisecond)
		}
	}()
	go func() {
		defer wg.Done()
		for n := range frames {
			assert.NoError(t, fake.sendTask(assignFrame(n)))
			time.Sleep(time.Millisecond)
		}
	}()

	// Cut the link a few times while both sides send.
	for range 4 {
		time.Sleep(60 * time.Millisecond)
		proxy.Cut()
	}
	wg.Wait()

	for n := range frames {
		select {
		case frame := <-fake.taskFrame:
			require.Equal(t, fmt.Sprintf("step %d", n), frame.GetTaskProgress().GetMessage())
		case <-time.After(waitFor):
			t.Fatalf("coordinator received %d of %d frames", n, frames)
		}
	}
	for n := range frames {
		frame := h.nextFrame()
		require.Equal(t, fmt.Sprintf("t-%d", n), frame.GetAssign().GetRef().GetTaskId())
	}
	assert.Empty(t, fake.taskFrame, "the coordinator received a frame twice")
	assert.Empty(t, h.stream.frames, "the worker host received a frame twice")
	assert.Positive(t, h.connector.Stats().Resumes)
}

func TestResumeForgottenSessionStartsNew(t *testing.T) {
	fake := resumableFake(t)
	proxy := startProxy(t, fake.addr())
	h := startConnector(t, "ws://"+proxy.Addr(), fastConfig)
	first := h.nextState(StateConnected)
	assert.False(t, first.GetResumed())
	assert.Equal(t, reasonWelcomed, first.GetReason())

	proxy.Cut()
	resuming := h.nextState(StateResuming)
	assert.Equal(t, first.GetSessionId(), resuming.GetSessionId())
	assert.Equal(t, reasonBackoffElapsed, resuming.GetReason())
	second := h.nextState(StateConnected)
	assert.True(t, second.GetResumed())
	assert.Equal(t, first.GetSessionId(), second.GetSessionId())
	assert.Equal(t, reasonResumed, second.GetReason())

	fake.forget()
	proxy.Cut()
	third := h.nextState(StateConnected)
	assert.False(t, third.GetResumed())
	assert.NotEqual(t, first.GetSessionId(), third.GetSessionId())
	assert.Equal(t, reasonNotResumed, third.GetReason())
}

func TestSendBlocksThenResourceExhausted(t *testing.T) {
	fake := resumableFake(t)
	proxy := startProxy(t, fake.addr())
	config := `{"heartbeat_interval": "50ms", "heartbeat_timeout": "400ms", "backoff_base": "10ms",
		"backoff_cap": "80ms", "send_queue_frames": 4, "replay_buffer_frames": 4, "send_timeout": "200ms"}`
	h := startConnector(t, "ws://"+proxy.Addr(), config)
	h.nextState(StateConnected)

	fake.forget()
	proxy.Refuse(true)
	proxy.Cut()
	h.nextState(StateBackingOff)
	for n := range 4 {
		_, err := h.connector.Send(context.Background(), &pb.SendRequest{Frame: progressFrame(t, "t-1", n)})
		require.NoError(t, err)
	}
	start := time.Now()
	_, err := h.connector.Send(context.Background(), &pb.SendRequest{Frame: progressFrame(t, "t-1", 4)})
	assert.Equal(t, codes.ResourceExhausted, status.Code(err), "got %v", err)
	assert.GreaterOrEqual(t, time.Since(start), 200*time.Millisecond, "Send must block before it fails")
	stats := h.connector.Stats()
	assert.Equal(t, 4, stats.Queued[PriorityProgress], "the queue must stay within send_queue_frames")

	// The coordinator forgot the session, so the worker host has to sync.
	proxy.Refuse(false)
	connected := h.nextState(StateConnected)
	assert.False(t, connected.GetResumed())
}

func TestReplayBufferFullStopsWriter(t *testing.T) {
	// The coordinator never acknowledges, so after replay_buffer_frames
	// frames the writer stops taking from the queue and Send blocks.
	fake := startFake(t, nil)
	proxy := startProxy(t, fake.addr())
	proxy.Blackhole(false)
	config := `{"heartbeat_interval": "1s", "heartbeat_timeout": "5s", "send_queue_frames": 2,
		"replay_buffer_frames": 3, "send_timeout": "200ms"}`
	h := startConnector(t, "ws://"+proxy.Addr(), config)
	h.nextState(StateConnected)
	fake.withholdAcks.Store(true)

	var lastErr error
	sent := 0
	for n := range 10 {
		_, lastErr = h.connector.Send(context.Background(), &pb.SendRequest{Frame: progressFrame(t, "t-1", n)})
		if lastErr != nil {
			break
		}
		sent++
	}
	assert.Equal(t, codes.ResourceExhausted, status.Code(lastErr), "got %v", lastErr)
	assert.LessOrEqual(t, sent, 3+2+1, "replay buffer, queue and one held frame")
	stats := h.connector.Stats()
	assert.LessOrEqual(t, stats.Unacknowledged, 3)
}

func TestAdaptiveHeartbeatGrowsWithDelay(t *testing.T) {
	fake := startFake(t, nil)
	proxy := startProxy(t, fake.addr())
	proxy.Delay(300 * time.Millisecond)
	config := `{"heartbeat_interval": "100ms", "heartbeat_timeout": "400ms", "backoff_base": "10ms",
		"backoff_cap": "80ms", "handshake_timeout": "5s"}`
	h := startConnector(t, "ws://"+proxy.Addr(), config)
	connected := h.nextState(StateConnected)

	assert.Greater(t, connected.GetHeartbeatTimeoutMs(), int64(400))
	assert.LessOrEqual(t, connected.GetHeartbeatTimeoutMs(), int64(1600))
	assert.GreaterOrEqual(t, connected.GetHeartbeatIntervalMs(), int64(100))
	assert.LessOrEqual(t, connected.GetHeartbeatIntervalMs(), int64(400))

	require.Eventually(t, func() bool { return h.connector.Stats().RTTSamples >= 4 },
		waitFor, 20*time.Millisecond, "stats: %+v", h.connector.Stats())
	stats := h.connector.Stats()
	assert.Greater(t, stats.HeartbeatTimeout, 400*time.Millisecond)
	assert.LessOrEqual(t, stats.HeartbeatTimeout, 1600*time.Millisecond)
	assert.True(t, stats.Connected, "the adapted timeout keeps the slow link up")
}

func TestCompressionNegotiated(t *testing.T) {
	fake := startFake(t, nil)
	fake.mu.Lock()
	fake.compression = protocol.CompressionDeflate
	fake.mu.Unlock()
	h := startConnector(t, fake.url(), fastConfig)
	h.nextState(StateConnected)
	assert.Equal(t, []string{protocol.CompressionDeflate}, fake.firstHello().GetCompression())

	// A large frame travels compressed both ways and arrives intact.
	big := make([]byte, 8<<10)
	for i := range big {
		big[i] = 'a'
	}
	data, err := protocol.Encode(&wirepb.Frame{Body: &wirepb.Frame_TaskProgress{TaskProgress: &wirepb.TaskProgress{
		Message: string(big),
	}}})
	require.NoError(t, err)
	_, err = h.connector.Send(context.Background(), &pb.SendRequest{Frame: data})
	require.NoError(t, err)
	select {
	case frame := <-fake.taskFrame:
		assert.Len(t, frame.GetTaskProgress().GetMessage(), len(big))
	case <-time.After(waitFor):
		t.Fatal("the coordinator did not receive the compressed frame")
	}
	require.NoError(t, fake.sendTask(&wirepb.Frame{Body: &wirepb.Frame_Assign{Assign: &wirepb.Assign{
		Ref: &wirepb.TaskRef{TaskId: "t-big"}, Payload: big,
	}}}))
	assert.Len(t, h.nextFrame().GetAssign().GetPayload(), len(big))
}

func TestCircuitBreakerOpensAndGivesUp(t *testing.T) {
	fake := startFake(t, nil)
	proxy := startProxy(t, fake.addr())
	proxy.Refuse(true)
	config := `{"heartbeat_interval": "50ms", "heartbeat_timeout": "400ms", "backoff_base": "5ms",
		"backoff_cap": "10ms", "failure_threshold": 3, "circuit_cooldown": "200ms", "max_attempts": 6}`
	h := startConnector(t, "ws://"+proxy.Addr(), config)

	open := h.nextState(StateCircuitOpen)
	assert.Contains(t, open.GetReason(), "3 failed attempts in a row")
	accepted := proxy.Stats().Accepted
	assert.Greater(t, open.GetNextRetryUnixMs(), time.Now().Add(100*time.Millisecond).UnixMilli())
	// The proxy counts every TCP connection, so an early dial shows up as
	// a new accept before the announced retry time.
	openFor := time.Until(time.UnixMilli(open.GetNextRetryUnixMs()))
	assert.Never(t, func() bool { return proxy.Stats().Accepted != accepted }, openFor, 5*time.Millisecond,
		"no dial while the circuit is open")

	// The half-open trial fails and reopens; max_attempts ends the loop.
	h.nextState(StateCircuitOpen)
	closed := h.nextState(StateClosed)
	assert.Contains(t, closed.GetReason(), "fatal: gave up after 6 attempts")
	_, err := h.connector.Send(context.Background(), &pb.SendRequest{Frame: progressFrame(t, "t-1", 1)})
	assert.Equal(t, codes.Unavailable, status.Code(err))
}

func TestCircuitBreakerNeverGivesUpByDefault(t *testing.T) {
	// max_attempts keeps its default, so the worker must keep dialing
	// through open and half-open breaker cycles until the coordinator
	// comes back.
	const cycles = 3
	fake := startFake(t, nil)
	proxy := startProxy(t, fake.addr())
	proxy.Refuse(true)
	config := `{"heartbeat_interval": "50ms", "heartbeat_timeout": "400ms", "backoff_base": "5ms",
		"backoff_cap": "10ms", "failure_threshold": 3, "circuit_cooldown": "50ms"}`
	h := startConnector(t, "ws://"+proxy.Addr(), config)
	recorder := recordStates(t, h, nil)

	// Each cycle after the first is a half-open trial that fails and opens
	// the breaker again. A closed change ends the wait early and fails.
	states := recorder.waitUntil(t, waitFor, fmt.Sprintf("%d circuit_open changes", cycles+1),
		func(states []recordedState) bool {
			return countState(states, StateCircuitOpen) > cycles || countState(states, StateClosed) > 0
		})
	require.Zero(t, countState(states, StateClosed), "the worker gave up; states:\n%s", describeStates(states))
	trials := 0
	for _, s := range states {
		if s.change.GetReason() == reasonHalfOpenTrial {
			trials++
		}
	}
	assert.GreaterOrEqual(t, trials, cycles, "half-open trials; states:\n%s", describeStates(states))
	dials := countState(states, StateConnecting) + countState(states, StateResuming)
	assert.GreaterOrEqual(t, proxy.Stats().Accepted, uint64(dials), "one TCP connection per dial")

	proxy.Refuse(false)
	recorder.waitUntil(t, waitFor, "a session once the coordinator is reachable",
		func(states []recordedState) bool {
			return countState(states, StateConnected) > 0
		})
}

func TestResumeWithImpossibleAckStartsNewSession(t *testing.T) {
	// A coordinator whose record of the session is wrong, such as a
	// damaged saved session, resumes it and acknowledges frames the worker
	// never sent. Accepting that would make the coordinator drop the
	// worker's next frames as duplicates, so the worker starts anew.
	var fake *fakeCoordinator
	fake = startFake(t, func(n int, hello *wirepb.Hello) *wirepb.Frame {
		if n != 2 {
			return nil
		}
		// The fake stamps each frame with its window's Received, so the
		// window is made to claim frames up to 1000.
		fake.mu.Lock()
		window := fake.windows[hello.GetSessionId()]
		fake.mu.Unlock()
		for seq := window.Received() + 1; seq <= 1000; seq++ {
			_, err := window.Receive(&wirepb.Frame{Seq: seq})
			assert.NoError(t, err)
		}
		return nil
	})
	fake.mu.Lock()
	fake.resumable = true
	fake.mu.Unlock()
	proxy := startProxy(t, fake.addr())
	h := startConnector(t, "ws://"+proxy.Addr(), fastConfig)
	first := h.nextState(StateConnected)
	_, err := h.connector.Send(context.Background(), &pb.SendRequest{Frame: progressFrame(t, "t-1", 1)})
	require.NoError(t, err)
	proxy.Cut()

	// The cut, then the resume that the worker refuses.
	assert.Contains(t, h.nextState(StateBackingOff).GetReason(), "connection to the coordinator lost")
	assert.Contains(t, h.nextState(StateBackingOff).GetReason(), "acknowledgement 1000")
	connected := h.nextState(StateConnected)
	assert.False(t, connected.GetResumed())
	assert.NotEqual(t, first.GetSessionId(), connected.GetSessionId())

	fake.mu.Lock()
	defer fake.mu.Unlock()
	require.Len(t, fake.hellos, 3)
	assert.Equal(t, first.GetSessionId(), fake.hellos[1].GetSessionId(), "the second hello resumes")
	assert.Empty(t, fake.hellos[2].GetSessionId(), "the third hello starts a new session")
}
