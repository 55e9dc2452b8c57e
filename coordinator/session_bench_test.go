package coordinator_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator"
	"github.com/dtf-io/dtf/coordinator/config"
	"github.com/dtf-io/dtf/protocol"
	"github.com/dtf-io/dtf/protocol/pb"
)

// benchInFlight bounds the heartbeats a benchmark client has sent without
// reading their replies, well below the coordinator's send queue of 256, so
// the session is never closed for falling behind.
const benchInFlight = 128

// benchSession is one worker session on a coordinator started for a
// benchmark, reached through a raw WebSocket client over 127.0.0.1.
type benchSession struct {
	conn *websocket.Conn
	// seq is the last sequence number this client used; ack is the last
	// coordinator sequence number it received.
	seq uint64
	ack uint64
}

// startBenchCoordinator runs a coordinator on 127.0.0.1:0 with a fresh store
// until the benchmark ends, and returns its address.
func startBenchCoordinator(b *testing.B) string {
	b.Helper()
	cfg := config.Default("127.0.0.1:0", b.TempDir())
	srv, stop := runBenchCoordinator(b, cfg)
	b.Cleanup(stop)
	return srv.Addr()
}

// runBenchCoordinator runs a coordinator with cfg and returns it with a
// function that stops it and checks Run's result.
func runBenchCoordinator(tb testing.TB, cfg *config.Config) (*coordinator.Server, func()) {
	tb.Helper()
	cfg.ShutdownTimeout = 5 * time.Second
	// A real logger at the default level of dtf coordinator, because a
	// session keeps its own logger with its ids.
	logger := hclog.New(&hclog.LoggerOptions{Name: "bench", Level: hclog.Warn, Output: io.Discard})
	srv, err := coordinator.New(cfg, logger)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	return srv, func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("coordinator run: %v", err)
		}
	}
}

// openBenchSession connects as workerID, completes hello, welcome and the
// state sync, and returns the session ready for task frames.
func openBenchSession(b *testing.B, addr, workerID string) *benchSession {
	b.Helper()
	s := dialBenchSession(b, addr, workerID)
	b.Cleanup(func() { _ = s.conn.Close() })
	return s
}

// dialBenchSession is openBenchSession without closing the connection when
// the benchmark ends.
func dialBenchSession(tb testing.TB, addr, workerID string) *benchSession {
	tb.Helper()
	dialer := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}, HandshakeTimeout: 5 * time.Second}
	conn, resp, err := dialer.Dial("ws://"+addr+protocol.ConnectPath, http.Header{})
	if err != nil {
		tb.Fatalf("dial coordinator %s: %v", addr, err)
	}
	resp.Body.Close()
	s := &benchSession{conn: conn}

	s.write(tb, &pb.Frame{Body: &pb.Frame_Hello{Hello: &pb.Hello{
		WorkerId: workerID, TaskTypes: []string{"command"}, Slots: 1,
	}}})
	if welcome := s.read(tb); welcome.GetWelcome() == nil {
		tb.Fatalf("expected welcome, got %s", protocol.TypeOf(welcome))
	}
	s.writeTask(tb, &pb.Frame{Body: &pb.Frame_StateSync{StateSync: &pb.StateSync{}}})
	for {
		if s.read(tb).GetStateSyncResult() != nil {
			return s
		}
	}
}

func (s *benchSession) write(tb testing.TB, frame *pb.Frame) {
	frame.Ack = s.ack
	data, err := protocol.Encode(frame)
	if err != nil {
		tb.Error(err)
		return
	}
	if err := s.conn.WriteMessage(websocket.BinaryMessage, data); err != nil {
		tb.Errorf("write %s frame: %v", protocol.TypeOf(frame), err)
	}
}

// writeTask numbers a task frame and writes it.
func (s *benchSession) writeTask(tb testing.TB, frame *pb.Frame) {
	s.seq++
	frame.Seq = s.seq
	s.write(tb, frame)
}

