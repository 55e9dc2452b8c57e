package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/dtf-io/dtf/coordinator/api"
)

// Bounds of the server-sent event stream at api.StreamPath.
const (
	// streamSnapshotInterval is the time between two snapshots of every
	// worker's row and the task counts.
	streamSnapshotInterval = 2 * time.Second
	// maxStreams bounds the streams open at once. Each costs a goroutine,
	// a buffer of streamBuffer events and a share of the snapshot reads.
	maxStreams = 64
	// maxStreamsPerAddr bounds the streams of one client IP address, so
	// that one host cannot take every slot. Clients behind one proxy or
	// NAT address share it.
	maxStreamsPerAddr = 4
	// streamLifetime ends every stream after this time, so that a client
	// that keeps its connection open without reading frees its slot. The
	// dashboard opens a new stream at once and gets a new snapshot.
	streamLifetime = 10 * time.Minute
	// streamBuffer bounds the events queued for one client. A client that
	// falls this far behind is dropped, and it reconnects and starts from
	// a new snapshot.
	streamBuffer = 64
	// streamWriteTimeout bounds writing one event to a client that stopped
	// reading.
	streamWriteTimeout = 10 * time.Second
	// streamRetryAfter is the Retry-After of a stream rejected because
	// maxStreams are open.
	streamRetryAfter = 5 * time.Second
)

var (
	errStreamsFull   = errors.New("too many streams open")
	errAddrFull      = errors.New("too many streams open from one address")
	errStreamsClosed = errors.New("coordinator is shutting down")
)

// streamHub fans the stream's events out to the open streams. An event is
// encoded once and every client's buffer holds the same bytes, so a
// client's memory is bounded by streamBuffer events. Its lock is taken
// after fleetHistory.mu and never before.
type streamHub struct {
	log hclog.Logger
	// dropLog limits the warnings about dropped clients.
	dropLog logLimiter

	mu sync.Mutex
	// lifetime is streamLifetime, and shorter in tests.
	lifetime time.Duration
	clients  map[*streamClient]struct{}
	// perAddr counts the open streams per client IP address.
	perAddr map[string]int
	closed  bool
}

// streamClient is one open stream.
type streamClient struct {
	// addr is the client's IP address without the port.
	addr string
	// lifetime is how long the stream may stay open.
	lifetime time.Duration
	events   chan []byte
	// done is closed when the hub drops the client or shuts down.
	done chan struct{}
	// dropped is set, under the hub's lock, when the client fell behind.
	dropped bool
}

func newStreamHub(log hclog.Logger) *streamHub {
	return &streamHub{
		log:      log,
		lifetime: streamLifetime,
		clients:  map[*streamClient]struct{}{},
		perAddr:  map[string]int{},
	}
}

// subscribe opens a stream for a client at addr, an IP address, or returns
// errStreamsFull, errAddrFull or errStreamsClosed.
func (h *streamHub) subscribe(addr string) (*streamClient, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, errStreamsClosed
	}
	if len(h.clients) >= maxStreams {
		return nil, errStreamsFull
	}
	if h.perAddr[addr] >= maxStreamsPerAddr {
		return nil, errAddrFull
	}
	c := &streamClient{
		addr:     addr,
		lifetime: h.lifetime,
		events:   make(chan []byte, streamBuffer),
		done:     make(chan struct{}),
	}
	h.clients[c] = struct{}{}
	h.perAddr[addr]++
	return c, nil
}

// removeLocked ends a client's stream. The caller holds h.mu and has
// checked that c is in h.clients.
func (h *streamHub) removeLocked(c *streamClient) {
	delete(h.clients, c)
	close(c.done)
	if h.perAddr[c.addr] <= 1 {
		delete(h.perAddr, c.addr)
	} else {
		h.perAddr[c.addr]--
	}
}

// unsubscribe removes a client and reports whether the hub had dropped it
// for falling behind.
func (h *streamHub) unsubscribe(c *streamClient) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.clients[c]; ok {
		h.removeLocked(c)
	}
	return c.dropped
}

// count returns the number of open streams.
func (h *streamHub) count() int {
	if h == nil {
		return 0
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.clients)
}

// publish encodes one event and queues it for every client. It never
// blocks: a client whose buffer is full is dropped.
func (h *streamHub) publish(name string, data any) {
	if h.count() == 0 {
		return
	}
	msg, err := encodeStreamEvent(name, data)
	if err != nil {
		h.log.Error("encoding a stream event failed", "event", name, "error", err)
		return
	}
	h.send(msg)
}

func (h *streamHub) send(msg []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.clients {
		select {
		case c.events <- msg:
		default:
			c.dropped = true
			h.removeLocked(c)
		}
	}
}

// close ends every stream and rejects new ones. http.Server.Shutdown calls
// it, because Shutdown waits for running handlers, and a stream's handler
// would otherwise run until the shutdown timeout.
func (h *streamHub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for c := range h.clients {
		h.removeLocked(c)
	}
}

// encodeStreamEvent formats one server-sent event. json.Marshal writes no
// newline, so the data fits on one data line.
func encodeStreamEvent(name string, data any) ([]byte, error) {
	body, err := json.Marshal(data)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	buf.Grow(len(name) + len(body) + 16)
	buf.WriteString("event: ")
	buf.WriteString(name)
	buf.WriteString("\ndata: ")
	buf.Write(body)
	buf.WriteString("\n\n")
	return buf.Bytes(), nil
}

