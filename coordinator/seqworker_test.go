package coordinator

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/protocol"
	"github.com/dtf-io/dtf/protocol/pb"
)

// seqWorker is a fake worker that follows the sequence and resume rules:
// it numbers its task frames, acknowledges the coordinator's, ignores
// duplicates and resumes its session after a cut.
type seqWorker struct {
	t         *testing.T
	ts        *testServer
	id        string
	types     []string
	sessionID string
	// window survives resumes and is replaced by a new session.
	window atomic.Pointer[protocol.Window]
	// ackCap, when not negative, caps the acknowledgement the worker
	// sends, so that the coordinator keeps those frames for replay.
	ackCap atomic.Int64
	// duplicates counts received frames ignored as already received.
	duplicates atomic.Int64
	// compressed counts received messages that were DEFLATE-compressed.
	compressed  atomic.Int64
	compression []string

	mu     sync.Mutex
	conn   *websocket.Conn
	codec  protocol.Codec
	done   chan struct{}
	frames chan *pb.Frame
}

func newSeqWorker(t *testing.T, ts *testServer, id string) *seqWorker {
	w := &seqWorker{t: t, ts: ts, id: id, types: []string{"command"},
		frames: make(chan *pb.Frame, 1000)}
	w.window.Store(protocol.NewWindow(0, 0))
	w.ackCap.Store(-1)
	t.Cleanup(w.cut)
	return w
}

func (w *seqWorker) ack() uint64 {
	received := w.window.Load().Received()
	if limit := w.ackCap.Load(); limit >= 0 && uint64(limit) < received {
		return uint64(limit)
	}
	return received
}

// connect dials and sends a hello that names the previous session, if
// any. It returns the first frame, a Welcome or a Reject. After a resumed
// Welcome it replays its unacknowledged frames; after a new session it
// starts a fresh window.
func (w *seqWorker) connect() *pb.Frame {
	w.t.Helper()
	conn := dialRaw(w.t, w.ts)
	done := make(chan struct{})
	first := make(chan *pb.Frame, 1)
	// The lock is held until the replay is written, so that no new frame
	// overtakes the hello or a replayed frame.
	w.mu.Lock()
	defer w.mu.Unlock()
	w.conn, w.done, w.codec = conn, done, protocol.Codec{}
	go w.readLoop(conn, done, first)

	hello := &pb.Frame{Ack: w.ack(), Body: &pb.Frame_Hello{Hello: &pb.Hello{
		WorkerId: w.id, TaskTypes: w.types, Slots: 100, SessionId: w.sessionID, Compression: w.compression,
	}}}
	w.writeLocked(hello)
	var frame *pb.Frame
	select {
	case frame = <-first:
	case <-time.After(waitFor):
		w.t.Fatal("no welcome within", waitFor)
	}
	welcome := frame.GetWelcome()
	if welcome == nil {
		return frame
	}
	w.codec = protocol.Codec{Compression: welcome.GetCompression()}
	if !welcome.GetResumed() {
		w.window.Store(protocol.NewWindow(0, 0))
		w.sessionID = welcome.GetSessionId()
		return frame
	}
	require.NoError(w.t, w.window.Load().Acknowledge(frame.GetAck()))
	for _, kept := range w.window.Load().Unacknowledged() {
		w.writeLocked(&pb.Frame{Seq: kept.GetSeq(), Body: kept.GetBody()})
	}
	return frame
}

func (w *seqWorker) readLoop(conn *websocket.Conn, done chan struct{}, first chan *pb.Frame) {
	defer close(done)
	gotFirst := false
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			return
		}
		if len(data) > 0 && data[0] == 1 {
			w.compressed.Add(1)
		}
		frame, err := protocol.Codec{}.Decode(data)
		if err != nil {
			w.t.Errorf("worker %s: %v", w.id, err)
			return
		}
		if !gotFirst {
			gotFirst = true
			first <- frame
			continue
		}
		if err := w.window.Load().Acknowledge(frame.GetAck()); err != nil {
			w.t.Errorf("worker %s: %v", w.id, err)
			return
		}
		if hb := frame.GetHeartbeat(); hb != nil {
			if !hb.GetReply() {
				w.send(&pb.Frame{Body: &pb.Frame_Heartbeat{Heartbeat: &pb.Heartbeat{
					SentUnixNano: time.Now().UnixNano(), Reply: true, EchoUnixNano: hb.GetSentUnixNano()}}})
			}
			continue
		}
		fresh, err := w.window.Load().Receive(frame)
		if err != nil {
			w.t.Errorf("worker %s: %v", w.id, err)
			return
		}
		if !fresh {
			w.duplicates.Add(1)
			continue
		}
		select {
		case w.frames <- frame:
		default:
			w.t.Errorf("worker %s dropped a %s frame: queue full", w.id, protocol.TypeOf(frame))
		}
	}
}

// send numbers a task frame and writes it. A frame written to a cut
// connection stays in the window for the replay after the resume.
func (w *seqWorker) send(frame *pb.Frame) {
	w.mu.Lock()
	defer w.mu.Unlock()
	require.NoError(w.t, w.window.Load().Add(frame))
	w.writeLocked(frame)
}

// sendLost numbers a task frame as if it was written and lost on the way.
func (w *seqWorker) sendLost(frame *pb.Frame) {
	require.NoError(w.t, w.window.Load().Add(frame))
}

func (w *seqWorker) write(frame *pb.Frame) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writeLocked(frame)
}

func (w *seqWorker) writeLocked(frame *pb.Frame) {
	out := &pb.Frame{Seq: frame.GetSeq(), Ack: w.ack(), Body: frame.GetBody()}
	data, err := w.codec.Encode(out)
	require.NoError(w.t, err)
	_ = w.conn.SetWriteDeadline(time.Now().Add(waitFor))
	_ = w.conn.WriteMessage(websocket.BinaryMessage, data)
}

// cut drops the TCP connection without a WebSocket close, as a network
// failure does, and waits for the reader to end.
func (w *seqWorker) cut() {
	w.mu.Lock()
	conn, done := w.conn, w.done
	w.mu.Unlock()
	if conn == nil {
		return
	}
	_ = conn.Close()
	<-done
}

// close ends the connection with a normal WebSocket close with reason,
// as a connector does with protocol.CloseWorkerStopping when its host
// stops.
func (w *seqWorker) close(reason string) {
	w.mu.Lock()
	conn, done := w.conn, w.done
	if conn != nil {
		_ = conn.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseNormalClosure, reason), time.Now().Add(time.Second))
	}
	w.mu.Unlock()
	if conn == nil {
		return
	}
	_ = conn.Close()
	<-done
}

// expect returns the next fresh frame, which must be of type typ.
func (w *seqWorker) expect(typ string) *pb.Frame {
	w.t.Helper()
	select {
	case frame := <-w.frames:
		require.Equal(w.t, typ, protocol.TypeOf(frame), "frame: %v", frame)
		return frame
	case <-time.After(waitFor):
		w.t.Fatalf("worker %s: no %s frame within %s", w.id, typ, waitFor)
		return nil
	}
}

// sync sends the state sync of a new session and waits for its result.
func (w *seqWorker) sync(running ...*pb.TaskRef) *pb.StateSyncResult {
	w.t.Helper()
	w.send(&pb.Frame{Body: &pb.Frame_StateSync{StateSync: &pb.StateSync{Running: running}}})
	return w.expect("state_sync_result").GetStateSyncResult()
}