func (s *benchSession) read(tb testing.TB) *pb.Frame {
	_ = s.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, data, err := s.conn.ReadMessage()
	if err != nil {
		tb.Fatalf("read: %v", err)
	}
	frame, err := protocol.Decode(data, 0)
	if err != nil {
		tb.Fatal(err)
	}
	if frame.GetSeq() > s.ack {
		s.ack = frame.GetSeq()
	}
	return frame
}

func heartbeatFrame() *pb.Frame {
	return &pb.Frame{Body: &pb.Frame_Heartbeat{Heartbeat: &pb.Heartbeat{SentUnixNano: time.Now().UnixNano()}}}
}

// BenchmarkSessionHeartbeatEcho measures frames per second through one
// coordinator session: the client sends heartbeats, up to benchInFlight
// ahead, and the coordinator's reader, dispatcher and writer reply to each.
// frames/s counts both directions. Client and coordinator share the CPUs.
func BenchmarkSessionHeartbeatEcho(b *testing.B) {
	addr := startBenchCoordinator(b)
	b.Run("run", func(b *testing.B) {
		benchmarkHeartbeatEcho(b, addr, fmt.Sprintf("bench-echo-%d", b.N))
	})
}

func benchmarkHeartbeatEcho(b *testing.B, addr, workerID string) {
	s := openBenchSession(b, addr, workerID)
	tokens := make(chan struct{}, benchInFlight)
	sendDone := make(chan struct{})
	b.ReportAllocs()
	b.ResetTimer()
	started := time.Now()
	go func() {
		defer close(sendDone)
		for i := 0; i < b.N; i++ {
			tokens <- struct{}{}
			s.write(b, heartbeatFrame())
		}
	}()
	for replies := 0; replies < b.N; {
		if s.read(b).GetHeartbeat().GetReply() {
			replies++
			<-tokens
		}
	}
	elapsed := time.Since(started)
	b.StopTimer()
	<-sendDone
	b.ReportMetric(float64(2*b.N)/elapsed.Seconds(), "frames/s")
}

// BenchmarkSessionTaskProgress measures one-way frames per second into a
// coordinator session: sequenced task_progress frames, which the
// coordinator decodes and dispatches without a reply or a store write. A
// final heartbeat's reply marks that every frame was read.
func BenchmarkSessionTaskProgress(b *testing.B) {
	addr := startBenchCoordinator(b)
	b.Run("run", func(b *testing.B) {
		s := openBenchSession(b, addr, fmt.Sprintf("bench-progress-%d", b.N))
		ref := &pb.TaskRef{TaskId: "t-bench", Attempt: 1}
		b.ReportAllocs()
		b.ResetTimer()
		started := time.Now()
		for i := 0; i < b.N; i++ {
			s.writeTask(b, &pb.Frame{Body: &pb.Frame_TaskProgress{TaskProgress: &pb.TaskProgress{
				Ref: ref, Fraction: float64(i) / float64(b.N),
			}}})
		}
		s.write(b, heartbeatFrame())
		for !s.read(b).GetHeartbeat().GetReply() {
		}
		elapsed := time.Since(started)
		b.StopTimer()
		b.ReportMetric(float64(b.N)/elapsed.Seconds(), "frames/s")
	})
}

// idleHeartbeat is the heartbeat interval of the coordinator in
// BenchmarkSessionIdleMemory. It is longer than any run, so the
// coordinator neither sends heartbeats nor times out the clients, which
// stop reading and writing after the state sync.
const idleHeartbeat = 10 * time.Minute

