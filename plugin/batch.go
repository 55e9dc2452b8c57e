package plugin

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dtf-io/dtf/plugin/pb"
)

// Default bounds of one SendBatch call of a BatchSender.
const (
	// DefaultBatchFrames bounds the frames of one call. With task frames of
	// a few dozen bytes, 1024 of them fill well under one gRPC message. A
	// call that carries more frames than the connector's send queue holds
	// waits inside the plugin while its writer drains the queue, so fewer
	// and longer calls keep the writer busy. In interleaved benchmark runs
	// 1024 instead of 256 raised the median plugin hop from 138,000 to
	// 195,000 small frames/s (docs/benchmarks.md).
	DefaultBatchFrames = 1024
	// DefaultBatchBytes bounds the frame bytes of one call, so a batch of
	// large outcomes stays far below MaxMessageBytes and does not hold up
	// the small frames behind it for long.
	DefaultBatchBytes = 1 << 20
	// DefaultQueuedFrames bounds the frames that wait for the sender's
	// goroutine. A full queue blocks Send and SendAsync, so a producer
	// faster than the plugin slows down instead of losing frames.
	DefaultQueuedFrames = 2048
	// DefaultAsyncTimeout bounds the time from a SendAsync call until the
	// plugin queued the frame, so a stalled plugin drops stale progress
	// reports instead of delivering them late.
	DefaultAsyncTimeout = time.Second
)

// dropLogInterval is the minimum time between two log messages about
// dropped SendAsync frames. The drops in between are only counted.
const dropLogInterval = 10 * time.Second

// batchCallGrace is added to the earliest caller deadline of a batch to
// form the deadline of its SendBatch call. The plugin stops waiting at the
// earliest deadline, through the request's timeout_ms, and the grace leaves
// time for its response to arrive, so only a hung plugin reaches it.
const batchCallGrace = 5 * time.Second

// ErrSenderClosed is returned by BatchSender.Send after Close, and to the
// callers whose frames were still waiting when Close was called.
var ErrSenderClosed = errors.New("batch sender closed: the connector plugin's events stream ended")

// errUseSend is the result that makes a waiting caller pass its frame to
// the unary Send, because the plugin does not implement SendBatch.
var errUseSend = errors.New("plugin does not implement SendBatch")

// BatchSenderOptions configure a BatchSender. Zero fields take the
// defaults.
type BatchSenderOptions struct {
	// MaxFrames bounds the frames of one SendBatch call; default
	// DefaultBatchFrames.
	MaxFrames int
	// MaxBytes bounds the frame bytes of one SendBatch call; default
	// DefaultBatchBytes. A single larger frame goes in a call of its own.
	// Values above half of MaxMessageBytes are lowered to it, which leaves
	// room for the message's framing.
	MaxBytes int
	// QueuedFrames bounds the frames that wait for the sender's goroutine,
	// beyond the MaxFrames of the call it prepares; default
	// DefaultQueuedFrames.
	QueuedFrames int
	// AsyncTimeout bounds the time from a SendAsync call until the plugin
	// queued its frame, the wait for room in the sender's queue included;
	// default DefaultAsyncTimeout.
	AsyncTimeout time.Duration
	// Logger receives one message when the plugin turns out not to
	// implement SendBatch, and rate-limited warnings about dropped
	// SendAsync frames; nil discards them.
	Logger hclog.Logger
}

// BatchSender passes task frames to a connector plugin with as few gRPC
// calls as the callers allow. Each Send blocks until the plugin accepted or
// rejected that frame, as the unary Connector.Send does. One goroutine takes
// the frames that are waiting when the previous call returns and queues
// them with one SendBatch call, so a lone frame leaves at once and
// concurrent callers share calls.
//
// Frames of one call are queued in order, and a frame waits until the
// frames before it in the same call are queued or rejected. A frame that the
// plugin did not reach because an earlier frame was rejected goes in the
// next call, unless its caller has given up.
//
// SendAsync is the path for best-effort frames such as progress: it
// queues the frame and returns without waiting for the plugin. Frames of
// Send and SendAsync share one queue, so the plugin receives them in the
// order of the calls. A SendAsync frame that the plugin rejects, or that
// does not reach it within AsyncTimeout, is counted in Dropped and logged
// at most once per dropLogInterval.
//
// A plugin built before SendBatch existed returns Unimplemented. From then
// on every Send calls the unary Send from its own goroutine, and the
// goroutine passes SendAsync frames to the unary Send one by one.
//
// BatchSender is safe for concurrent use. Close stops its goroutine.
type BatchSender struct {
	client    pb.ConnectorClient
	maxFrames int
	maxBytes  int
	logger    hclog.Logger
	// asyncTimeout is AsyncTimeout of the options.
	asyncTimeout time.Duration

	// requests carries each caller's frame to the goroutine. Its buffer
	// holds QueuedFrames frames, and callers beyond it block, so the
	// callers themselves bound what waits.
	requests chan *batchItem
	// callCtx is the parent of every SendBatch call; Close cancels it.
	callCtx    context.Context
	cancelCall context.CancelFunc
	closed     chan struct{}
	closeOnce  sync.Once
	done       chan struct{}

	// unary is set once the plugin returned Unimplemented for SendBatch.
	unary atomic.Bool

	// dropped counts the SendAsync frames that did not reach the plugin's
	// queue. dropLogMu guards the rate limit of their log messages.
	dropped   atomic.Uint64
	dropLogMu sync.Mutex
	// lastDropLog is when drops were last logged, and unlogged counts
	// the drops since then.
	lastDropLog time.Time
	unlogged    uint64
}

