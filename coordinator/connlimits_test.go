package coordinator

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/protocol"
	"github.com/dtf-io/dtf/protocol/pb"
)

func TestAddressLimiterBucket(t *testing.T) {
	var l addressLimiter
	now := time.Now()
	for i := range 3 {
		ok, _ := l.allow("203.0.113.7:4000", 2, 3, now)
		require.True(t, ok, "connection %d is within the burst", i+1)
	}
	ok, wait := l.allow("203.0.113.7:4001", 2, 3, now)
	assert.False(t, ok, "the fourth connection at once is over the burst")
	assert.Equal(t, 500*time.Millisecond, wait, "one token takes 1/rate")

	ok, _ = l.allow("203.0.113.8:4000", 2, 3, now)
	assert.True(t, ok, "another address has its own bucket")

	ok, _ = l.allow("203.0.113.7:4002", 2, 3, now.Add(500*time.Millisecond))
	assert.True(t, ok, "a token is back after 1/rate")
}

func TestAddressLimiterKeys(t *testing.T) {
	var l addressLimiter
	now := time.Now()
	ok, _ := l.allow("[2001:db8:1:2::1]:4000", 1, 1, now)
	require.True(t, ok)
	ok, _ = l.allow("[2001:db8:1:2::ffff]:4000", 1, 1, now)
	assert.False(t, ok, "addresses of one IPv6 /64 share a bucket")
	ok, _ = l.allow("[2001:db8:1:3::1]:4000", 1, 1, now)
	assert.True(t, ok, "another /64 has its own bucket")

	ok, _ = l.allow("[::ffff:203.0.113.9]:4000", 1, 1, now)
	require.True(t, ok)
	ok, _ = l.allow("203.0.113.9:4001", 1, 1, now)
	assert.False(t, ok, "an IPv4-mapped IPv6 address is the IPv4 address")

	for range 10 {
		ok, _ = l.allow("127.0.0.1:4000", 1, 1, now)
		require.True(t, ok, "loopback is not limited")
		ok, _ = l.allow("[::1]:4000", 1, 1, now)
		require.True(t, ok, "loopback is not limited")
	}
	ok, _ = l.allow("not-an-address", 1, 1, now)
	assert.True(t, ok)
	assert.Equal(t, 3, l.tracked(), "loopback and unparsable remotes get no bucket")
}

func TestAddressLimiterBounded(t *testing.T) {
	var l addressLimiter
	now := time.Now()
	remote := func(i int) string {
		return fmt.Sprintf("10.%d.%d.%d:1", i>>16&0xff, i>>8&0xff, i&0xff)
	}
	for i := range maxTrackedAddresses {
		ok, _ := l.allow(remote(i), 1, 1, now)
		require.True(t, ok)
	}
	require.Equal(t, maxTrackedAddresses, l.tracked())

	// Every bucket is empty, so none can be dropped: a new address is
	// admitted without a bucket.
	ok, _ := l.allow(remote(maxTrackedAddresses), 1, 1, now)
	assert.True(t, ok)
	assert.Equal(t, maxTrackedAddresses, l.tracked())

	// Once the buckets have refilled they are dropped to make room.
	ok, _ = l.allow(remote(maxTrackedAddresses+1), 1, 1, now.Add(2*time.Second))
	assert.True(t, ok)
	assert.Equal(t, 1, l.tracked())
}

