package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/coordinator/config"
	"github.com/dtf-io/dtf/protocol"
	"github.com/dtf-io/dtf/protocol/pb"
)

const waitFor = 5 * time.Second

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testConfig returns a configuration for 127.0.0.1:0 with short timers.
func testConfig(t *testing.T, dataDir string) *config.Config {
	t.Helper()
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	cfg := config.Default("127.0.0.1:0", dataDir)
	cfg.ScheduleInterval = 50 * time.Millisecond
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.Workers.HeartbeatInterval = 200 * time.Millisecond
	cfg.Workers.HeartbeatTimeout = 5 * time.Second
	cfg.Workers.HandshakeTimeout = 2 * time.Second
	// Retries wait a few milliseconds, so tests that requeue stay quick;
	// the backoff tests set their own.
	cfg.RetryBackoffBase = 5 * time.Millisecond
	cfg.RetryBackoffMax = 20 * time.Millisecond
	return cfg
}

// testServer is a running coordinator; stop shuts it down and checks Run's
// result, once.
type testServer struct {
	*Server
	url  string
	stop func()
}

func startServer(t *testing.T, cfg *config.Config) *testServer {
	t.Helper()
	return startServerLogging(t, cfg, testLogWriter{t})
}

// startServerLogging starts a coordinator that writes its log to output.
func startServerLogging(t *testing.T, cfg *config.Config, output io.Writer) *testServer {
	t.Helper()
	logger := hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Debug, Output: output})
	srv, err := New(cfg, logger)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()

	var once sync.Once
	ts := &testServer{Server: srv, url: "http://" + srv.Addr()}
	ts.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(cfg.ShutdownTimeout + waitFor):
				t.Fatal("coordinator did not stop")
			}
		})
	}
	t.Cleanup(ts.stop)
	return ts
}

type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// httpClient keeps no idle connections, so no client goroutine outlives a
// test.
var httpClient = &http.Client{
	Timeout:   waitFor,
	Transport: &http.Transport{DisableKeepAlives: true},
}

func doJSON(t *testing.T, method, url string, body any, out any) int {
	t.Helper()
	var reader io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		reader = bytes.NewBufferString(b)
	default:
		data, err := json.Marshal(b)
		require.NoError(t, err)
		reader = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, url, reader)
	require.NoError(t, err)
	resp, err := httpClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	if out != nil {
		require.NoError(t, json.Unmarshal(data, out), "body: %s", data)
	}
	return resp.StatusCode
}

func submit(t *testing.T, ts *testServer, specs ...api.TaskSpec) api.SubmitResponse {
	t.Helper()
	var resp api.SubmitResponse
	status := doJSON(t, http.MethodPost, ts.url+"/v1/tasks", api.SubmitRequest{Tasks: specs}, &resp)
	require.Equal(t, http.StatusCreated, status)
	return resp
}

func getTask(t *testing.T, ts *testServer, id string) api.Task {
	t.Helper()
	var task api.Task
	require.Equal(t, http.StatusOK, doJSON(t, http.MethodGet, ts.url+"/v1/tasks/"+id, nil, &task))
	return task
}

func commandSpec() api.TaskSpec {
	return api.TaskSpec{Type: "command", Payload: json.RawMessage(`{"argv":["true"]}`)}
}

// fakeWorker is a worker written against the wire protocol directly. It
// replies to the coordinator's heartbeats and queues every other frame.
type fakeWorker struct {
	t       *testing.T
	conn    *websocket.Conn
	writeMu sync.Mutex
	frames  chan *pb.Frame
	done    chan struct{}
}

func dialRaw(t *testing.T, ts *testServer) *websocket.Conn {
	t.Helper()
	url, err := protocol.ConnectURL(ts.url)
	require.NoError(t, err)
	dialer := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}, HandshakeTimeout: waitFor}
	conn, resp, err := dialer.Dial(url, nil)
	require.NoError(t, err)
	resp.Body.Close()
	return conn
}

