package plugin

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/dtf-io/dtf/plugin/pb"
)

// batchWait bounds every wait of the batch sender tests.
const batchWait = 10 * time.Second

// batchServer is a connector that implements SendBatch over frames that
// are plain strings. A frame starting with "bad" is rejected as invalid,
// one starting with "stuck" waits for the request's timeout_ms and is then
// rejected with DeadlineExceeded, and every other frame is accepted. With
// noSession set, the first frame of every batch is rejected as Unavailable.
type batchServer struct {
	pb.UnimplementedConnectorServer

	// holdFirst, when set, makes the first SendBatch call report on held
	// and wait for release or the end of its context.
	holdFirst bool
	held      chan struct{}
	release   chan struct{}
	noSession atomic.Bool

	mu       sync.Mutex
	batches  [][]string
	timeouts []int64
	accepted []string
}

func newBatchServer(holdFirst bool) *batchServer {
	return &batchServer{holdFirst: holdFirst, held: make(chan struct{}, 1), release: make(chan struct{})}
}

func (s *batchServer) SendBatch(ctx context.Context, req *pb.SendBatchRequest) (*pb.SendBatchResponse, error) {
	frames := make([]string, len(req.GetFrames()))
	for i, frame := range req.GetFrames() {
		frames[i] = string(frame)
	}
	s.mu.Lock()
	s.batches = append(s.batches, frames)
	s.timeouts = append(s.timeouts, req.GetTimeoutMs())
	first := len(s.batches) == 1
	s.mu.Unlock()

	if first && s.holdFirst {
		s.held <- struct{}{}
		select {
		case <-s.release:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	if s.noSession.Load() {
		return &pb.SendBatchResponse{ErrorCode: uint32(codes.Unavailable), ErrorMessage: "no session"}, nil
	}
	for i, frame := range frames {
		switch {
		case strings.HasPrefix(frame, "bad"):
			return rejection(i, codes.InvalidArgument, "invalid frame"), nil
		case strings.HasPrefix(frame, "stuck"):
			timer := time.NewTimer(time.Duration(req.GetTimeoutMs()) * time.Millisecond)
			select {
			case <-timer.C:
			case <-ctx.Done():
			}
			timer.Stop()
			return rejection(i, codes.DeadlineExceeded, "send queue still full"), nil
		}
		s.mu.Lock()
		s.accepted = append(s.accepted, frame)
		s.mu.Unlock()
	}
	return &pb.SendBatchResponse{Accepted: uint32(len(frames))}, nil
}

func rejection(index int, code codes.Code, message string) *pb.SendBatchResponse {
	return &pb.SendBatchResponse{Accepted: uint32(index), ErrorCode: uint32(code), ErrorMessage: message}
}

func (s *batchServer) calls() [][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]string(nil), s.batches...)
}

func (s *batchServer) acceptedFrames() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.accepted...)
}

// waitHeld waits until the first SendBatch call is held.
func (s *batchServer) waitHeld(t *testing.T) {
	t.Helper()
	select {
	case <-s.held:
	case <-time.After(batchWait):
		t.Fatal("the first SendBatch call never arrived")
	}
}

// unaryServer is a connector built before SendBatch: it serves Send only.
type unaryServer struct {
	pb.UnimplementedConnectorServer
	mu     sync.Mutex
	frames []string
}

func (s *unaryServer) Send(_ context.Context, req *pb.SendRequest) (*pb.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.frames = append(s.frames, string(req.GetFrame()))
	return &pb.Empty{}, nil
}

// serveConnector serves a connector on an in-memory listener and returns
// a client of it. calls, when not nil, counts the client's calls per
// method name.
func serveConnector(t *testing.T, register func(*grpc.Server), calls *methodCounter) pb.ConnectorClient {
	t.Helper()
	listener := bufconn.Listen(1 << 20)
	server := grpc.NewServer()
	register(server)
	go func() { _ = server.Serve(listener) }()

	opts := []grpc.DialOption{
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return listener.DialContext(ctx)
		}),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	}
	if calls != nil {
		opts = append(opts, grpc.WithUnaryInterceptor(calls.intercept))
	}
	conn, err := grpc.NewClient("passthrough:///connector", opts...)
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = conn.Close()
		server.Stop()
	})
	return pb.NewConnectorClient(conn)
}