// batchItem is one caller's frame on its way through the goroutine.
type batchItem struct {
	ctx      context.Context
	frame    []byte
	deadline time.Time // zero when ctx has none
	// async marks a SendAsync frame, which has no caller waiting: ctx is
	// context.Background, deadline is set and result is nil.
	async bool
	// result receives exactly one value: nil when the plugin accepted the
	// frame, errUseSend, or the error to return.
	result chan error
}

// expired reports whether the caller can no longer use a result at now.
func (it *batchItem) expired(now time.Time) bool {
	if it.ctx.Err() != nil {
		return true
	}
	return !it.deadline.IsZero() && !now.Before(it.deadline)
}

// NewBatchSender returns a BatchSender for client and starts its
// goroutine. Call Close when the plugin's connection ends.
func NewBatchSender(client pb.ConnectorClient, opts BatchSenderOptions) *BatchSender {
	if opts.MaxFrames <= 0 {
		opts.MaxFrames = DefaultBatchFrames
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultBatchBytes
	}
	opts.MaxBytes = min(opts.MaxBytes, MaxMessageBytes/2)
	if opts.QueuedFrames <= 0 {
		opts.QueuedFrames = DefaultQueuedFrames
	}
	if opts.AsyncTimeout <= 0 {
		opts.AsyncTimeout = DefaultAsyncTimeout
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	callCtx, cancel := context.WithCancel(context.Background())
	s := &BatchSender{
		client:       client,
		maxFrames:    opts.MaxFrames,
		maxBytes:     opts.MaxBytes,
		logger:       opts.Logger,
		asyncTimeout: opts.AsyncTimeout,
		requests:     make(chan *batchItem, opts.QueuedFrames),
		callCtx:      callCtx,
		cancelCall:   cancel,
		closed:       make(chan struct{}),
		done:         make(chan struct{}),
	}
	go s.run()
	return s
}

// Send passes one task frame, a marshalled dtf.wire.v1.Frame, to the
// plugin and returns once the plugin queued it (nil) or rejected it. A
// rejection is the gRPC status that Connector.Send would have returned. When
// ctx ends first, Send returns its status (Canceled or DeadlineExceeded),
// and the frame may still be queued, as with a unary Send whose deadline
// passed during the call.
func (s *BatchSender) Send(ctx context.Context, frame []byte) error {
	if s.unary.Load() {
		return s.sendUnary(ctx, frame)
	}
	item := &batchItem{ctx: ctx, frame: frame, result: make(chan error, 1)}
	item.deadline, _ = ctx.Deadline()

	select {
	case s.requests <- item:
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	case <-s.closed:
		return ErrSenderClosed
	}

	// The goroutine delivers a result for every frame it took before done
	// closes. A frame left in the buffer after that gets none.
	var err error
	select {
	case err = <-item.result:
	case <-ctx.Done():
		err = resultOr(item, status.FromContextError(ctx.Err()).Err())
	case <-s.done:
		err = resultOr(item, ErrSenderClosed)
	}
	if errors.Is(err, errUseSend) {
		return s.sendUnary(ctx, frame)
	}
	return err
}

// SendAsync queues one best-effort task frame and returns without waiting
// for the plugin. It blocks while the sender's queue is full, until ctx
// ends, and then returns ctx's status. It returns ErrSenderClosed after
// Close. Every frame that does not reach the plugin's queue, whether
// SendAsync returned an error for it or the plugin rejected it later, is
// counted in Dropped.
func (s *BatchSender) SendAsync(ctx context.Context, frame []byte) error {
	// Checked first, because a select between a closed channel and a
	// buffer with room picks either.
	select {
	case <-s.closed:
		s.drop(ErrSenderClosed)
		return ErrSenderClosed
	default:
	}
	item := &batchItem{
		ctx:      context.Background(),
		frame:    frame,
		deadline: time.Now().Add(s.asyncTimeout),
		async:    true,
	}
	select {
	case s.requests <- item:
	case <-ctx.Done():
		err := status.FromContextError(ctx.Err()).Err()
		s.drop(err)
		return err
	case <-s.closed:
		s.drop(ErrSenderClosed)
		return ErrSenderClosed
	}

	// The goroutine settles every frame it can receive until it closes
	// done. A frame that arrived later is settled here, so none is left
	// in the buffer uncounted.
	select {
	case <-s.done:
		s.drainRequests()
	default:
	}
	return nil
}

// Dropped returns the number of SendAsync frames that did not reach the
// plugin's queue since the sender was created.
func (s *BatchSender) Dropped() uint64 {
	return s.dropped.Load()
}

// drop counts a SendAsync frame that did not reach the plugin's queue and
// logs the drops at most once per dropLogInterval. The drops after the
// last message are only counted until the next drop is logged.
func (s *BatchSender) drop(err error) {
	total := s.dropped.Add(1)
	s.dropLogMu.Lock()
	defer s.dropLogMu.Unlock()
	s.unlogged++
	now := time.Now()
	if !s.lastDropLog.IsZero() && now.Sub(s.lastDropLog) < dropLogInterval {
		return
	}
	// While the worker is disconnected the drops are expected, so they are
	// logged below warn level.
	log := s.logger.Warn
	if status.Code(err) == codes.Unavailable {
		log = s.logger.Info
	}
	log("dropped best-effort frames (task progress and telemetry) that the connector plugin did not queue",
		"frames", s.unlogged, "total", total, "error", err)
	s.lastDropLog = now
	s.unlogged = 0
}

// Close stops the goroutine, cancels a SendBatch call under way and fails
// the frames that wait with ErrSenderClosed. It waits for the goroutine to
// return, and later calls do nothing.
func (s *BatchSender) Close() {
	s.closeOnce.Do(func() {
		close(s.closed)
		s.cancelCall()
	})
	<-s.done
}

// resultOr returns the item's result if it has arrived, and otherwise
// fallback, so that a result that arrived at the same moment wins.
func resultOr(item *batchItem, fallback error) error {
	select {
	case err := <-item.result:
		return err
	default:
		return fallback
	}
}

func (s *BatchSender) sendUnary(ctx context.Context, frame []byte) error {
	_, err := s.client.Send(ctx, &pb.SendRequest{Frame: frame})
	return err
}

// sendAsyncUnary passes a SendAsync frame to the unary Send, for a plugin
// without SendBatch. The goroutine calls it, one frame at a time, so the
// frames keep their order.
func (s *BatchSender) sendAsyncUnary(item *batchItem) {
	ctx, cancel := context.WithDeadline(s.callCtx, item.deadline)
	defer cancel()
	if err := s.sendUnary(ctx, item.frame); err != nil {
		s.drop(err)
	}
}

// drainRequests settles, with ErrSenderClosed, every frame left in the
// buffer after the goroutine stopped.
func (s *BatchSender) drainRequests() {
	for {
		select {
		case item := <-s.requests:
			s.deliver([]*batchItem{item}, ErrSenderClosed)
		default:
			return
		}
	}
}

// run is the goroutine. pending holds the frames taken from callers and
// still without a result, oldest first, and at most maxFrames of them.
func (s *BatchSender) run() {
	var pending []*batchItem
	defer func() {
		s.deliver(pending, ErrSenderClosed)
		// done closes before the last drain, so that a SendAsync whose
		// frame arrives after the drain finds done closed and drains the
		// frame itself.
		close(s.done)
		s.drainRequests()
	}()

	for {
		// Wait for a first frame unless frames are left from the last call.
		if len(pending) == 0 {
			select {
			case item := <-s.requests:
				pending = append(pending, item)
			case <-s.closed:
				return
			}
		}
		select {
		case <-s.closed:
			return
		default:
		}

		pending = s.collect(pending)
		pending = s.dropExpired(pending, time.Now())
		if s.unary.Load() {
			s.deliver(pending, errUseSend)
			pending = nil
			continue
		}
		if len(pending) == 0 {
			continue
		}

		size := s.batchSize(pending)
		retry := s.sendBatch(pending[:size])
		pending = slices.Concat(retry, pending[size:])
	}
}

// collect adds the frames that callers are handing over right now, up to
// maxFrames pending frames, without waiting for more.
func (s *BatchSender) collect(pending []*batchItem) []*batchItem {
	for len(pending) < s.maxFrames {
		select {
		case item := <-s.requests:
			pending = append(pending, item)
		default:
			return pending
		}
	}
	return pending
}

// batchSize returns how many of the pending frames, from the first, fit in
// one call: at least one, and then as many as stay within maxBytes.
func (s *BatchSender) batchSize(pending []*batchItem) int {
	total := len(pending[0].frame)
	size := 1
	for size < len(pending) && total+len(pending[size].frame) <= s.maxBytes {
		total += len(pending[size].frame)
		size++
	}
	return size
}

// sendBatch queues batch with one SendBatch call and delivers the results
// of the frames that were accepted or rejected. It returns, in order, the
// frames to send again because the plugin did not reach them.
func (s *BatchSender) sendBatch(batch []*batchItem) []*batchItem {
	req := &pb.SendBatchRequest{Frames: make([][]byte, len(batch))}
	var earliest time.Time
	for i, item := range batch {
		req.Frames[i] = item.frame
		if !item.deadline.IsZero() && (earliest.IsZero() || item.deadline.Before(earliest)) {
			earliest = item.deadline
		}
	}
	ctx := s.callCtx
	if !earliest.IsZero() {
		// Rounded up, so the plugin waits until the earliest caller has
		// given up and every round ends at least one frame.
		wait := time.Until(earliest)
		req.TimeoutMs = max(1, int64((wait+time.Millisecond-1)/time.Millisecond))
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, earliest.Add(batchCallGrace))
		defer cancel()
	}

	resp, err := s.client.SendBatch(ctx, req)
	switch {
	case err == nil:
	case status.Code(err) == codes.Unimplemented:
		if !s.unary.Swap(true) {
			s.logger.Info("connector plugin does not implement SendBatch; sending one frame per call")
		}
		s.deliver(batch, errUseSend)
		return nil
	case s.callCtx.Err() != nil:
		s.deliver(batch, ErrSenderClosed)
		return nil
	default:
		// The call failed as a whole, so the plugin may have queued any
		// prefix of the batch. As after a failed unary Send, each caller
		// gets the error and does not know whether its frame was queued.
		s.deliver(batch, err)
		return nil
	}
	return s.settle(batch, resp, earliest)
}

