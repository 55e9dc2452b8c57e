package coordinator

import (
	"bytes"
	"compress/flate"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/protocol"
	"github.com/dtf-io/dtf/protocol/pb"
)

func TestAdmissionSpreadsRetries(t *testing.T) {
	now := time.Now()
	a := newSessionAdmission(100, 10, now)
	for range 10 {
		ok, _ := a.admit(now)
		require.True(t, ok, "the burst is admitted at once")
	}
	var retries []time.Duration
	for range 200 {
		ok, retry := a.admit(now)
		require.False(t, ok)
		retries = append(retries, retry)
	}
	slices.Sort(retries)
	assert.GreaterOrEqual(t, retries[0], minOverloadRetry)
	// 200 rejections at 100 per second form a backlog of about 2 s; the
	// hints must cover most of it rather than bunch up.
	assert.Greater(t, retries[len(retries)-1], 1500*time.Millisecond)
	assert.Less(t, retries[len(retries)-1], 2100*time.Millisecond)
	assert.Greater(t, retries[len(retries)/2]-retries[len(retries)/4], 200*time.Millisecond)

	ok, _ := a.admit(now.Add(3 * time.Second))
	assert.True(t, ok, "tokens refill at the configured rate")
}

func TestStormSheddingAllConnect(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.Workers.MaxSessionsPerSecond = 100
	cfg.Workers.SessionBurst = 50
	cfg.Workers.HeartbeatInterval = time.Second
	cfg.Workers.HeartbeatTimeout = 10 * time.Second
	ts := startServer(t, cfg)

	const workers = 300
	var (
		mu      sync.Mutex
		retries []int64
		wg      sync.WaitGroup
		start   = make(chan struct{})
	)
	errs := make(chan error, workers)
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			// Bounded: each worker retries at most 50 times.
			for range 50 {
				frame, conn, err := dialHello(ts, fmt.Sprintf("storm-%03d", i))
				if err != nil {
					errs <- err
					return
				}
				if frame.GetWelcome() != nil {
					// Keep the session open until the end of the test.
					t.Cleanup(func() { _ = conn.Close() })
					return
				}
				_ = conn.Close()
				reject := frame.GetReject()
				if reject.GetCode() != pb.Reject_CODE_OVERLOADED {
					errs <- fmt.Errorf("worker %d: unexpected reject %v", i, reject)
					return
				}
				mu.Lock()
				retries = append(retries, reject.GetRetryAfterMs())
				mu.Unlock()
				time.Sleep(time.Duration(reject.GetRetryAfterMs()) * time.Millisecond)
			}
			errs <- fmt.Errorf("worker %d never connected", i)
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	require.Eventually(t, func() bool { return ts.Stats().Sessions == workers }, 10*time.Second,
		20*time.Millisecond, "every worker holds a session")
	mu.Lock()
	defer mu.Unlock()
	require.GreaterOrEqual(t, len(retries), workers-cfg.Workers.SessionBurst,
		"every hello over the burst was rejected at least once")
	slices.Sort(retries)
	distinct := slices.Compact(slices.Clone(retries))
	assert.Greater(t, len(distinct), len(retries)/4, "retry hints are spread, not equal")
	assert.Greater(t, retries[len(retries)-1]-retries[0], int64(1000),
		"the hints span at least a second for a backlog of 250 at 100 per second")
}

// dialHello connects, sends a hello and returns the first frame and the
// connection.
func dialHello(ts *testServer, workerID string) (*pb.Frame, *websocket.Conn, error) {
	url, err := protocol.ConnectURL(ts.url)
	if err != nil {
		return nil, nil, err
	}
	dialer := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}, HandshakeTimeout: waitFor}
	conn, resp, err := dialer.Dial(url, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("dial %s: %w", url, err)
	}
	resp.Body.Close()
	data, _ := protocol.Encode(&pb.Frame{Body: &pb.Frame_Hello{Hello: &pb.Hello{WorkerId: workerID, Slots: 1}}})
	_ = conn.SetWriteDeadline(time.Now().Add(waitFor))
	if err := conn.WriteMessage(websocket.BinaryMessage, data); err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("send hello: %w", err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(waitFor))
	_, msg, err := conn.ReadMessage()
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("read first frame: %w", err)
	}
	_ = conn.SetReadDeadline(time.Time{})
	frame, err := protocol.Decode(msg, 0)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	return frame, conn, nil
}