// methodCounter counts a client's unary calls by the method's last path
// element.
type methodCounter struct {
	mu    sync.Mutex
	count map[string]int
}

func (c *methodCounter) intercept(ctx context.Context, method string, req, reply any,
	cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption,
) error {
	c.mu.Lock()
	if c.count == nil {
		c.count = make(map[string]int)
	}
	c.count[method[strings.LastIndex(method, "/")+1:]]++
	c.mu.Unlock()
	return invoker(ctx, method, req, reply, cc, opts...)
}

func (c *methodCounter) get(method string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.count[method]
}

// startSenders calls Send once for each frame, each from its own
// goroutine, and returns a function that waits for the results by frame.
// It starts the callers one at a time and waits until each frame is in the
// sender's buffer, so the frames reach the goroutine in the order given.
// Once the buffer is full, the remaining callers block in an order that
// the test does not control.
func startSenders(t *testing.T, sender *BatchSender, frames []string, timeout time.Duration) func() map[string]error {
	t.Helper()
	var mu sync.Mutex
	results := make(map[string]error, len(frames))
	var wg sync.WaitGroup
	for _, frame := range frames {
		buffered := len(sender.requests)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			err := sender.Send(ctx, []byte(frame))
			mu.Lock()
			results[frame] = err
			mu.Unlock()
		}()
		if buffered < cap(sender.requests) {
			require.Eventually(t, func() bool { return len(sender.requests) == buffered+1 },
				batchWait, time.Millisecond, "frame %s never reached the sender", frame)
		}
	}
	return func() map[string]error {
		wg.Wait()
		return results
	}
}

// sendAll calls Send once for each frame, all at once, and returns the
// results by frame.
func sendAll(sender *BatchSender, frames []string) map[string]error {
	var mu sync.Mutex
	results := make(map[string]error, len(frames))
	var wg sync.WaitGroup
	for _, frame := range frames {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := sendOne(sender, frame)
			mu.Lock()
			results[frame] = err
			mu.Unlock()
		}()
	}
	wg.Wait()
	return results
}

func newSender(t *testing.T, client pb.ConnectorClient, opts BatchSenderOptions) *BatchSender {
	sender := NewBatchSender(client, opts)
	t.Cleanup(sender.Close)
	return sender
}

func sendOne(sender *BatchSender, frame string) error {
	ctx, cancel := context.WithTimeout(context.Background(), batchWait)
	defer cancel()
	return sender.Send(ctx, []byte(frame))
}

func frameNames(prefix string, n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%s-%02d", prefix, i)
	}
	return names
}

func TestBatchSenderLoneFrame(t *testing.T) {
	server := newBatchServer(false)
	client := serveConnector(t, func(s *grpc.Server) { pb.RegisterConnectorServer(s, server) }, nil)
	sender := newSender(t, client, BatchSenderOptions{})

	require.NoError(t, sendOne(sender, "only"))
	assert.Equal(t, [][]string{{"only"}}, server.calls())
	server.mu.Lock()
	timeout := server.timeouts[0]
	server.mu.Unlock()
	assert.Positive(t, timeout, "timeout_ms must carry the caller's deadline")
	assert.LessOrEqual(t, timeout, batchWait.Milliseconds())
}

func TestBatchSenderCombinesWaitingFrames(t *testing.T) {
	server := newBatchServer(true)
	client := serveConnector(t, func(s *grpc.Server) { pb.RegisterConnectorServer(s, server) }, nil)
	sender := newSender(t, client, BatchSenderOptions{})

	firstDone := make(chan error, 1)
	go func() { firstDone <- sendOne(sender, "first") }()
	server.waitHeld(t)
	waiting := frameNames("frame", 10)
	results := startSenders(t, sender, waiting, batchWait)
	close(server.release)

	require.NoError(t, <-firstDone)
	for frame, err := range results() {
		assert.NoError(t, err, "frame %s", frame)
	}
	calls := server.calls()
	require.Len(t, calls, 2, "the ten waiting frames must share one call")
	assert.ElementsMatch(t, waiting, calls[1])
}