// connectWorker dials, sends hello and returns the worker with the first
// frame it received, which is a Welcome or a Reject.
func connectWorker(t *testing.T, ts *testServer, hello *pb.Hello) (*fakeWorker, *pb.Frame) {
	t.Helper()
	w := &fakeWorker{t: t, conn: dialRaw(t, ts), frames: make(chan *pb.Frame, 100), done: make(chan struct{})}
	t.Cleanup(w.close)
	go w.readLoop()
	w.send(&pb.Frame{Body: &pb.Frame_Hello{Hello: hello}})
	return w, w.next()
}

// connectSynced connects a worker, checks the Welcome and syncs the given
// running attempts.
func connectSynced(t *testing.T, ts *testServer, id string, types []string, running ...*pb.TaskRef) (
	*fakeWorker, *pb.StateSyncResult) {
	t.Helper()
	w, first := connectWorker(t, ts, &pb.Hello{WorkerId: id, TaskTypes: types, Slots: 2})
	require.NotNil(t, first.GetWelcome(), "first frame: %v", first)
	w.send(&pb.Frame{Body: &pb.Frame_StateSync{StateSync: &pb.StateSync{Running: running}}})
	result := w.expect("state_sync_result").GetStateSyncResult()
	return w, result
}

func (w *fakeWorker) readLoop() {
	defer close(w.done)
	for {
		_, data, err := w.conn.ReadMessage()
		if err != nil {
			return
		}
		frame, err := protocol.Decode(data, 0)
		if err != nil {
			return
		}
		if hb := frame.GetHeartbeat(); hb != nil && !hb.GetReply() {
			w.send(&pb.Frame{Body: &pb.Frame_Heartbeat{Heartbeat: &pb.Heartbeat{
				SentUnixNano: time.Now().UnixNano(), Reply: true, EchoUnixNano: hb.GetSentUnixNano()}}})
			continue
		}
		select {
		case w.frames <- frame:
		default:
			w.t.Errorf("fake worker dropped a %s frame: queue full", protocol.TypeOf(frame))
		}
	}
}

func (w *fakeWorker) send(frame *pb.Frame) {
	data, err := protocol.Encode(frame)
	require.NoError(w.t, err)
	w.sendRaw(data)
}

func (w *fakeWorker) sendRaw(data []byte) {
	w.writeMu.Lock()
	defer w.writeMu.Unlock()
	_ = w.conn.SetWriteDeadline(time.Now().Add(waitFor))
	// A write to a connection the coordinator closed fails, and the test notices
	// that through the frames it expects.
	_ = w.conn.WriteMessage(websocket.BinaryMessage, data)
}

// next returns the next frame other than a heartbeat request, because
// readLoop replies to those itself.
func (w *fakeWorker) next() *pb.Frame {
	w.t.Helper()
	select {
	case frame := <-w.frames:
		return frame
	case <-w.done:
		select {
		case frame := <-w.frames:
			return frame
		default:
		}
		w.t.Fatal("connection closed while waiting for a frame")
	case <-time.After(waitFor):
		w.t.Fatal("no frame within", waitFor)
	}
	return nil
}

// expect returns the next queued frame and checks its type.
func (w *fakeWorker) expect(typ string) *pb.Frame {
	w.t.Helper()
	frame := w.next()
	require.Equal(w.t, typ, protocol.TypeOf(frame), "frame: %v", frame)
	return frame
}

// waitClosed waits until the coordinator closed the connection.
func (w *fakeWorker) waitClosed() {
	w.t.Helper()
	select {
	case <-w.done:
	case <-time.After(waitFor):
		w.t.Fatal("connection still open")
	}
}

func (w *fakeWorker) close() {
	w.writeMu.Lock()
	_ = w.conn.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.CloseNormalClosure, protocol.CloseWorkerStopping), time.Now().Add(time.Second))
	w.writeMu.Unlock()
	_ = w.conn.Close()
	<-w.done
}

func outcomeFrame(ref *pb.TaskRef, status pb.Status) *pb.Frame {
	return &pb.Frame{Body: &pb.Frame_TaskOutcome{TaskOutcome: &pb.TaskOutcome{
		Ref: ref, Status: status, Output: []byte("ok\n"), Result: []byte(`{"n":1}`),
		StartedUnixMs: time.Now().UnixMilli(), FinishedUnixMs: time.Now().UnixMilli(),
	}}}
}