func TestConnectionRateOverLimitGets429(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.Workers.ConnectionsPerSecondPerAddress = 1
	cfg.Workers.ConnectionBurstPerAddress = 2
	ts := startServer(t, cfg)

	// The handler runs on requests with a documentation address as their
	// remote, because every connection on 127.0.0.1 is exempt. The
	// recorder cannot be hijacked, so an admitted request fails its
	// upgrade with 400 instead of becoming a WebSocket.
	upgrade := func(remote string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, protocol.ConnectPath, nil)
		req.RemoteAddr = remote
		req.Header.Set("Sec-WebSocket-Protocol", protocol.Subprotocol)
		rec := httptest.NewRecorder()
		ts.handleConnect(rec, req)
		return rec
	}
	for i := range 2 {
		rec := upgrade("198.51.100.4:5000")
		require.NotEqual(t, http.StatusTooManyRequests, rec.Code, "request %d is within the burst", i+1)
	}
	rec := upgrade("198.51.100.4:5001")
	require.Equal(t, http.StatusTooManyRequests, rec.Code)
	assert.Equal(t, "1", rec.Header().Get("Retry-After"))
	assert.Contains(t, rec.Body.String(), "workers.connections_per_second_per_address 1")
	assert.Equal(t, int64(0), ts.pendingHandshakes.Load(), "a rejected upgrade holds no handshake")

	assert.NotEqual(t, http.StatusTooManyRequests, upgrade("198.51.100.5:5000").Code,
		"another address is not affected")
	_, first := connectWorker(t, ts, &pb.Hello{WorkerId: "w1", Slots: 1})
	assert.NotNil(t, first.GetWelcome(), "a worker on loopback still connects: %v", first)
}

func TestFrameOverLimitClosesConnection(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.Workers.MaxFrameBytes = 4 << 10
	ts := startServer(t, cfg)

	conn := dialRaw(t, ts)
	defer conn.Close()
	hello, err := protocol.Encode(&pb.Frame{Body: &pb.Frame_Hello{Hello: &pb.Hello{WorkerId: "big", Slots: 1}}})
	require.NoError(t, err)
	require.NoError(t, conn.WriteMessage(websocket.BinaryMessage, hello))
	data, err := readRaw(t, conn)
	require.NoError(t, err)
	welcome, err := protocol.Decode(data, 0)
	require.NoError(t, err)
	require.NotNil(t, welcome.GetWelcome(), "first frame: %v", welcome)

	outcome := outcomeFrame(&pb.TaskRef{TaskId: "t-1", Attempt: 1}, pb.Status_STATUS_SUCCEEDED)
	outcome.GetTaskOutcome().Output = []byte(strings.Repeat("x", 2*cfg.Workers.MaxFrameBytes))
	big, err := protocol.Encode(outcome)
	require.NoError(t, err)
	require.Greater(t, len(big), cfg.Workers.MaxFrameBytes+protocol.TagSize)
	// The coordinator stops reading at the frame's header and closes the
	// connection with the rest of the frame unread. The kernel may then
	// send a reset that overtakes the close message, and the write itself
	// may fail with it.
	writeErr := conn.WriteMessage(websocket.BinaryMessage, big)

	var readErr error
	for range 100 {
		if _, readErr = readRaw(t, conn); readErr != nil {
			break
		}
	}
	require.Error(t, readErr, "the coordinator closes the connection")
	var closeErr *websocket.CloseError
	if errors.As(readErr, &closeErr) {
		assert.Equal(t, websocket.CloseMessageTooBig, closeErr.Code)
	} else {
		t.Logf("connection reset before the close message arrived: write %v, read %v", writeErr, readErr)
	}

	other, _ := connectSynced(t, ts, "other", []string{"command"})
	task := submit(t, ts, commandSpec()).Tasks[0]
	assert.Equal(t, task.ID, other.expect("assign").GetAssign().GetRef().GetTaskId(),
		"the coordinator keeps serving other workers")
}

