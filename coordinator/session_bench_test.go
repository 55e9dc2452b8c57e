package coordinator_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"

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
	cfg.ShutdownTimeout = 5 * time.Second
	srv, err := coordinator.New(cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("coordinator run: %v", err)
		}
	})
	return srv.Addr()
}

// openBenchSession connects as workerID, completes hello, welcome and the
// state sync, and returns the session ready for task frames.
func openBenchSession(b *testing.B, addr, workerID string) *benchSession {
	b.Helper()
	dialer := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}, HandshakeTimeout: 5 * time.Second}
	conn, resp, err := dialer.Dial("ws://"+addr+protocol.ConnectPath, http.Header{})
	if err != nil {
		b.Fatalf("dial coordinator %s: %v", addr, err)
	}
	resp.Body.Close()
	s := &benchSession{conn: conn}
	b.Cleanup(func() { _ = conn.Close() })

	s.write(b, &pb.Frame{Body: &pb.Frame_Hello{Hello: &pb.Hello{
		WorkerId: workerID, TaskTypes: []string{"command"}, Slots: 1,
	}}})
	if welcome := s.read(b); welcome.GetWelcome() == nil {
		b.Fatalf("expected welcome, got %s", protocol.TypeOf(welcome))
	}
	s.writeTask(b, &pb.Frame{Body: &pb.Frame_StateSync{StateSync: &pb.StateSync{}}})
	for {
		if s.read(b).GetStateSyncResult() != nil {
			return s
		}
	}
}

func (s *benchSession) write(b *testing.B, frame *pb.Frame) {
	frame.Ack = s.ack
	data, err := protocol.Encode(frame)
	if err != nil {
		b.Error(err)
		return
	}
	if err := s.conn.WriteMessage(websocket.BinaryMessage, data); err != nil {
		b.Errorf("write %s frame: %v", protocol.TypeOf(frame), err)
	}
}

// writeTask numbers a task frame and writes it.
func (s *benchSession) writeTask(b *testing.B, frame *pb.Frame) {
	s.seq++
	frame.Seq = s.seq
	s.write(b, frame)
}

func (s *benchSession) read(b *testing.B) *pb.Frame {
	_ = s.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, data, err := s.conn.ReadMessage()
	if err != nil {
		b.Fatalf("read: %v", err)
	}
	frame, err := protocol.Decode(data, 0)
	if err != nil {
		b.Fatal(err)
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