func TestBatchSenderBounds(t *testing.T) {
	// Each frame of frameNames is 4 bytes long.
	tests := []struct {
		name   string
		opts   BatchSenderOptions
		frames []string
		// maxSize bounds every call after the held one, and firstSize is
		// the size of the first of them.
		maxSize, firstSize int
	}{
		{"frames", BatchSenderOptions{MaxFrames: 4}, frameNames("f", 10), 4, 4},
		{"bytes", BatchSenderOptions{MaxBytes: 10}, frameNames("f", 5), 2, 2},
		{"large frame alone", BatchSenderOptions{MaxBytes: 10}, []string{"over ten bytes", "f-00"}, 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			server := newBatchServer(true)
			client := serveConnector(t, func(s *grpc.Server) { pb.RegisterConnectorServer(s, server) }, nil)
			sender := newSender(t, client, tt.opts)

			firstDone := make(chan error, 1)
			go func() { firstDone <- sendOne(sender, "1st") }()
			server.waitHeld(t)
			results := startSenders(t, sender, tt.frames, batchWait)
			close(server.release)

			require.NoError(t, <-firstDone)
			for frame, err := range results() {
				assert.NoError(t, err, "frame %s", frame)
			}
			calls := server.calls()[1:]
			require.NotEmpty(t, calls)
			assert.Len(t, calls[0], tt.firstSize)
			total := 0
			for _, call := range calls {
				assert.LessOrEqual(t, len(call), tt.maxSize, "call %v", call)
				total += len(call)
			}
			assert.Equal(t, len(tt.frames), total)
			assert.ElementsMatch(t, append([]string{"1st"}, tt.frames...), server.acceptedFrames())
		})
	}
}

func TestBatchSenderRejectionStopsBatch(t *testing.T) {
	server := newBatchServer(true)
	client := serveConnector(t, func(s *grpc.Server) { pb.RegisterConnectorServer(s, server) }, nil)
	sender := newSender(t, client, BatchSenderOptions{})

	firstDone := make(chan error, 1)
	go func() { firstDone <- sendOne(sender, "first") }()
	server.waitHeld(t)
	good := frameNames("good", 6)
	// startSenders keeps the order, so "bad" is in the middle of the
	// second call.
	results := startSenders(t, sender, good[:3], batchWait)
	badResult := startSenders(t, sender, []string{"bad"}, batchWait)
	moreResults := startSenders(t, sender, good[3:], batchWait)
	close(server.release)

	require.NoError(t, <-firstDone)
	assert.Equal(t, codes.InvalidArgument, status.Code(badResult()["bad"]))
	for frame, err := range results() {
		assert.NoError(t, err, "frame %s", frame)
	}
	for frame, err := range moreResults() {
		assert.NoError(t, err, "frame %s", frame)
	}

	calls := server.calls()
	require.Len(t, calls, 3)
	assert.Equal(t, []string{"good-00", "good-01", "good-02", "bad", "good-03", "good-04", "good-05"}, calls[1])
	assert.Equal(t, good[3:], calls[2], "the frames after the rejected one must be sent again, in order")
	assert.ElementsMatch(t, append([]string{"first"}, good...), server.acceptedFrames(),
		"each good frame must be accepted exactly once")
}

func TestBatchSenderNoSessionFailsAll(t *testing.T) {
	server := newBatchServer(true)
	client := serveConnector(t, func(s *grpc.Server) { pb.RegisterConnectorServer(s, server) }, nil)
	sender := newSender(t, client, BatchSenderOptions{})

	firstDone := make(chan error, 1)
	go func() { firstDone <- sendOne(sender, "first") }()
	server.waitHeld(t)
	results := startSenders(t, sender, frameNames("frame", 5), batchWait)
	server.noSession.Store(true)
	close(server.release)

	assert.Equal(t, codes.Unavailable, status.Code(<-firstDone))
	for frame, err := range results() {
		assert.Equal(t, codes.Unavailable, status.Code(err), "frame %s: %v", frame, err)
	}
	assert.Len(t, server.calls(), 2, "frames rejected for want of a session are not sent again")
}

