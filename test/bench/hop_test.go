package bench

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/dtf-io/dtf/protocol"
	wirepb "github.com/dtf-io/dtf/protocol/pb"
)

// hopTask is the task id of the task_progress frames of
// BenchmarkPluginHop. No task has it, which does not matter because the
// coordinator handles progress frames without looking the task up.
const hopTask = "bench-hop"

// BenchmarkPluginHop measures the cost of the plugin hop for a stream of
// small task frames. Each iteration of the loop is one task_progress frame
// of under 50 bytes, sent two ways into the same coordinator. The
// coordinator runs its default config except for the heartbeat in the
// benchmark's name, and compresses no frame this small:
//
//   - raw-frames/s: one raw WebSocket client speaks the wire protocol to
//     the coordinator and writes the frames back to back from one
//     goroutine, without a replay buffer.
//   - plugin-frames/s: the dtf-reconnection binary, launched through
//     go-plugin, receives the frames from senders goroutines, like the
//     concurrent tasks of a host. With send=async one goroutine queues
//     them with plugin.BatchSender.SendAsync, as the host sends progress:
//     it does not wait for each frame's result, so the frames queued
//     while a SendBatch call runs share the next one. A frame that the
//     sender dropped fails the run. With send=batch each sender calls
//     BatchSender.Send and waits for its frame's result, as the host sends
//     outcomes, so only frames of different senders share a call. With
//     send=unary each frame is one unary Send call, as hosts sent them
//     before SendBatch.
//
// Each figure counts the frames from the first write or Send until the
// coordinator has handled them all. A final state_sync shows that moment,
// because the coordinator handles a session's frames in order.
// hop-cost-% is 100*(1 - plugin/raw). ns/op covers both runs and is not
// the figure of interest.
//
// The plugin keeps at most replay_buffer_frames (4096 by default) frames
// that the coordinator has not acknowledged. The coordinator acknowledges
// on the frames it sends: heartbeats, and a heartbeat after every 64 task
// frames it received without writing one. Should a coordinator acknowledge
// less often, a run longer than the replay buffer waits for heartbeats,
// which the shorter heartbeat of the second case shortens. The replay=
// case raises replay_buffer_frames above any run's length, so the replay
// buffer never fills. Use -benchtime 20000x or more for the sustained
// rate.
func BenchmarkPluginHop(b *testing.B) {
	cases := []struct {
		hb heartbeat
		// replayFrames is the plugin's replay_buffer_frames; 0 keeps the
		// default.
		replayFrames int
	}{
		{},
		{hb: heartbeat{interval: 200 * time.Millisecond, timeout: time.Second}},
		{replayFrames: 1 << 20},
	}
	for _, c := range cases {
		name := c.hb.String()
		if c.replayFrames > 0 {
			name += fmt.Sprintf("/replay=%d", c.replayFrames)
		}
		b.Run(name+"/send=async/senders=1", func(b *testing.B) {
			benchmarkPluginHop(b, c.hb, c.replayFrames, "async", 1)
		})
		for _, mode := range []string{"batch", "unary"} {
			for _, senders := range []int{1, 4, 64} {
				b.Run(fmt.Sprintf("%s/send=%s/senders=%d", name, mode, senders), func(b *testing.B) {
					benchmarkPluginHop(b, c.hb, c.replayFrames, mode, senders)
				})
			}
		}
	}
}

// benchmarkPluginHop runs one case. Its mode is async, batch or unary.
func benchmarkPluginHop(b *testing.B, hb heartbeat, replayFrames int, mode string, senders int) {
	b.StopTimer()
	coord := startCoordinator(b, hb)
	fields := map[string]any{}
	if replayFrames > 0 {
		fields["replay_buffer_frames"] = replayFrames
	}
	configJSON, err := json.Marshal(fields)
	if err != nil {
		b.Fatal(err)
	}
	worker := startPluginWorkerConfig(b, coord.server.Addr(), "bench-hop-plugin", configJSON)
	worker.connectAndSync(b)
	raw := dialRawSession(b, coord.server.Addr(), "bench-hop-raw")
	b.StartTimer()

	rawElapsed := raw.sendProgress(b, b.N)
	send := worker.send
	switch mode {
	case "async":
		send = worker.sendAsync
	case "unary":
		send = worker.sendUnary
	}
	callsBefore, framesBefore := worker.batches.snapshot()
	pluginElapsed := sendProgressThroughPlugin(b, worker, send, b.N, senders)
	callsAfter, framesAfter := worker.batches.snapshot()
	if dropped := worker.sender.Dropped(); dropped > 0 {
		b.Fatalf("%d of %d progress frames dropped before the plugin queued them", dropped, b.N)
	}

	b.StopTimer()
	rawRate := float64(b.N) / rawElapsed.Seconds()
	pluginRate := float64(b.N) / pluginElapsed.Seconds()
	b.ReportMetric(rawRate, "raw-frames/s")
	b.ReportMetric(pluginRate, "plugin-frames/s")
	b.ReportMetric(100*(1-pluginRate/rawRate), "hop-cost-%")
	// In unary mode only the final state sync goes through SendBatch.
	if calls := callsAfter - callsBefore; mode != "unary" && calls > 0 {
		b.ReportMetric(float64(framesAfter-framesBefore)/float64(calls), "frames/call")
	}
}

