package connector

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/dtf-io/dtf/plugin/pb"
	"github.com/dtf-io/dtf/protocol"
	wirepb "github.com/dtf-io/dtf/protocol/pb"
	"github.com/dtf-io/dtf/test/faultproxy"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func startProxy(t *testing.T, target string) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.New(target)
	require.NoError(t, err)
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func progressFrame(t *testing.T, taskID string, n int) []byte {
	t.Helper()
	data, err := protocol.Encode(&wirepb.Frame{Body: &wirepb.Frame_TaskProgress{TaskProgress: &wirepb.TaskProgress{
		Ref:     &wirepb.TaskRef{TaskId: taskID, Attempt: 1},
		Message: fmt.Sprintf("step %d", n),
	}}})
	require.NoError(t, err)
	return data
}

func TestHandledTypesCoverSessionTypes(t *testing.T) {
	handled := HandledTypes()
	for frameType := range protocol.SessionTypes {
		direction := protocol.Directions[frameType]
		if direction == protocol.ToWorker || direction == protocol.Both {
			assert.True(t, handled[frameType], "session type %q sent by the coordinator has no handler", frameType)
		}
	}
	for frameType := range handled {
		assert.True(t, protocol.SessionTypes[frameType],
			"handled type %q is not a session type, so task frames of that type would never reach the host",
			frameType)
	}
}

func TestConnectorConnects(t *testing.T) {
	fake := startFake(t, nil)
	h := startConnector(t, fake.url(), fastConfig)

	connected := h.nextState(StateConnected)
	assert.Equal(t, "s-1", connected.GetSessionId())
	assert.Equal(t, uint32(1), connected.GetAttempt())
	assert.Equal(t, uint64(0), connected.GetReconnects())
	assert.Positive(t, connected.GetRttMicros(), "the handshake gives the first RTT sample")

	hello := fake.firstHello()
	require.NotNil(t, hello)
	assert.Equal(t, "worker-1", hello.GetWorkerId())
	assert.Equal(t, "secret", hello.GetToken())
	assert.Equal(t, []string{"command"}, hello.GetTaskTypes())
	assert.Equal(t, uint32(2), hello.GetSlots())
	assert.Equal(t, map[string]string{"os": "linux"}, hello.GetLabels())
	assert.Equal(t, "host-test", hello.GetHostVersion())
	assert.Equal(t, "test", hello.GetPluginVersion())
	assert.Empty(t, hello.GetSessionId())
	assert.Equal(t, protocol.Subprotocol, fake.latest().subprotocol)

	stats := h.connector.Stats()
	assert.True(t, stats.Connected)
	assert.Equal(t, "s-1", stats.SessionID)
}

func TestConnectorHeartbeatRTT(t *testing.T) {
	fake := startFake(t, nil)
	proxy := startProxy(t, fake.addr())
	const delay = 20 * time.Millisecond
	proxy.Delay(delay)
	h := startConnector(t, "ws://"+proxy.Addr(), fastConfig)
	h.nextState(StateConnected)

	// Replies to the worker's heartbeats cross the proxy twice.
	require.Eventually(t, func() bool { return h.connector.Stats().RTTSamples >= 4 },
		waitFor, 10*time.Millisecond)
	stats := h.connector.Stats()
	assert.GreaterOrEqual(t, stats.SmoothedRTT, 2*delay)
	assert.Less(t, stats.SmoothedRTT, waitFor)
	assert.Positive(t, stats.RTTVariance)

	// The worker replies to the coordinator's heartbeat with reply and echo.
	conn := fake.latest()
	require.NoError(t, conn.send(&wirepb.Frame{Body: &wirepb.Frame_Heartbeat{Heartbeat: &wirepb.Heartbeat{
		SentUnixNano: 12345,
	}}}))
	select {
	case reply := <-conn.replies:
		assert.True(t, reply.GetReply())
		assert.Equal(t, int64(12345), reply.GetEchoUnixNano())
	case <-time.After(waitFor):
		t.Fatal("no heartbeat reply from the worker")
	}
}

