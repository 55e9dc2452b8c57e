package bench

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/dtf-io/dtf/plugin"
	"github.com/dtf-io/dtf/plugin/pb"
	"github.com/dtf-io/dtf/plugins/reconnection/connector"
	"github.com/dtf-io/dtf/protocol"
	wirepb "github.com/dtf-io/dtf/protocol/pb"
)

// stateEvent is a state change of the plugin and the time the benchmark
// received it.
type stateEvent struct {
	change *pb.StateChange
	at     time.Time
}

// frameEvent is a task frame that the plugin forwarded, and the time the
// benchmark received it.
type frameEvent struct {
	frame *wirepb.Frame
	at    time.Time
}

// pluginWorker plays the worker host: it runs the dtf-reconnection binary
// through plugin.Launch, configures it, reads its Events stream and sends
// task frames through a plugin.BatchSender, as host/connector.go does.
type pluginWorker struct {
	id     string
	client *plugin.Client
	conn   pb.ConnectorClient
	sender *plugin.BatchSender
	// batches counts the sender's SendBatch calls and their frames.
	batches *batchCounter
	states  chan stateEvent
	frames  chan frameEvent
}

// batchCounter is a pb.ConnectorClient that counts the SendBatch calls
// made through it and the frames they carried.
type batchCounter struct {
	pb.ConnectorClient
	calls  atomic.Int64
	frames atomic.Int64
}

func (c *batchCounter) SendBatch(
	ctx context.Context,
	req *pb.SendBatchRequest,
	opts ...grpc.CallOption,
) (*pb.SendBatchResponse, error) {
	c.calls.Add(1)
	c.frames.Add(int64(len(req.GetFrames())))
	return c.ConnectorClient.SendBatch(ctx, req, opts...)
}

// snapshot returns the counts so far.
func (c *batchCounter) snapshot() (calls, frames int64) {
	return c.calls.Load(), c.frames.Load()
}

// startPluginWorker launches the plugin for worker id against the
// coordinator at addr, opens its Events stream and stops it when the
// benchmark ends.
func startPluginWorker(b *testing.B, addr, id string, settings pluginSettings) *pluginWorker {
	b.Helper()
	configJSON, err := settings.configJSON()
	if err != nil {
		b.Fatal(err)
	}
	return startPluginWorkerConfig(b, addr, id, configJSON)
}