// sendProgressThroughPlugin sends n task_progress frames with send from
// senders goroutines, then a state sync, and returns the time until its
// result arrived.
func sendProgressThroughPlugin(
	b *testing.B,
	worker *pluginWorker,
	send func(*wirepb.Frame) error,
	n, senders int,
) time.Duration {
	b.Helper()
	started := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, senders)
	for s := range senders {
		// Sender s sends frames s, s+senders, s+2*senders and so on.
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := s; i < n; i += senders {
				frame := progressFrame(hopTask, "step", float64(i)/float64(n))
				if err := send(frame); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	worker.syncRoundTrip(b)
	return time.Since(started)
}

// rawSession is a worker session held by a raw WebSocket client that
// speaks the wire protocol itself, without a replay buffer.
type rawSession struct {
	conn *websocket.Conn
	// seq is the last sequence number used.
	seq uint64
}

// dialRawSession connects to the coordinator at addr as worker id and
// completes hello, welcome and the state sync. The benchmark's cleanup
// closes the connection.
func dialRawSession(b *testing.B, addr, id string) *rawSession {
	b.Helper()
	url, err := protocol.ConnectURL("http://" + addr)
	if err != nil {
		b.Fatal(err)
	}
	dialer := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}, HandshakeTimeout: waitLimit}
	conn, resp, err := dialer.Dial(url, http.Header{})
	if err != nil {
		b.Fatalf("dial %s: %v", url, err)
	}
	_ = resp.Body.Close()
	s := &rawSession{conn: conn}
	b.Cleanup(func() { _ = conn.Close() })

	s.write(b, &wirepb.Frame{Body: &wirepb.Frame_Hello{Hello: &wirepb.Hello{
		WorkerId:    id,
		Token:       workerToken,
		TaskTypes:   []string{"command"},
		Slots:       1,
		HostVersion: "bench",
	}}})
	if first := s.read(b); first.GetWelcome() == nil {
		b.Fatalf("expected welcome from the coordinator, got %s: %v", protocol.TypeOf(first), first)
	}
	s.syncRoundTrip(b)
	return s
}

// sendProgress writes n task_progress frames, then a state sync, and
// returns the time until its result arrived.
func (s *rawSession) sendProgress(b *testing.B, n int) time.Duration {
	b.Helper()
	started := time.Now()
	for i := range n {
		s.writeTask(b, progressFrame(hopTask, "step", float64(i)/float64(n)))
	}
	s.syncRoundTrip(b)
	return time.Since(started)
}

// syncRoundTrip sends a state sync and reads until its result.
func (s *rawSession) syncRoundTrip(b *testing.B) {
	b.Helper()
	s.writeTask(b, stateSyncFrame())
	for s.read(b).GetStateSyncResult() == nil {
	}
}

// writeTask numbers a task frame and writes it.
func (s *rawSession) writeTask(b *testing.B, frame *wirepb.Frame) {
	s.seq++
	frame.Seq = s.seq
	s.write(b, frame)
}

func (s *rawSession) write(b *testing.B, frame *wirepb.Frame) {
	data, err := protocol.Encode(frame)
	if err != nil {
		b.Fatal(err)
	}
	_ = s.conn.SetWriteDeadline(time.Now().Add(waitLimit))
	if err := s.conn.WriteMessage(websocket.BinaryMessage, data); err != nil {
		b.Fatalf("write %s frame: %v", protocol.TypeOf(frame), err)
	}
}

// read returns the next frame from the coordinator.
func (s *rawSession) read(b *testing.B) *wirepb.Frame {
	_ = s.conn.SetReadDeadline(time.Now().Add(waitLimit))
	_, data, err := s.conn.ReadMessage()
	if err != nil {
		b.Fatalf("read from the coordinator: %v", err)
	}
	frame, err := protocol.Decode(data, 0)
	if err != nil {
		b.Fatal(err)
	}
	return frame
}