func TestConnectorReconnects(t *testing.T) {
	cases := []struct {
		name     string
		breakOff func(fake *fakeCoordinator, proxy *faultproxy.Proxy)
		reason   string
	}{
		{
			name:     "close frame",
			breakOff: func(fake *fakeCoordinator, _ *faultproxy.Proxy) { _ = fake.latest().closeNormally() },
			reason:   "coordinator closed the connection",
		},
		{
			name:     "tcp cut",
			breakOff: func(_ *fakeCoordinator, proxy *faultproxy.Proxy) { proxy.Cut() },
			reason:   "connection to the coordinator lost",
		},
		{
			name:     "tcp reset",
			breakOff: func(_ *fakeCoordinator, proxy *faultproxy.Proxy) { proxy.Reset() },
			reason:   "connection to the coordinator lost",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fake := startFake(t, nil)
			proxy := startProxy(t, fake.addr())
			h := startConnector(t, "ws://"+proxy.Addr(), fastConfig)
			first := h.nextState(StateConnected)

			tc.breakOff(fake, proxy)
			backingOff := h.nextState(StateBackingOff)
			assert.Contains(t, backingOff.GetReason(), tc.reason)
			assert.Equal(t, uint32(1), backingOff.GetAttempt())
			assert.GreaterOrEqual(t, backingOff.GetNextRetryUnixMs(), time.Now().Add(-time.Second).UnixMilli())

			second := h.nextState(StateConnected)
			assert.Equal(t, uint64(1), second.GetReconnects())
			assert.NotEqual(t, first.GetSessionId(), second.GetSessionId())
		})
	}
}

func TestConnectorFlappingLinkGrowsAttempts(t *testing.T) {
	// Every connection is closed right after its welcome, long before
	// healthy_after, so the failure count must keep growing.
	fake := startFake(t, nil)
	h := startConnector(t, fake.url(), fastConfig)
	for want := uint32(1); want <= 3; want++ {
		h.nextState(StateConnected)
		require.NoError(t, fake.latest().closeNormally())
		backingOff := h.nextState(StateBackingOff)
		assert.Equal(t, want, backingOff.GetAttempt())
	}
}

func TestConnectorHealthyConnectionResetsBackoff(t *testing.T) {
	fake := startFake(t, nil)
	config := `{"heartbeat_interval": "50ms", "heartbeat_timeout": "400ms", "backoff_base": "10ms",
		"backoff_cap": "80ms", "healthy_after": "0s"}`
	h := startConnector(t, fake.url(), config)
	for range 3 {
		h.nextState(StateConnected)
		require.NoError(t, fake.latest().closeNormally())
		backingOff := h.nextState(StateBackingOff)
		assert.Equal(t, uint32(1), backingOff.GetAttempt())
	}
}

func TestConnectorUnauthenticatedIsFatal(t *testing.T) {
	fake := startFake(t, func(int, *wirepb.Hello) *wirepb.Frame {
		return reject(wirepb.Reject_CODE_UNAUTHENTICATED, "invalid token", 0)
	})
	config := `{"heartbeat_interval": "50ms", "heartbeat_timeout": "400ms", "backoff_base": "10ms",
		"backoff_cap": "40ms", "fatal_after": 3}`
	h := startConnector(t, fake.url(), config)

	for range 2 {
		backingOff := h.nextState(StateBackingOff)
		assert.Contains(t, backingOff.GetReason(), "CODE_UNAUTHENTICATED")
	}
	closed := h.nextState(StateClosed)
	assert.Contains(t, closed.GetReason(), "fatal: ")
	assert.Contains(t, closed.GetReason(), `"worker-1"`)
	assert.Contains(t, closed.GetReason(), "token")
	assert.NoError(t, h.waitEventsReturn())
	assert.Equal(t, 3, fake.helloCount())
}

func TestConnectorDifferentRejectsAreNotFatal(t *testing.T) {
	// Alternating messages are not identical failures, so the connector
	// keeps trying until the coordinator welcomes it.
	fake := startFake(t, func(n int, _ *wirepb.Hello) *wirepb.Frame {
		if n > 4 {
			return nil
		}
		return reject(wirepb.Reject_CODE_UNAUTHENTICATED, fmt.Sprintf("invalid token %d", n%2), 0)
	})
	config := `{"heartbeat_interval": "50ms", "heartbeat_timeout": "400ms", "backoff_base": "10ms",
		"backoff_cap": "40ms", "fatal_after": 2}`
	h := startConnector(t, fake.url(), config)
	connected := h.nextState(StateConnected)
	assert.Equal(t, "s-5", connected.GetSessionId())
}