func TestCompressedFrameOverDecodedLimitRejected(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.Workers.MaxFrameBytes = 16 << 10
	ts := startServer(t, cfg)

	w := newSeqWorker(t, ts, "w1")
	w.compression = []string{protocol.CompressionDeflate}
	require.Equal(t, protocol.CompressionDeflate, w.connect().GetWelcome().GetCompression())
	w.sync()

	// Output of 1 MiB compresses to a few KiB, within the frame limit,
	// but expands to 64 times the limit.
	outcome := outcomeFrame(&pb.TaskRef{TaskId: "t-1", Attempt: 1}, pb.Status_STATUS_SUCCEEDED)
	outcome.GetTaskOutcome().Output = make([]byte, 1<<20)
	outcome.Seq = 2
	encoded, err := protocol.Codec{Compression: protocol.CompressionDeflate}.Encode(outcome)
	require.NoError(t, err)
	require.Less(t, len(encoded), cfg.Workers.MaxFrameBytes)
	w.mu.Lock()
	require.NoError(t, w.conn.WriteMessage(websocket.BinaryMessage, encoded))
	done := w.done
	w.mu.Unlock()

	reject := w.expect("reject").GetReject()
	assert.Equal(t, pb.Reject_CODE_PROTOCOL_ERROR, reject.GetCode())
	assert.Contains(t, reject.GetMessage(), "malformed frame")
	select {
	case <-done:
	case <-time.After(waitFor):
		t.Fatal("the coordinator kept the connection open")
	}

	other, _ := connectSynced(t, ts, "other", []string{"command"})
	task := submit(t, ts, commandSpec()).Tasks[0]
	assert.Equal(t, task.ID, other.expect("assign").GetAssign().GetRef().GetTaskId(),
		"the coordinator keeps serving other workers")
}

// readWebSocketUntilClosed reads from conn until the coordinator closes it
// or limit passes, and returns the last Reject received and the read error.
func readWebSocketUntilClosed(conn *websocket.Conn, limit time.Duration) (*pb.Reject, error) {
	_ = conn.SetReadDeadline(time.Now().Add(limit))
	var reject *pb.Reject
	for range 1000 {
		_, data, err := conn.ReadMessage()
		if err != nil {
			return reject, err
		}
		if frame, err := protocol.Decode(data, 0); err == nil && frame.GetReject() != nil {
			reject = frame.GetReject()
		}
	}
	return reject, errors.New("connection not closed after 1000 messages")
}

func TestHandshakeNeverFinishing(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.Workers.HandshakeTimeout = 300 * time.Millisecond
	ts := startServer(t, cfg)

	t.Run("no hello", func(t *testing.T) {
		start := time.Now()
		conn := dialRaw(t, ts)
		defer conn.Close()
		require.Eventually(t, func() bool { return ts.Stats().PendingHandshakes == 1 }, waitFor, 5*time.Millisecond)

		reject, err := readWebSocketUntilClosed(conn, waitFor)
		elapsed := time.Since(start)
		require.False(t, isTimeout(err), "connection still open after %s", waitFor)
		require.NotNil(t, reject, "the coordinator sends a reject before closing")
		assert.Equal(t, pb.Reject_CODE_PROTOCOL_ERROR, reject.GetCode())
		assert.Contains(t, reject.GetMessage(), "no hello within workers.handshake_timeout 300ms")
		assert.GreaterOrEqual(t, elapsed, cfg.Workers.HandshakeTimeout)
		require.Eventually(t, func() bool { return ts.Stats().PendingHandshakes == 0 }, waitFor, 5*time.Millisecond)
	})

	t.Run("scram without proof", func(t *testing.T) {
		secret, _ := addCredential(t, ts, "slow")
		handshake, err := protocol.NewClientHandshake("slow", secret)
		require.NoError(t, err)
		clientFirst, err := handshake.ClientFirst()
		require.NoError(t, err)
		conn := dialRaw(t, ts)
		defer conn.Close()
		hello, err := protocol.Encode(&pb.Frame{Body: &pb.Frame_Hello{Hello: &pb.Hello{
			WorkerId: "slow", Slots: 1, CredentialId: handshake.CredentialID(), ScramClientFirst: clientFirst,
		}}})
		require.NoError(t, err)
		start := time.Now()
		require.NoError(t, conn.WriteMessage(websocket.BinaryMessage, hello))
		data, err := readRaw(t, conn)
		require.NoError(t, err)
		challenge, err := protocol.Decode(data, 0)
		require.NoError(t, err)
		require.NotNil(t, challenge.GetChallenge(), "first frame: %v", challenge)
		assert.Equal(t, 1, ts.Stats().PendingHandshakes, "the SCRAM exchange counts as pending")

		// The worker never sends its proof.
		reject, err := readWebSocketUntilClosed(conn, waitFor)
		elapsed := time.Since(start)
		require.False(t, isTimeout(err), "connection still open after %s", waitFor)
		require.NotNil(t, reject, "the coordinator sends a reject before closing")
		assert.Equal(t, pb.Reject_CODE_PROTOCOL_ERROR, reject.GetCode())
		assert.Contains(t, reject.GetMessage(), "no proof within workers.handshake_timeout 300ms")
		assert.Less(t, elapsed, cfg.Workers.HandshakeTimeout+closeGrace+time.Second,
			"the whole handshake is bounded by handshake_timeout")
		require.Eventually(t, func() bool { return ts.Stats().PendingHandshakes == 0 }, waitFor, 5*time.Millisecond)
		assert.Equal(t, 0, ts.Stats().Sessions)
	})
}