func TestBatchSenderDeadlineRetriesLaterFrames(t *testing.T) {
	server := newBatchServer(true)
	client := serveConnector(t, func(s *grpc.Server) { pb.RegisterConnectorServer(s, server) }, nil)
	sender := newSender(t, client, BatchSenderOptions{})

	firstDone := make(chan error, 1)
	go func() { firstDone <- sendOne(sender, "first") }()
	server.waitHeld(t)
	// The stuck frame's caller gives up long before the other's.
	const stuckTimeout = 500 * time.Millisecond
	stuckResult := startSenders(t, sender, []string{"stuck"}, stuckTimeout)
	laterResult := startSenders(t, sender, []string{"later"}, batchWait)
	close(server.release)

	require.NoError(t, <-firstDone)
	assert.Equal(t, codes.DeadlineExceeded, status.Code(stuckResult()["stuck"]))
	assert.NoError(t, laterResult()["later"])

	calls := server.calls()
	require.Len(t, calls, 3)
	assert.Equal(t, []string{"stuck", "later"}, calls[1])
	assert.Equal(t, []string{"later"}, calls[2])
	server.mu.Lock()
	timeout := server.timeouts[1]
	server.mu.Unlock()
	assert.Positive(t, timeout)
	assert.LessOrEqual(t, timeout, stuckTimeout.Milliseconds(),
		"the second call must wait no longer than its earliest caller")
}

func TestBatchSenderFallsBackToSend(t *testing.T) {
	tests := []struct {
		name     string
		register func(*grpc.Server, *unaryServer)
	}{
		{"unimplemented method", func(s *grpc.Server, impl *unaryServer) {
			pb.RegisterConnectorServer(s, impl)
		}},
		{"unknown method", func(s *grpc.Server, impl *unaryServer) {
			// A plugin generated from the service before SendBatch existed
			// does not register the method at all.
			desc := pb.Connector_ServiceDesc
			desc.Methods = nil
			for _, method := range pb.Connector_ServiceDesc.Methods {
				if method.MethodName != "SendBatch" {
					desc.Methods = append(desc.Methods, method)
				}
			}
			s.RegisterService(&desc, impl)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			impl := &unaryServer{}
			var calls methodCounter
			client := serveConnector(t, func(s *grpc.Server) { tt.register(s, impl) }, &calls)
			sender := newSender(t, client, BatchSenderOptions{})

			frames := frameNames("frame", 8)
			for frame, err := range sendAll(sender, frames) {
				assert.NoError(t, err, "frame %s", frame)
			}
			require.NoError(t, sendOne(sender, "after"))

			impl.mu.Lock()
			received := append([]string(nil), impl.frames...)
			impl.mu.Unlock()
			assert.ElementsMatch(t, append(frames, "after"), received)
			assert.Equal(t, 1, calls.get("SendBatch"), "SendBatch must be tried once, then never again")
			assert.Equal(t, len(frames)+1, calls.get("Send"))
		})
	}
}

func TestBatchSenderClose(t *testing.T) {
	server := newBatchServer(true)
	client := serveConnector(t, func(s *grpc.Server) { pb.RegisterConnectorServer(s, server) }, nil)
	sender := NewBatchSender(client, BatchSenderOptions{})

	firstDone := make(chan error, 1)
	go func() { firstDone <- sendOne(sender, "in-flight") }()
	server.waitHeld(t)
	results := startSenders(t, sender, []string{"waiting"}, batchWait)

	sender.Close()
	assert.ErrorIs(t, <-firstDone, ErrSenderClosed)
	assert.ErrorIs(t, results()["waiting"], ErrSenderClosed)
	assert.ErrorIs(t, sendOne(sender, "late"), ErrSenderClosed)
	sender.Close() // a second Close returns at once
}