// BenchmarkSessionIdleMemory measures the coordinator memory that one idle
// worker session holds. Each iteration starts a coordinator, opens n
// sessions over 127.0.0.1 (hello, welcome, state sync) and keeps only each
// client's TCP connection, so that the client's WebSocket buffers become
// garbage. After garbage collection it reports, per session, the growth of
// HeapInuse plus StackInuse (B/session), of each alone, and of the number
// of goroutines.
//
// The figure includes each client's net.TCPConn, a few hundred bytes. It
// excludes the garbage that a live coordinator carries between two
// collections, which the VmRSS figure of `dtf-load -mode idle` includes.
func BenchmarkSessionIdleMemory(b *testing.B) {
	// With much fewer sessions, changes in the coordinator's own memory
	// between the two measurements would outweigh the sessions' share.
	for _, n := range []int{1000} {
		b.Run(fmt.Sprintf("sessions=%d", n), func(b *testing.B) {
			var heap, stack, goroutines float64
			for i := 0; i < b.N; i++ {
				m := measureIdleSessions(b, n)
				heap += m.heap
				stack += m.stack
				goroutines += m.goroutines
			}
			runs := float64(b.N)
			b.ReportMetric((heap+stack)/runs, "B/session")
			b.ReportMetric(heap/runs, "heap-B/session")
			b.ReportMetric(stack/runs, "stack-B/session")
			b.ReportMetric(goroutines/runs, "goroutines/session")
		})
	}
}

// idleConfig returns the configuration of a coordinator that admits n
// sessions at once and neither sends heartbeats nor expects them during a
// run.
func idleConfig(tb testing.TB, n int) *config.Config {
	cfg := config.Default("127.0.0.1:0", tb.TempDir())
	cfg.Workers.HeartbeatInterval = idleHeartbeat
	cfg.Workers.HeartbeatTimeout = 3 * idleHeartbeat
	cfg.Workers.MaxSessionsPerSecond = 100 * n
	cfg.Workers.SessionBurst = n
	return cfg
}

// TestIdleSessionHoldsOneGoroutine checks that an idle connection keeps
// only its reader goroutine: the writer runs only while there is something
// to send, and the handshake's HTTP handler goroutine has returned.
func TestIdleSessionHoldsOneGoroutine(t *testing.T) {
	const n = 20
	srv, stop := runBenchCoordinator(t, idleConfig(t, n))
	defer stop()
	waitGoroutinesSteady(t)
	before := runtime.NumGoroutine()

	for i := 0; i < n; i++ {
		s := dialBenchSession(t, srv.Addr(), fmt.Sprintf("idle-goroutines-%d", i))
		defer s.conn.Close()
	}
	require.Equal(t, n, srv.Stats().Sessions)
	// Goroutines of the handshakes and of the scheduler's work after each
	// state sync end shortly after the sessions are open. The wait is a
	// plain loop because require.Eventually checks its condition on
	// goroutines of its own.
	added := runtime.NumGoroutine() - before
	for deadline := time.Now().Add(10 * time.Second); added > n && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond) // poll interval
		added = runtime.NumGoroutine() - before
	}
	require.LessOrEqual(t, added, n, "goroutines added by %d idle sessions", n)
}

// TestConnectionWriterUnderConcurrentSends checks the single writer of a
// connection. Heartbeat replies queued by the reader and the coordinator's
// own heartbeats from the heartbeat timer start writers at the same time.
// Every reply must arrive, and on shutdown the final Reject must follow them
// before a normal close. gorilla/websocket panics on concurrent writes, and
// the race detector reports them.
func TestConnectionWriterUnderConcurrentSends(t *testing.T) {
	cfg := config.Default("127.0.0.1:0", t.TempDir())
	cfg.Workers.HeartbeatInterval = 5 * time.Millisecond
	cfg.Workers.HeartbeatTimeout = 10 * time.Second
	srv, stop := runBenchCoordinator(t, cfg)
	var stopOnce sync.Once
	defer stopOnce.Do(stop)
	s := dialBenchSession(t, srv.Addr(), "concurrent-writer")
	defer s.conn.Close()

	const sent = 2000
	tokens := make(chan struct{}, benchInFlight)
	sendDone := make(chan struct{})
	go func() {
		defer close(sendDone)
		for i := 0; i < sent; i++ {
			tokens <- struct{}{}
			// Only this goroutine writes, and heartbeats carry no
			// acknowledgement, so s.ack stays the reader's alone.
			data, err := protocol.Encode(heartbeatFrame())
			if err == nil {
				err = s.conn.WriteMessage(websocket.BinaryMessage, data)
			}
			if err != nil {
				t.Errorf("write heartbeat %d: %v", i, err)
				return
			}
		}
	}()
	replies, timerHeartbeats := 0, 0
	for replies < sent {
		hb := s.read(t).GetHeartbeat()
		switch {
		case hb.GetReply():
			replies++
			<-tokens
		case hb != nil:
			timerHeartbeats++
		}
	}
	<-sendDone
	require.Positive(t, timerHeartbeats, "expected coordinator heartbeats while replies were sent")

	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		stopOnce.Do(stop)
	}()
	var last *pb.Frame
	var readErr error
	for readErr == nil {
		_ = s.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		var data []byte
		if _, data, readErr = s.conn.ReadMessage(); readErr == nil {
			last, readErr = protocol.Decode(data, 0)
		}
	}
	require.True(t, websocket.IsCloseError(readErr, websocket.CloseNormalClosure),
		"expected a normal close after the final frame, got %v", readErr)
	require.NotNil(t, last.GetReject(), "expected a Reject as the last frame, got %s", protocol.TypeOf(last))
	require.Equal(t, pb.Reject_CODE_SHUTTING_DOWN, last.GetReject().GetCode())
	select {
	case <-stopped:
	case <-time.After(15 * time.Second):
		t.Fatal("coordinator did not stop within 15s")
	}
}