func TestReplayBytesBoundAssignments(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.Workers.MaxFrameBytes = 16 << 10
	cfg.Workers.ReplayBytes = 64 << 10
	ts := startServer(t, cfg)

	w := newSeqWorker(t, ts, "w1")
	w.connect()
	w.sync()
	// The worker acknowledges nothing past the state sync result, so every
	// assign stays in the session's replay buffer.
	w.ackCap.Store(int64(w.window.Load().Received()))

	payload := fmt.Sprintf(`{"argv":["echo",%q]}`, strings.Repeat("p", 8<<10))
	specs := make([]api.TaskSpec, 20)
	for i := range specs {
		specs[i] = api.TaskSpec{Type: "command", Payload: []byte(payload)}
	}
	submit(t, ts, specs...)

	ss := ts.sessionFor("w1")
	require.NotNil(t, ss)
	require.Eventually(t, func() bool {
		_, bytes := ss.window.Pending()
		return bytes >= cfg.Workers.ReplayBytes*3/4
	}, waitFor, 10*time.Millisecond, "assignments fill the replay buffer to three quarters")
	// Ten scheduler intervals pass without another assign.
	full, _ := ss.window.Pending()
	assert.Never(t, func() bool {
		ts.kickScheduler()
		frames, _ := ss.window.Pending()
		return frames > full
	}, 10*cfg.ScheduleInterval, cfg.ScheduleInterval, "no assign past three quarters of replay_bytes")
	frames, bytes := ss.window.Pending()
	assert.Less(t, bytes, cfg.Workers.ReplayBytes*3/4+cfg.Workers.MaxFrameBytes,
		"at most one assign past three quarters of replay_bytes")
	assert.Less(t, frames, 20, "the rest of the tasks wait")
	assert.False(t, ss.isEnded(), "the session stays open")

	// Acknowledging frees the buffer and the remaining tasks follow.
	w.ackCap.Store(-1)
	w.send(&pb.Frame{Body: &pb.Frame_Heartbeat{Heartbeat: &pb.Heartbeat{SentUnixNano: time.Now().UnixNano()}}})
	got := 0
	for range 40 {
		if w.expect("assign") != nil {
			got++
		}
		if got == 20 {
			break
		}
	}
	assert.Equal(t, 20, got)
}