func TestBatchSenderCallerCancels(t *testing.T) {
	server := newBatchServer(true)
	client := serveConnector(t, func(s *grpc.Server) { pb.RegisterConnectorServer(s, server) }, nil)
	sender := newSender(t, client, BatchSenderOptions{})

	firstDone := make(chan error, 1)
	go func() { firstDone <- sendOne(sender, "first") }()
	server.waitHeld(t)

	ctx, cancel := context.WithCancel(context.Background())
	cancelled := make(chan error, 1)
	go func() { cancelled <- sender.Send(ctx, []byte("cancelled")) }()
	require.Eventually(t, func() bool { return len(sender.requests) == 1 }, batchWait, time.Millisecond)
	cancel()
	select {
	case err := <-cancelled:
		assert.Equal(t, codes.Canceled, status.Code(err), "got %v", err)
	case <-time.After(batchWait):
		t.Fatal("Send did not return after its context was cancelled")
	}

	close(server.release)
	require.NoError(t, <-firstDone)
	require.NoError(t, sendOne(sender, "next"))
	for _, call := range server.calls() {
		assert.NotContains(t, call, "cancelled", "a frame whose caller gave up must not be sent")
	}
}

// newAsyncLogger returns a logger that writes to out at Info level.
func newAsyncLogger(out *syncBuffer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Output: out, Level: hclog.Info})
}

func sendAsyncOne(t *testing.T, sender *BatchSender, frame string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), batchWait)
	defer cancel()
	require.NoError(t, sender.SendAsync(ctx, []byte(frame)), "frame %s", frame)
}

func TestBatchSenderAsyncKeepsCallOrder(t *testing.T) {
	server := newBatchServer(true)
	client := serveConnector(t, func(s *grpc.Server) { pb.RegisterConnectorServer(s, server) }, nil)
	sender := newSender(t, client, BatchSenderOptions{MaxFrames: 16, AsyncTimeout: batchWait})

	// The first call is held, so the frames after it wait in the queue
	// and leave in calls of up to 16 frames once it is released.
	sendAsyncOne(t, sender, "first")
	server.waitHeld(t)
	var order []string
	order = append(order, "first")
	for _, frame := range frameNames("progress", 40) {
		sendAsyncOne(t, sender, frame)
		order = append(order, frame)
	}
	syncDone := make(chan error, 1)
	go func() { syncDone <- sendOne(sender, "outcome") }()
	require.Eventually(t, func() bool { return len(sender.requests) == 41 }, batchWait, time.Millisecond)
	order = append(order, "outcome")
	close(server.release)

	select {
	case err := <-syncDone:
		require.NoError(t, err)
	case <-time.After(batchWait):
		t.Fatal("the synchronous frame behind the asynchronous ones was never accepted")
	}
	for _, frame := range frameNames("late", 20) {
		sendAsyncOne(t, sender, frame)
		order = append(order, frame)
	}
	require.NoError(t, sendOne(sender, "last"))
	order = append(order, "last")

	assert.Equal(t, order, server.acceptedFrames(), "frames must reach the plugin in the order of the calls")
	assert.Greater(t, len(server.calls()), 2, "the held frames must leave in more than one call")
	assert.Zero(t, sender.Dropped())
}

func TestBatchSenderAsyncBackpressure(t *testing.T) {
	server := newBatchServer(true)
	client := serveConnector(t, func(s *grpc.Server) { pb.RegisterConnectorServer(s, server) }, nil)
	sender := newSender(t, client, BatchSenderOptions{MaxFrames: 2, QueuedFrames: 4, AsyncTimeout: batchWait})

	sendAsyncOne(t, sender, "first")
	server.waitHeld(t)
	queued := frameNames("queued", 4)
	for _, frame := range queued {
		sendAsyncOne(t, sender, frame)
	}

	// The queue is full: a caller that gives up gets its context's
	// status, and the frame is counted as dropped.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	err := sender.SendAsync(ctx, []byte("gave-up"))
	cancel()
	assert.Equal(t, codes.DeadlineExceeded, status.Code(err), "got %v", err)
	assert.EqualValues(t, 1, sender.Dropped())

	// A caller without a deadline blocks until the queue has room.
	blocked := make(chan error, 1)
	go func() { blocked <- sender.SendAsync(context.Background(), []byte("blocked")) }()
	select {
	case err := <-blocked:
		t.Fatalf("SendAsync returned %v while the queue was full", err)
	default:
	}
	close(server.release)
	select {
	case err := <-blocked:
		require.NoError(t, err)
	case <-time.After(batchWait):
		t.Fatal("SendAsync stayed blocked after the queue drained")
	}

	require.NoError(t, sendOne(sender, "sync"))
	want := slices.Concat([]string{"first"}, queued, []string{"blocked", "sync"})
	assert.Equal(t, want, server.acceptedFrames(), "no frame may be dropped or reordered")
	assert.EqualValues(t, 1, sender.Dropped())
}