// settle delivers the results of a batch from the plugin's response and
// returns the frames that the plugin did not reach, to send again.
func (s *BatchSender) settle(batch []*batchItem, resp *pb.SendBatchResponse, earliest time.Time) []*batchItem {
	accepted := min(int(resp.GetAccepted()), len(batch))
	s.deliver(batch[:accepted], nil)
	if accepted == len(batch) {
		return nil
	}

	first, rest := batch[accepted], batch[accepted+1:]
	code := codes.Code(resp.GetErrorCode())
	var rejection error
	if code == codes.OK {
		rejection = status.Errorf(codes.Internal,
			"connector plugin accepted %d of %d frames of a batch without an error code", accepted, len(batch))
	} else {
		rejection = status.Error(code, resp.GetErrorMessage())
	}

	switch {
	case code == codes.Unavailable:
		// No session, or the connection loop ended: every later frame
		// would be rejected the same way.
		s.deliver(batch[accepted:], rejection)
		return nil
	case code == codes.DeadlineExceeded && first.deadline.After(earliest):
		// The wait ended at another caller's deadline, not at this one's.
		return batch[accepted:]
	default:
		s.deliver([]*batchItem{first}, rejection)
		return rest
	}
}

// dropExpired fails and removes the items whose callers have given up,
// and the SendAsync items whose AsyncTimeout has passed.
func (s *BatchSender) dropExpired(items []*batchItem, now time.Time) []*batchItem {
	kept := items[:0]
	for _, item := range items {
		if !item.expired(now) {
			kept = append(kept, item)
			continue
		}
		err := item.ctx.Err()
		if err == nil {
			err = context.DeadlineExceeded
		}
		s.deliver([]*batchItem{item}, status.FromContextError(err).Err())
	}
	clear(items[len(kept):])
	return kept
}

// deliver gives every item the same result. A SendAsync item has no
// caller to receive it: a rejection is counted, and errUseSend passes the
// frame to the unary Send from the goroutine.
func (s *BatchSender) deliver(items []*batchItem, err error) {
	for _, item := range items {
		switch {
		case !item.async:
			item.result <- err
		case errors.Is(err, errUseSend):
			s.sendAsyncUnary(item)
		case err != nil:
			s.drop(err)
		}
	}
}