// TestThousandUnauthenticatedConnections opens a thousand connections that
// never authenticate: silent WebSockets, WebSockets that send garbage and
// TCP connections that send nothing. Meanwhile a worker with a SCRAM
// credential connects, keeps its session and gets a task.
// The rejections that the log limiter holds back in a burst are logged
// with their count once the interval has passed, without waiting for a
// later rejection.
func TestConnectionRateRejectsLoggedAfterBurst(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.Workers.ConnectionsPerSecondPerAddress = 1
	cfg.Workers.ConnectionBurstPerAddress = 1
	logs := &logBuffer{next: testLogWriter{t}}
	ts := startServerLogging(t, cfg, logs)

	const burst = 50
	rejected := 0
	for range burst + 1 {
		req := httptest.NewRequest(http.MethodGet, protocol.ConnectPath, nil)
		req.RemoteAddr = "198.51.100.7:5000"
		req.Header.Set("Sec-WebSocket-Protocol", protocol.Subprotocol)
		rec := httptest.NewRecorder()
		ts.handleConnect(rec, req)
		if rec.Code == http.StatusTooManyRequests {
			rejected++
		}
	}
	require.Equal(t, burst, rejected, "the bucket admits one connection")

	const message = "websocket upgrade rejected: connection rate of the address exceeded"
	require.NotEmpty(t, logs.line(message), "the first rejection is logged at once")
	require.Eventually(t, func() bool {
		return logs.line(message, fmt.Sprintf("suppressed=%d", burst-1)) != ""
	}, waitFor, 20*time.Millisecond, "the held-back rejections are logged with their count")
}

func TestThousandUnauthenticatedConnections(t *testing.T) {
	var limit syscall.Rlimit
	require.NoError(t, syscall.Getrlimit(syscall.RLIMIT_NOFILE, &limit))
	if limit.Cur < 2500 {
		t.Skipf("open file limit is %d; this test holds both ends of 1000 connections and needs 2500 "+
			"(raise it with ulimit -n 4096)", limit.Cur)
	}
	const (
		silentWS  = 600
		garbageWS = 200
		silentTCP = 200
	)
	cfg := testConfig(t, "")
	// The timeout leaves the dials, 50 at a time, room to finish on a
	// loaded machine before the first silent connections time out.
	cfg.Workers.HandshakeTimeout = 4 * time.Second
	cfg.HTTPReadHeaderTimeout = 4 * time.Second
	cfg.Workers.MaxPendingHandshakes = 2000
	logs := &logBuffer{next: testLogWriter{t}}
	ts := startServerLogging(t, cfg, logs)
	secret, _ := addCredential(t, ts, "trusted")

	url, err := protocol.ConnectURL(ts.url)
	require.NoError(t, err)
	host := strings.TrimPrefix(ts.url, "http://")

	type result struct {
		kind    string
		elapsed time.Duration
		err     error
	}
	results := make(chan result, silentWS+garbageWS+silentTCP)
	var wg sync.WaitGroup
	// Dials run 50 at a time; each connection then waits in its own
	// goroutine for the coordinator to close it.
	slots := make(chan struct{}, 50)
	watch := func(kind string, start time.Time, wait func() error) {
		defer wg.Done()
		err := wait()
		results <- result{kind, time.Since(start), err}
	}
	dialer := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}, HandshakeTimeout: waitFor}
	for i := range silentWS + garbageWS + silentTCP {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			start := time.Now()
			if i >= silentWS+garbageWS {
				conn, err := net.DialTimeout("tcp", host, waitFor)
				<-slots
				if err != nil {
					results <- result{"tcp", 0, err}
					wg.Done()
					return
				}
				defer conn.Close()
				watch("tcp", start, func() error {
					_, err := readUntilClosed(conn, cfg.HTTPReadHeaderTimeout+waitFor)
					return err
				})
				return
			}
			conn, resp, err := dialer.Dial(url, nil)
			<-slots
			if err != nil {
				results <- result{"websocket", 0, err}
				wg.Done()
				return
			}
			resp.Body.Close()
			defer conn.Close()
			if i >= silentWS {
				_ = conn.WriteMessage(websocket.BinaryMessage, []byte("\x00garbage that is no frame"))
			}
			watch("websocket", start, func() error {
				_, err := readWebSocketUntilClosed(conn, cfg.Workers.HandshakeTimeout+waitFor)
				return err
			})
		}()
	}

	// The trusted worker connects while the silent connections wait for
	// their handshake timeout.
	pending := ts.Stats().PendingHandshakes
	t.Logf("%d connections wait for their handshake", pending)
	require.GreaterOrEqual(t, pending, silentWS/2, "the silent WebSockets wait at the same time")
	w, reject := connectScram(t, ts, "trusted", secret, "")
	require.Nil(t, reject)
	w.sync()
	task := submit(t, ts, commandSpec()).Tasks[0]
	assert.Equal(t, task.ID, w.next().GetAssign().GetRef().GetTaskId())

	wg.Wait()
	close(results)
	counts := map[string]int{}
	for r := range results {
		require.NotZero(t, r.elapsed, "%s connection failed to open: %v", r.kind, r.err)
		require.False(t, isTimeout(r.err), "%s connection still open after %s", r.kind, r.elapsed)
		// The coordinator closes each within the handshake timeout, plus
		// the close handshake's grace and scheduling slack on a loaded
		// machine.
		assert.Less(t, r.elapsed, cfg.Workers.HandshakeTimeout+closeGrace+2*time.Second,
			"%s connection closed late: %v", r.kind, r.err)
		counts[r.kind]++
	}
	assert.Equal(t, silentWS+garbageWS, counts["websocket"])
	assert.Equal(t, silentTCP, counts["tcp"])
	require.Eventually(t, func() bool { return ts.Stats().PendingHandshakes == 0 }, waitFor, 10*time.Millisecond)
	logs.mu.Lock()
	warnings := strings.Count(logs.buf.String(), "handshake failed: no valid hello")
	logs.mu.Unlock()
	assert.Positive(t, warnings)
	assert.Less(t, warnings, 20, "the failed handshakes are logged at most once per second")

	// The trusted worker's session outlived the storm.
	w.write(w.seal(&pb.Frame{Body: &pb.Frame_Heartbeat{Heartbeat: &pb.Heartbeat{
		SentUnixNano: time.Now().UnixNano()}}}))
	ss := ts.sessionFor("trusted")
	require.NotNil(t, ss)
	assert.Equal(t, w.sessionID, ss.id)
	assert.NotNil(t, ss.attached(), "the trusted worker is still connected")
	assert.Equal(t, 1, ts.Stats().Sessions)
}