// startPluginWorkerConfig is startPluginWorker with the plugin's config
// block given as JSON, for fields that pluginSettings does not cover.
func startPluginWorkerConfig(b *testing.B, addr, id string, configJSON []byte) *pluginWorker {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	client, err := plugin.Launch(ctx, plugin.LaunchConfig{
		Name: "reconnection",
		Kind: plugin.KindConnector,
		Path: pluginBinary(b),
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(client.Kill)

	conn := client.Connector()
	_, err = conn.Configure(ctx, &pb.ConnectorConfig{
		Url:         "ws://" + addr,
		WorkerId:    id,
		Token:       workerToken,
		TaskTypes:   []string{"command"},
		Slots:       1,
		HostVersion: "bench",
		ConfigJson:  configJSON,
	})
	if err != nil {
		b.Fatalf("configure reconnection plugin: %v", err)
	}

	streamCtx, cancelStream := context.WithCancel(context.Background())
	stream, err := conn.Events(streamCtx, &pb.Empty{})
	if err != nil {
		cancelStream()
		b.Fatalf("open events stream: %v", err)
	}
	batches := &batchCounter{ConnectorClient: conn}
	w := &pluginWorker{
		id:      id,
		client:  client,
		conn:    conn,
		sender:  plugin.NewBatchSender(batches, plugin.BatchSenderOptions{}),
		batches: batches,
		states:  make(chan stateEvent, 1024),
		frames:  make(chan frameEvent, 1024),
	}
	received := make(chan struct{})
	go func() {
		defer close(received)
		w.receive(streamCtx, stream)
	}()
	b.Cleanup(func() {
		w.sender.Close()
		stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = conn.Stop(stopCtx, &pb.Empty{})
		cancelStream()
		select {
		case <-received:
		case <-time.After(waitLimit):
			b.Errorf("events stream of %s did not end", id)
		}
	})
	return w
}

// receive sorts the Events stream into states and frames until the stream
// ends.
func (w *pluginWorker) receive(ctx context.Context, stream pb.Connector_EventsClient) {
	for {
		event, err := stream.Recv()
		if err != nil {
			return
		}
		at := time.Now()
		switch e := event.GetEvent().(type) {
		case *pb.ConnectorEvent_State:
			select {
			case w.states <- stateEvent{change: e.State, at: at}:
			case <-ctx.Done():
				return
			}
		case *pb.ConnectorEvent_Frame:
			frame, err := protocol.Decode(e.Frame, 0)
			if err != nil {
				continue
			}
			select {
			case w.frames <- frameEvent{frame: frame, at: at}:
			case <-ctx.Done():
				return
			}
		}
	}
}

// waitState returns the next state change for which match holds, skipping
// others.
func (w *pluginWorker) waitState(b *testing.B, what string, match func(*pb.StateChange) bool) stateEvent {
	b.Helper()
	deadline := time.NewTimer(waitLimit)
	defer deadline.Stop()
	var seen []string
	for {
		select {
		case event := <-w.states:
			if match(event.change) {
				return event
			}
			seen = append(seen, fmt.Sprintf("%s(%s)", event.change.GetState(), event.change.GetReason()))
		case <-deadline.C:
			b.Fatalf("%s: no %s within %s; states seen: %s", w.id, what, waitLimit, strings.Join(seen, ", "))
		}
	}
}

// waitFrame returns the next forwarded frame of type frameType, skipping
// others.
func (w *pluginWorker) waitFrame(b *testing.B, frameType string) frameEvent {
	b.Helper()
	deadline := time.NewTimer(waitLimit)
	defer deadline.Stop()
	for {
		select {
		case event := <-w.frames:
			if protocol.TypeOf(event.frame) == frameType {
				return event
			}
		case <-deadline.C:
			b.Fatalf("%s: no %s frame within %s", w.id, frameType, waitLimit)
		}
	}
}

// send passes one task frame to the plugin through the batching sender,
// which shares SendBatch calls among concurrent callers.
func (w *pluginWorker) send(frame *wirepb.Frame) error {
	data, err := protocol.Encode(frame)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := w.sender.Send(ctx, data); err != nil {
		return fmt.Errorf("send %s frame: %w", protocol.TypeOf(frame), err)
	}
	return nil
}

// sendAsync queues one task frame in the batching sender without waiting
// for the plugin's result, as the host sends task_started and progress. It
// blocks only while the sender's queue is full. A frame that the plugin
// rejects later is counted in the sender's Dropped.
func (w *pluginWorker) sendAsync(frame *wirepb.Frame) error {
	data, err := protocol.Encode(frame)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := w.sender.SendAsync(ctx, data); err != nil {
		return fmt.Errorf("queue %s frame: %w", protocol.TypeOf(frame), err)
	}
	return nil
}

// sendUnary passes one task frame to the plugin's unary Send, one call per
// frame, as hosts did before SendBatch.
func (w *pluginWorker) sendUnary(frame *wirepb.Frame) error {
	data, err := protocol.Encode(frame)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if _, err := w.conn.Send(ctx, &pb.SendRequest{Frame: data}); err != nil {
		return fmt.Errorf("send %s frame: %w", protocol.TypeOf(frame), err)
	}
	return nil
}

// connectAndSync waits for the first session and completes its state sync,
// as the host does after a new session, so the coordinator counts the
// worker as ready.
func (w *pluginWorker) connectAndSync(b *testing.B) {
	b.Helper()
	w.waitState(b, "connected state", isConnected)
	w.syncRoundTrip(b)
}

func isConnected(change *pb.StateChange) bool {
	return change.GetState() == connector.StateConnected
}

func isBackingOff(change *pb.StateChange) bool {
	return change.GetState() == connector.StateBackingOff
}

func stateSyncFrame() *wirepb.Frame {
	return &wirepb.Frame{Body: &wirepb.Frame_StateSync{StateSync: &wirepb.StateSync{}}}
}

// progressFrame returns the small task frame that the benchmarks send, a
// task_progress of under 50 bytes when encoded.
func progressFrame(taskID, message string, fraction float64) *wirepb.Frame {
	return &wirepb.Frame{Body: &wirepb.Frame_TaskProgress{TaskProgress: &wirepb.TaskProgress{
		Ref:      &wirepb.TaskRef{TaskId: taskID, Attempt: 1},
		Fraction: fraction,
		Message:  message,
	}}}
}

// syncRoundTrip sends a state sync and waits for its result, so both sides
// have just received a frame.
func (w *pluginWorker) syncRoundTrip(b *testing.B) {
	b.Helper()
	if err := w.send(stateSyncFrame()); err != nil {
		b.Fatal(err)
	}
	w.waitFrame(b, "state_sync_result")
}