func TestConnectorHonoursRetryAfter(t *testing.T) {
	const retryAfter = 300 * time.Millisecond
	fake := startFake(t, func(n int, _ *wirepb.Hello) *wirepb.Frame {
		if n == 1 {
			return reject(wirepb.Reject_CODE_OVERLOADED, "too many sessions", retryAfter)
		}
		return nil
	})
	h := startConnector(t, fake.url(), fastConfig)

	backingOff := h.nextState(StateBackingOff)
	assert.Contains(t, backingOff.GetReason(), "CODE_OVERLOADED")
	h.nextState(StateConnected)

	times := fake.helloTimes()
	require.Len(t, times, 2)
	assert.GreaterOrEqual(t, times[1].Sub(times[0]), retryAfter,
		"the second hello came before retry_after_ms, although backoff_cap is only 80ms")
}

func TestConnectorDetectsBlackhole(t *testing.T) {
	fake := startFake(t, nil)
	proxy := startProxy(t, fake.addr())
	h := startConnector(t, "ws://"+proxy.Addr(), fastConfig)
	h.nextState(StateConnected)

	const heartbeatTimeout = 400 * time.Millisecond
	start := time.Now()
	proxy.Blackhole(true)
	backingOff := h.nextState(StateBackingOff)
	elapsed := time.Since(start)
	assert.Contains(t, backingOff.GetReason(), "heartbeat_timeout")
	// The deadline runs from the last frame received before the blackhole;
	// the slack covers scheduling under the race detector.
	assert.Less(t, elapsed, heartbeatTimeout+time.Second)

	proxy.Blackhole(false)
	connected := h.nextState(StateConnected)
	assert.Equal(t, uint64(1), connected.GetReconnects())
}

func TestConnectorHandshakeFailures(t *testing.T) {
	t.Run("no upgrade response", func(t *testing.T) {
		fake := startFake(t, nil)
		proxy := startProxy(t, fake.addr())
		proxy.Blackhole(true)
		config := `{"heartbeat_interval": "50ms", "heartbeat_timeout": "400ms", "backoff_base": "10ms",
			"backoff_cap": "40ms", "dial_timeout": "300ms", "handshake_timeout": "300ms"}`
		h := startConnector(t, "ws://"+proxy.Addr(), config)
		backingOff := h.nextState(StateBackingOff)
		assert.Contains(t, backingOff.GetReason(), "dial ")
	})
	t.Run("no welcome", func(t *testing.T) {
		release := make(chan struct{})
		fake := startFake(t, func(int, *wirepb.Hello) *wirepb.Frame {
			<-release
			return nil
		})
		t.Cleanup(func() { close(release) })
		config := `{"heartbeat_interval": "50ms", "heartbeat_timeout": "400ms", "backoff_base": "10ms",
			"backoff_cap": "40ms", "handshake_timeout": "300ms"}`
		h := startConnector(t, fake.url(), config)
		backingOff := h.nextState(StateBackingOff)
		assert.Contains(t, backingOff.GetReason(), "handshake_timeout")
	})
	t.Run("closed after upgrade", func(t *testing.T) {
		fake := startFake(t, nil)
		proxy := startProxy(t, fake.addr())
		proxy.CloseAfterUpgrade(true)
		h := startConnector(t, "ws://"+proxy.Addr(), fastConfig)
		backingOff := h.nextState(StateBackingOff)
		assert.NotEmpty(t, backingOff.GetReason())

		proxy.CloseAfterUpgrade(false)
		h.nextState(StateConnected)
	})
	t.Run("coordinator down", func(t *testing.T) {
		fake := startFake(t, nil)
		proxy := startProxy(t, fake.addr())
		proxy.Refuse(true)
		h := startConnector(t, "ws://"+proxy.Addr(), fastConfig)
		backingOff := h.nextState(StateBackingOff)
		assert.Contains(t, backingOff.GetReason(), "dial ")

		proxy.Refuse(false)
		h.nextState(StateConnected)
	})
}