func TestDecodedLimitAboveFrameLimit(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.Workers.MaxFrameBytes = 16 << 10
	cfg.Workers.MaxDecodedBytes = 2 << 20
	ts := startServer(t, cfg)

	w := newSeqWorker(t, ts, "w1")
	w.compression = []string{protocol.CompressionDeflate}
	require.Equal(t, protocol.CompressionDeflate, w.connect().GetWelcome().GetCompression())
	w.sync()

	// 1 MiB of output compresses below the frame limit and stays below the
	// decoded limit, so the coordinator decodes it and replies.
	outcome := outcomeFrame(&pb.TaskRef{TaskId: "t-absent", Attempt: 1}, pb.Status_STATUS_SUCCEEDED)
	outcome.GetTaskOutcome().Output = make([]byte, 1<<20)
	w.send(outcome)
	ack := w.expect("outcome_ack").GetOutcomeAck()
	assert.False(t, ack.GetApplied(), "an outcome of an unknown task is not applied")
	assert.Equal(t, 1, ts.Stats().Sessions, "the session stays open")
}

// readUntilClosedRaw reads until the coordinator closes conn and returns
// the Reject received, if any, and the read error.
func readUntilClosedRaw(t *testing.T, conn *websocket.Conn, opener *protocol.Opener) (*pb.Reject, error) {
	t.Helper()
	var reject *pb.Reject
	for range 100 {
		data, err := readRaw(t, conn)
		if err != nil {
			return reject, err
		}
		if opener != nil {
			if data, err = opener.Open(data); err != nil {
				continue
			}
		}
		if frame, err := protocol.Decode(data, 0); err == nil && frame.GetReject() != nil {
			reject = frame.GetReject()
		}
	}
	return reject, errors.New("connection not closed after 100 messages")
}