func TestPendingHandshakeLimit(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.Workers.MaxPendingHandshakes = 2
	ts := startServer(t, cfg)

	silent := []*websocket.Conn{dialRaw(t, ts), dialRaw(t, ts)}
	defer func() {
		for _, c := range silent {
			c.Close()
		}
	}()
	require.Eventually(t, func() bool { return ts.Stats().PendingHandshakes == 2 }, waitFor, 10*time.Millisecond)

	url, err := protocol.ConnectURL(ts.url)
	require.NoError(t, err)
	dialer := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}, HandshakeTimeout: waitFor}
	_, resp, err := dialer.Dial(url, nil)
	require.Error(t, err)
	require.NotNil(t, resp)
	resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.NotEmpty(t, resp.Header.Get("Retry-After"))

	// A hello ends a pending handshake and frees its place.
	data, err := protocol.Encode(&pb.Frame{Body: &pb.Frame_Hello{Hello: &pb.Hello{WorkerId: "w1"}}})
	require.NoError(t, err)
	require.NoError(t, silent[0].WriteMessage(websocket.BinaryMessage, data))
	require.Eventually(t, func() bool { return ts.Stats().PendingHandshakes == 1 }, waitFor, 10*time.Millisecond)
	frame, conn, err := dialHello(ts, "w2")
	require.NoError(t, err)
	defer conn.Close()
	assert.NotNil(t, frame.GetWelcome())
}

func TestCompressedFramesBothWays(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	w := newSeqWorker(t, ts, "w1")
	w.compression = []string{"zstd", protocol.CompressionDeflate}
	welcome := w.connect().GetWelcome()
	require.Equal(t, protocol.CompressionDeflate, welcome.GetCompression())
	w.sync()

	// A large, repetitive payload travels compressed to the worker.
	payload := fmt.Sprintf(`{"argv":["echo",%q]}`, strings.Repeat("payload ", 20000))
	task := submit(t, ts, api.TaskSpec{Type: "command", Payload: []byte(payload)}).Tasks[0]
	ref := w.expect("assign").GetAssign().GetRef()
	assert.Positive(t, w.compressed.Load())

	// And a large outcome travels compressed to the coordinator.
	outcome := outcomeFrame(ref, pb.Status_STATUS_SUCCEEDED)
	outcome.GetTaskOutcome().Output = []byte(strings.Repeat("output line\n", 50000))
	encoded, err := protocol.Codec{Compression: protocol.CompressionDeflate}.Encode(outcome)
	require.NoError(t, err)
	require.Equal(t, byte(1), encoded[0])
	assert.Less(t, len(encoded), 50000, "the outcome is compressed on the wire")
	w.send(outcome)
	assert.True(t, w.expect("outcome_ack").GetOutcomeAck().GetApplied())
	got := getTask(t, ts, task.ID)
	assert.Equal(t, api.StateSucceeded, got.State)
}

func TestCompressionDisabledByConfig(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.Workers.Compression = false
	ts := startServer(t, cfg)
	w := newSeqWorker(t, ts, "w1")
	w.compression = []string{protocol.CompressionDeflate}
	assert.Empty(t, w.connect().GetWelcome().GetCompression())
}

func TestCompressionBombRejected(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.Workers.MaxFrameBytes = 64 << 10
	ts := startServer(t, cfg)

	bomber := newSeqWorker(t, ts, "bomber")
	bomber.compression = []string{protocol.CompressionDeflate}
	bomber.connect()
	// 64 MiB of zeros deflate to about 64 KiB / 1000: far below the
	// frame limit, far above the decoded limit.
	var buf bytes.Buffer
	buf.WriteByte(1)
	zw, err := flate.NewWriter(&buf, flate.BestCompression)
	require.NoError(t, err)
	zeros := make([]byte, 1<<20)
	for range 64 {
		_, _ = zw.Write(zeros)
	}
	require.NoError(t, zw.Close())
	require.Less(t, buf.Len(), cfg.Workers.MaxFrameBytes)
	bomber.mu.Lock()
	require.NoError(t, bomber.conn.WriteMessage(websocket.BinaryMessage, buf.Bytes()))
	done := bomber.done
	bomber.mu.Unlock()
	select {
	case <-done:
	case <-time.After(waitFor):
		t.Fatal("the coordinator kept a connection that sent a compression bomb")
	}

	other, _ := connectSynced(t, ts, "other", []string{"command"})
	task := submit(t, ts, commandSpec()).Tasks[0]
	assert.Equal(t, task.ID, other.expect("assign").GetAssign().GetRef().GetTaskId(),
		"the coordinator keeps serving other workers")
}

func TestWorkersListRTT(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.Workers.HeartbeatInterval = 20 * time.Millisecond
	ts := startServer(t, cfg)
	w := newSeqWorker(t, ts, "w1")
	w.connect()
	require.Eventually(t, func() bool {
		var list struct{ Workers []api.Worker }
		doJSON(t, http.MethodGet, ts.url+"/v1/workers", nil, &list)
		return len(list.Workers) == 1 && list.Workers[0].RTTMs > 0
	}, waitFor, 20*time.Millisecond, "the smoothed round-trip time appears in the worker list")

	_, _, samples := ts.sessionFor("w1").rtt.Get()
	assert.Positive(t, samples)
	c := ts.sessionFor("w1").attached()
	require.NotNil(t, c)
	assert.GreaterOrEqual(t, c.timeout(), cfg.Workers.HeartbeatTimeout)
	assert.LessOrEqual(t, c.timeout(), 4*cfg.Workers.HeartbeatTimeout)
}