// handleStream serves the event stream at api.StreamPath: a hello, a
// snapshot, then each new timeline entry, each sampling round and a
// snapshot every streamSnapshotInterval. The stream ends when the client
// leaves or falls streamBuffer events behind, at the end of its lifetime,
// or when the coordinator shuts down.
func (s *Server) handleStream(w http.ResponseWriter, r *http.Request) {
	log := s.log.Named("stream").With("remote_addr", r.RemoteAddr)
	client, err := s.streams.subscribe(clientIP(r.RemoteAddr))
	seconds := int(streamRetryAfter / time.Second)
	switch {
	case errors.Is(err, errStreamsFull):
		s.connLog.Warn(log, "stream rejected/full", "event stream rejected: every stream slot is taken",
			"max_streams", maxStreams)
		w.Header().Set("Retry-After", strconv.Itoa(seconds))
		writeError(w, http.StatusServiceUnavailable, "", fmt.Sprintf("%d event streams are open, the "+
			"maximum; close a dashboard tab or retry after %d s", maxStreams, seconds))
		return
	case errors.Is(err, errAddrFull):
		s.connLog.Warn(log, "stream rejected/addr/"+clientIP(r.RemoteAddr),
			"event stream rejected: the address has every stream slot it may hold",
			"max_streams_per_addr", maxStreamsPerAddr)
		w.Header().Set("Retry-After", strconv.Itoa(seconds))
		writeError(w, http.StatusServiceUnavailable, "", fmt.Sprintf("%d event streams are open from %s, "+
			"the maximum per address; close a dashboard tab or retry after %d s",
			maxStreamsPerAddr, clientIP(r.RemoteAddr), seconds))
		return
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, "", err.Error())
		return
	}
	defer func() {
		if s.streams.unsubscribe(client) {
			if n, ok := s.streams.dropLog.count(time.Now()); ok {
				log.Warn("event stream dropped: the client fell behind", "buffered_events", streamBuffer,
					"dropped_since_last_log", n)
			}
		}
	}()

	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	first, err := s.streamStart(r.Context())
	if err != nil {
		log.Warn("event stream ended before its first snapshot", "error", err)
		return
	}
	if writeStreamEvent(rc, w, first) != nil {
		return
	}
	log.Debug("event stream opened")
	lifetime := time.NewTimer(client.lifetime)
	defer lifetime.Stop()
	for {
		select {
		case <-lifetime.C:
			log.Debug("event stream ended at the end of its lifetime", "lifetime", client.lifetime)
			return
		case msg := <-client.events:
			if err := writeStreamEvent(rc, w, msg); err != nil {
				log.Debug("event stream closed", "error", err)
				return
			}
		case <-client.done:
			return
		case <-r.Context().Done():
			log.Debug("event stream closed by the client")
			return
		}
	}
}

// clientIP returns the IP address of a request's RemoteAddr, or RemoteAddr
// itself when it has no port.
func clientIP(remoteAddr string) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		return remoteAddr
	}
	return host
}

// streamStart returns the hello and the first snapshot of a new stream.
func (s *Server) streamStart(ctx context.Context) ([]byte, error) {
	hello, err := encodeStreamEvent(api.StreamHello, api.StreamHelloData{
		ServerTime:         time.Now().UTC(),
		SnapshotIntervalMs: streamSnapshotInterval.Milliseconds(),
		SampleIntervalMs:   fleetSampleInterval.Milliseconds(),
		MaxEvents:          fleetMaxEvents,
		MaxSamples:         fleetMaxSamples,
	})
	if err != nil {
		return nil, err
	}
	snapshot, err := s.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	msg, err := encodeStreamEvent(api.StreamSnapshot, snapshot)
	if err != nil {
		return nil, err
	}
	return append(hello, msg...), nil
}

// writeStreamEvent writes and flushes one event within streamWriteTimeout.
func writeStreamEvent(rc *http.ResponseController, w http.ResponseWriter, msg []byte) error {
	_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
	if _, err := w.Write(msg); err != nil {
		return err
	}
	return rc.Flush()
}

// snapshot returns every worker's row and the task counts.
func (s *Server) snapshot(ctx context.Context) (api.StreamSnapshotData, error) {
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	workers, err := s.listWorkers(ctx)
	if err != nil {
		return api.StreamSnapshotData{}, fmt.Errorf("list workers: %w", err)
	}
	counts, err := s.taskCounts(ctx)
	if err != nil {
		return api.StreamSnapshotData{}, fmt.Errorf("count tasks: %w", err)
	}
	return api.StreamSnapshotData{Time: time.Now().UTC(), Workers: workers, Tasks: counts}, nil
}

// publishSnapshot sends a snapshot to every open stream.
func (s *Server) publishSnapshot(ctx context.Context) {
	snapshot, err := s.snapshot(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Named("stream").Warn("stream snapshot failed; the next one follows", "error", err,
				"interval", streamSnapshotInterval)
		}
		return
	}
	s.streams.publish(api.StreamSnapshot, snapshot)
}