// idleCost is what one idle session adds to the heap, to the stacks and to
// the number of goroutines.
type idleCost struct {
	heap, stack, goroutines float64
}

// measureIdleSessions runs one coordinator with n idle sessions and returns
// what each session added.
func measureIdleSessions(b *testing.B, n int) idleCost {
	b.Helper()
	srv, stop := runBenchCoordinator(b, idleConfig(b, n))
	defer stop()

	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, conn := range conns {
			_ = conn.Close()
		}
	}()
	heapBefore, stackBefore := settledMemory()
	goroutinesBefore := runtime.NumGoroutine()

	for i := 0; i < n; i++ {
		s := dialBenchSession(b, srv.Addr(), fmt.Sprintf("bench-idle-%d", i))
		conns = append(conns, s.conn.UnderlyingConn())
	}
	deadline := time.Now().Add(10 * time.Second)
	for srv.Stats().Sessions != n {
		if time.Now().After(deadline) {
			b.Fatalf("coordinator lists %d attached sessions, expected %d", srv.Stats().Sessions, n)
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
	waitGoroutinesSteady(b)
	heapAfter, stackAfter := settledMemory()
	return idleCost{
		heap:       float64(int64(heapAfter)-int64(heapBefore)) / float64(n),
		stack:      float64(int64(stackAfter)-int64(stackBefore)) / float64(n),
		goroutines: float64(runtime.NumGoroutine()-goroutinesBefore) / float64(n),
	}
}

// waitGoroutinesSteady waits until the number of goroutines stayed the
// same for five polls in a row, so that the scheduler's work after the state
// syncs, with its store queries, is over before the measurement.
func waitGoroutinesSteady(tb testing.TB) {
	tb.Helper()
	const polls = 5
	deadline := time.Now().Add(30 * time.Second)
	last, same := runtime.NumGoroutine(), 0
	for same < polls {
		if time.Now().After(deadline) {
			tb.Fatalf("goroutine count still changing after 30s, now %d", last)
		}
		time.Sleep(20 * time.Millisecond) // poll interval
		if n := runtime.NumGoroutine(); n == last {
			same++
		} else {
			last, same = n, 0
		}
	}
}

// settledMemory collects garbage until HeapInuse plus StackInuse stops
// falling, at most five times, and returns both. More than one collection
// is needed because each one halves at most once the stack of a goroutine
// that uses less than a quarter of it.
func settledMemory() (heap, stack uint64) {
	var m runtime.MemStats
	last := ^uint64(0)
	for range 5 {
		runtime.GC()
		runtime.ReadMemStats(&m)
		if m.HeapInuse+m.StackInuse >= last {
			break
		}
		last = m.HeapInuse + m.StackInuse
	}
	return m.HeapInuse, m.StackInuse
}