func TestConnectorSendWhileDisconnected(t *testing.T) {
	fake := resumableFake(t)
	proxy := startProxy(t, fake.addr())
	proxy.Refuse(true)
	h := startConnector(t, "ws://"+proxy.Addr(), fastConfig)
	h.nextState(StateBackingOff)

	// Before the first session there is nothing to queue for.
	_, err := h.connector.Send(context.Background(), &pb.SendRequest{Frame: progressFrame(t, "t-1", 1)})
	assert.Equal(t, codes.Unavailable, status.Code(err), "got %v", err)

	proxy.Refuse(false)
	h.nextState(StateConnected)
	_, err = h.connector.Send(context.Background(), &pb.SendRequest{Frame: progressFrame(t, "t-1", 1)})
	require.NoError(t, err)
	select {
	case frame := <-fake.taskFrame:
		assert.Equal(t, "step 1", frame.GetTaskProgress().GetMessage())
	case <-time.After(waitFor):
		t.Fatal("the coordinator did not receive the frame")
	}

	// After a drop the frame is queued and written once the session
	// resumes.
	proxy.Refuse(true)
	proxy.Cut()
	h.nextState(StateBackingOff)
	_, err = h.connector.Send(context.Background(), &pb.SendRequest{Frame: progressFrame(t, "t-1", 2)})
	require.NoError(t, err)
	proxy.Refuse(false)
	resumed := h.nextState(StateConnected)
	assert.True(t, resumed.GetResumed())
	select {
	case frame := <-fake.taskFrame:
		assert.Equal(t, "step 2", frame.GetTaskProgress().GetMessage())
	case <-time.After(waitFor):
		t.Fatal("the coordinator did not receive the frame queued while disconnected")
	}
}

// invalidFrame is a frame that Send and SendBatch reject as invalid.
type invalidFrame struct {
	name  string
	frame []byte
}

// invalidFrames returns one frame of each kind that the host may not send.
func invalidFrames(t *testing.T) []invalidFrame {
	t.Helper()
	heartbeat, err := protocol.Encode(&wirepb.Frame{Body: &wirepb.Frame_Heartbeat{Heartbeat: &wirepb.Heartbeat{}}})
	require.NoError(t, err)
	return []invalidFrame{
		{"session frame", heartbeat},
		{"no body", nil},
		{"garbage", []byte{0xff, 0xff, 0xff}},
		{"too large", make([]byte, protocol.DefaultMaxFrameBytes+1)},
	}
}

func TestConnectorSendRejectsInvalidFrames(t *testing.T) {
	fake := startFake(t, nil)
	h := startConnector(t, fake.url(), fastConfig)
	h.nextState(StateConnected)

	for _, tc := range invalidFrames(t) {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.connector.Send(context.Background(), &pb.SendRequest{Frame: tc.frame})
			assert.Equal(t, codes.InvalidArgument, status.Code(err), "got %v", err)
		})
	}
}