func TestBatchSenderAsyncCountsDrops(t *testing.T) {
	var logs syncBuffer
	server := newBatchServer(false)
	client := serveConnector(t, func(s *grpc.Server) { pb.RegisterConnectorServer(s, server) }, nil)
	sender := newSender(t, client, BatchSenderOptions{AsyncTimeout: 50 * time.Millisecond, Logger: newAsyncLogger(&logs)})

	// Rejected by the plugin as invalid.
	for _, frame := range frameNames("bad", 5) {
		sendAsyncOne(t, sender, frame)
	}
	// Rejected because the plugin's queue stays full past AsyncTimeout.
	sendAsyncOne(t, sender, "stuck")
	// Rejected because there is no session.
	require.NoError(t, sendOne(sender, "barrier"))
	server.noSession.Store(true)
	sendAsyncOne(t, sender, "no-session")
	require.Eventually(t, func() bool { return sender.Dropped() == 7 }, batchWait, time.Millisecond,
		"dropped %d frames", sender.Dropped())

	server.noSession.Store(false)
	require.NoError(t, sendOne(sender, "good"))
	assert.Equal(t, []string{"barrier", "good"}, server.acceptedFrames())
	assert.EqualValues(t, 7, sender.Dropped(), "accepted frames must not count")
	assert.Equal(t, 1, strings.Count(logs.String(), "dropped best-effort frames"),
		"drops within dropLogInterval must be logged once:\n%s", logs.String())
}

func TestBatchSenderAsyncCloseCounts(t *testing.T) {
	server := newBatchServer(true)
	client := serveConnector(t, func(s *grpc.Server) { pb.RegisterConnectorServer(s, server) }, nil)
	sender := NewBatchSender(client, BatchSenderOptions{AsyncTimeout: batchWait})

	sendAsyncOne(t, sender, "in-flight")
	server.waitHeld(t)
	for _, frame := range frameNames("queued", 3) {
		sendAsyncOne(t, sender, frame)
	}
	sender.Close()
	assert.EqualValues(t, 4, sender.Dropped(), "the frame in flight and the queued ones must count")

	err := sender.SendAsync(context.Background(), []byte("late"))
	assert.ErrorIs(t, err, ErrSenderClosed)
	assert.EqualValues(t, 5, sender.Dropped())
}

func TestBatchSenderAsyncFallsBackToSend(t *testing.T) {
	impl := &unaryServer{}
	client := serveConnector(t, func(s *grpc.Server) { pb.RegisterConnectorServer(s, impl) }, nil)
	sender := newSender(t, client, BatchSenderOptions{AsyncTimeout: batchWait})

	frames := frameNames("progress", 20)
	for _, frame := range frames {
		sendAsyncOne(t, sender, frame)
	}
	require.NoError(t, sendOne(sender, "outcome"))
	require.Eventually(t, func() bool {
		impl.mu.Lock()
		defer impl.mu.Unlock()
		return len(impl.frames) == len(frames)+1
	}, batchWait, time.Millisecond)

	impl.mu.Lock()
	received := append([]string(nil), impl.frames...)
	impl.mu.Unlock()
	// After the fallback, the outcome's caller sends it itself, so only
	// the order of the asynchronous frames is kept.
	assert.Equal(t, frames, slices.DeleteFunc(received, func(f string) bool { return f == "outcome" }))
	assert.Zero(t, sender.Dropped())
}