// assertClosedTooBig checks that the coordinator ended the connection at
// the WebSocket read limit, with close code 1009 and no Reject, which a
// message read in full and then found too large would get.
func assertClosedTooBig(t *testing.T, reject *pb.Reject, err error) {
	t.Helper()
	require.Error(t, err)
	require.False(t, isTimeout(err), "the coordinator kept the connection open")
	assert.Nil(t, reject, "the message was read in full and rejected after decoding")
	var closeErr *websocket.CloseError
	if errors.As(err, &closeErr) {
		assert.Equal(t, websocket.CloseMessageTooBig, closeErr.Code)
	} else {
		t.Logf("connection reset before the close message arrived: %v", err)
	}
}

// stateSyncOfSize returns a state sync whose encoding is exactly size bytes.
func stateSyncOfSize(t *testing.T, size int) *pb.Frame {
	t.Helper()
	for n := size; n > 0; n-- {
		frame := &pb.Frame{Seq: 1, Body: &pb.Frame_StateSync{StateSync: &pb.StateSync{
			Running: []*pb.TaskRef{{TaskId: strings.Repeat("x", n), Attempt: 1}},
		}}}
		data, err := protocol.Encode(frame)
		require.NoError(t, err)
		if len(data) == size {
			return frame
		}
	}
	t.Fatalf("no state sync encodes to %d bytes", size)
	return nil
}

func TestFrameLimitExactWithAndWithoutTag(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.Workers.MaxFrameBytes = 4 << 10
	ts := startServer(t, cfg)

	t.Run("untagged one byte over", func(t *testing.T) {
		conn := dialRaw(t, ts)
		defer conn.Close()
		hello, err := protocol.Encode(&pb.Frame{Body: &pb.Frame_Hello{Hello: &pb.Hello{WorkerId: "plain", Slots: 1}}})
		require.NoError(t, err)
		require.NoError(t, conn.WriteMessage(websocket.BinaryMessage, hello))
		data, err := readRaw(t, conn)
		require.NoError(t, err)
		welcome, err := protocol.Decode(data, 0)
		require.NoError(t, err)
		require.NotNil(t, welcome.GetWelcome(), "first frame: %v", welcome)

		big := make([]byte, cfg.Workers.MaxFrameBytes+1)
		_ = conn.WriteMessage(websocket.BinaryMessage, big)
		reject, err := readUntilClosedRaw(t, conn, nil)
		assertClosedTooBig(t, reject, err)
	})

	t.Run("tagged at the limit", func(t *testing.T) {
		secret, _ := addCredential(t, ts, "tagged")
		w, reject := connectScram(t, ts, "tagged", secret, "")
		require.Nil(t, reject)
		sealed := w.seal(stateSyncOfSize(t, cfg.Workers.MaxFrameBytes))
		require.Len(t, sealed, cfg.Workers.MaxFrameBytes+protocol.TagSize)
		w.write(sealed)
		assert.NotNil(t, w.next().GetStateSyncResult(), "a frame of max_frame_bytes with its tag is accepted")
	})

	t.Run("tagged one byte over", func(t *testing.T) {
		secret, _ := addCredential(t, ts, "tagged-big")
		w, reject := connectScram(t, ts, "tagged-big", secret, "")
		require.Nil(t, reject)
		w.write(w.seal(stateSyncOfSize(t, cfg.Workers.MaxFrameBytes+1)))
		reject, err := readUntilClosedRaw(t, w.conn, w.opener)
		assertClosedTooBig(t, reject, err)
	})
}