func TestConnectorConcurrentSend(t *testing.T) {
	fake := startFake(t, nil)
	h := startConnector(t, fake.url(), fastConfig)
	h.nextState(StateConnected)

	const senders, perSender = 8, 50
	var wg sync.WaitGroup
	errs := make(chan error, senders*perSender)
	for i := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range perSender {
				_, err := h.connector.Send(context.Background(),
					&pb.SendRequest{Frame: progressFrame(t, fmt.Sprintf("t-%d", i), n)})
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	// Frames of one sender arrive in the order it sent them.
	next := make(map[string]int)
	for received := range senders * perSender {
		select {
		case frame := <-fake.taskFrame:
			progress := frame.GetTaskProgress()
			taskID := progress.GetRef().GetTaskId()
			assert.Equal(t, fmt.Sprintf("step %d", next[taskID]), progress.GetMessage())
			next[taskID]++
		case <-time.After(waitFor):
			t.Fatalf("received %d of %d frames", received, senders*perSender)
		}
	}
}

func TestConnectorForwardsTaskFrames(t *testing.T) {
	fake := startFake(t, nil)
	h := startConnector(t, fake.url(), fastConfig)
	h.nextState(StateConnected)
	conn := fake.latest()

	// A frame of a type this build does not know is counted and skipped.
	// The leading 0 is the encoding byte of a plain frame.
	unknown := protowire.AppendTag([]byte{0}, 99, protowire.BytesType)
	unknown = protowire.AppendBytes(unknown, []byte("future"))
	require.NoError(t, conn.sendRaw(unknown))
	require.NoError(t, conn.sendRaw(unknown))
	require.NoError(t, conn.sendRaw([]byte{0xff, 0xff}))

	require.NoError(t, conn.send(&wirepb.Frame{Body: &wirepb.Frame_Assign{Assign: &wirepb.Assign{
		Ref:     &wirepb.TaskRef{TaskId: "t-7", Attempt: 2},
		Type:    "command",
		Payload: []byte(`{"argv":["true"]}`),
	}}}))
	frame := h.nextFrame()
	assert.Equal(t, "t-7", frame.GetAssign().GetRef().GetTaskId())
	assert.Equal(t, uint32(2), frame.GetAssign().GetRef().GetAttempt())

	stats := h.connector.Stats()
	assert.Equal(t, uint64(2), stats.UnknownFrames)
	assert.Equal(t, uint64(1), stats.MalformedFrames)
	assert.True(t, stats.Connected, "unknown and malformed frames must not end the session")
}

func TestConnectorStopClosesNormally(t *testing.T) {
	fake := startFake(t, nil)
	h := startConnector(t, fake.url(), fastConfig)
	connecting := h.nextChange()
	connected := h.nextChange()
	conn := fake.latest()

	_, err := h.connector.Stop(context.Background(), &pb.Empty{})
	require.NoError(t, err)
	draining := h.nextChange()
	closed := h.nextChange()
	assert.NoError(t, h.waitEventsReturn())

	// The whole history, with the reason of each change.
	got := [][2]string{}
	for _, change := range []*pb.StateChange{connecting, connected, draining, closed} {
		got = append(got, [2]string{change.GetState(), change.GetReason()})
	}
	assert.Equal(t, [][2]string{
		{StateConnecting, reasonFirstDial},
		{StateConnected, reasonWelcomed},
		{StateDraining, "stopping"},
		{StateClosed, "stopped"},
	}, got)
	select {
	case change := <-h.stream.states:
		t.Errorf("state change after closed: %s", change.GetState())
	default:
	}

	select {
	case code := <-conn.closeCode:
		assert.Equal(t, websocket.CloseNormalClosure, code)
		assert.Equal(t, "worker stopping", <-conn.closeReason)
	case <-time.After(waitFor):
		t.Fatal("the coordinator received no close frame")
	}
}

func TestConnectorStreamEndStopsLoop(t *testing.T) {
	fake := startFake(t, nil)
	h := startConnector(t, fake.url(), fastConfig)
	h.nextState(StateConnected)
	conn := fake.latest()

	h.cancel()
	assert.NoError(t, h.waitEventsReturn())
	assert.False(t, h.connector.Stats().Connected)
	select {
	case reason := <-conn.closeReason:
		assert.Equal(t, "worker host unreachable from its connector plugin", reason,
			"the end of the host's stream is not a stop that the host asked for")
	case <-time.After(waitFor):
		t.Fatal("the coordinator received no close frame")
	}
}

func TestConnectorEventsPreconditions(t *testing.T) {
	c := New(Options{})
	stream := &eventStream{ctx: context.Background()}
	err := c.Events(&pb.Empty{}, stream)
	assert.Equal(t, codes.FailedPrecondition, status.Code(err), "Events before Configure: %v", err)

	fake := startFake(t, nil)
	h := startConnector(t, fake.url(), fastConfig)
	h.nextState(StateConnected)
	err = h.connector.Events(&pb.Empty{}, stream)
	assert.Equal(t, codes.FailedPrecondition, status.Code(err), "second Events: %v", err)
	_, err = h.connector.Configure(context.Background(), connectorConfig(fake.url(), fastConfig))
	assert.Equal(t, codes.FailedPrecondition, status.Code(err), "Configure while running: %v", err)
}

func TestConnectorInfo(t *testing.T) {
	info, err := New(Options{Version: "1.2.3"}).Info(context.Background(), &pb.Empty{})
	require.NoError(t, err)
	assert.Equal(t, Name, info.GetName())
	assert.Equal(t, "1.2.3", info.GetVersion())
}
