// Package coordinator is the dtf server. It accepts worker sessions over
// WebSocket, schedules queued tasks onto workers with free slots, commits
// every state change to its store before it acknowledges it, and serves the
// HTTP JSON API on the same listener. It has no notion of plugins and speaks
// only the wire protocol of package protocol.
package coordinator

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"github.com/hashicorp/go-hclog"

	"github.com/dtf-io/dtf/coordinator/config"
	"github.com/dtf-io/dtf/coordinator/store"
	"github.com/dtf-io/dtf/internal/ratelog"
	"github.com/dtf-io/dtf/protocol"
)

// StoreFile is the name of the SQLite store inside data_dir.
const StoreFile = "coordinator.db"

// storeTimeout bounds one store operation made on behalf of a session or
// the scheduler.
const storeTimeout = 10 * time.Second

// shutdownRetryAfter is the shortest retry hint sent to workers on
// shutdown. It is long enough for a restart to bind the listener again and
// short enough that workers return well within the default reassign_after
// of 30s.
const shutdownRetryAfter = time.Second

// shutdownRetrySpread is the interval over which the retry hints of a
// shutdown are spread, so that the fleet does not redial in the same 100 ms
// after a restart.
const shutdownRetrySpread = 3 * time.Second

// shutdownRetryHint returns a retry hint for a worker that sends hello while
// the coordinator shuts down, uniform in
// [shutdownRetryAfter, shutdownRetryAfter+shutdownRetrySpread).
func shutdownRetryHint() time.Duration {
	return shutdownRetryAfter + rand.N(shutdownRetrySpread)
}

// shutdownRetryHints returns one retry hint for each of n attached workers,
// in random order. The hints are evenly spaced over the spread rather than
// drawn at random, because random hints for a few hundred workers still
// crowd some 100 ms windows with twice the mean. The spread grows when the
// admission limit, maxPerSecond sessions with a burst of burst, could not
// let n workers through within it.
func shutdownRetryHints(n, maxPerSecond, burst int) []time.Duration {
	spread := shutdownRetrySpread
	if maxPerSecond > 0 && n > burst {
		spread = max(spread, time.Duration(n-burst)*time.Second/time.Duration(maxPerSecond))
	}
	hints := make([]time.Duration, n)
	for i := range hints {
		hints[i] = shutdownRetryAfter + spread*time.Duration(i)/time.Duration(max(n, 1))
	}
	rand.Shuffle(n, func(i, j int) { hints[i], hints[j] = hints[j], hints[i] })
	return hints
}

// connLogInterval is the shortest time between two log lines of one
// connection event key, and the lines in between are counted. Events
// before authentication are keyed by their kind alone, because their
// worker_id is whatever the peer sent. Later events of a worker are keyed
// by kind and worker_id, so a flapping worker logs each kind once per
// interval. connLogMaxKeys bounds the keys tracked, and new keys beyond it
// share one interval.
const (
	connLogInterval = time.Second
	connLogMaxKeys  = 1024
)

// Server is one coordinator: its listener, its store and the live worker
// sessions.
type Server struct {
	cfg   *config.Config
	log   hclog.Logger
	store store.Store
	// dataDirLock is held from New until Run returns.
	dataDirLock *os.File
	listener    net.Listener
	http        *http.Server
	upgrader    websocket.Upgrader
	knownTypes  map[string]bool
	started     time.Time

	mu sync.Mutex
	// sessions are the open sessions by worker ID.
	sessions map[string]*session
	// workers are the in-memory records of the workers seen since the
	// start, beside the store's.
	workers map[string]*workerState
	// graceDeadlines are the times at which the running attempts of a
	// worker without a session are requeued.
	graceDeadlines map[string]time.Time

	// kick wakes the scheduler; one pending kick is enough, so senders never
	// block.
	kick         chan struct{}
	shuttingDown atomic.Bool
	// conns tracks the goroutines of WebSocket connections, which
	// http.Server.Shutdown does not wait for once they are hijacked.
	conns sync.WaitGroup

	// admission limits the rate of new and resumed sessions.
	admission *sessionAdmission
	// pendingHandshakes counts connections upgraded but without a hello.
	pendingHandshakes atomic.Int64
	overloadLog       logLimiter
	// addressLimits limits new WebSocket connections per remote address.
	addressLimits addressLimiter
	// connLog rate-limits the log lines of connection events by key, so a
	// flapping worker or a flood of bad connections cannot flood the log.
	connLog *ratelog.Limiter
	// metrics holds the registry of /metrics and the counters that Stats
	// does not keep.
	metrics serverMetrics

	unknownFrames     atomic.Uint64
	unexpectedFrames  atomic.Uint64
	duplicateFrames   atomic.Uint64
	overloadedRejects atomic.Uint64
	framesSent        atomic.Uint64
	bytesSent         atomic.Uint64
	staleOutcomes     atomic.Uint64
	duplicateOutcomes atomic.Uint64
	// lostCancelOutcomes counts the outcomes that report the cancel of an
	// attempt the coordinator had ended as lost.
	lostCancelOutcomes atomic.Uint64
	lostWorkers        atomic.Uint64
	drainedWorkers     atomic.Uint64
	checkpoints        checkpointStats
	// authFailures counts handshakes rejected as unauthenticated, and
	// rejected counts messages of open connections that failed their tag.
	authFailures atomic.Uint64
	rejected     rejectedFrames

	// fleet is the connection history of the workers, and streams the
	// open event streams of the dashboard.
	fleet   *fleetHistory
	streams *streamHub
	// workerSummaries holds the newest summary of each worker's metrics
	// plugin; see workermetrics.go. mu guards it.
	workerSummaries *workerSummaries
}

// workerState is the in-memory part of a worker's record.
type workerState struct {
	connects int
	// rtt is the smoothed round-trip time of the worker's latest session.
	rtt time.Duration
	// drained is set when the worker's session ended after it announced
	// draining, until the worker starts a new session.
	drained bool
	// lastSeen is when the coordinator last received a frame of the
	// worker's session that ended last. The store keeps only the start of
	// each session.
	lastSeen time.Time
}

// Stats are counters for metrics and tests.
type Stats struct {
	// UnknownFrames counts received frames whose body type this build does
	// not know.
	UnknownFrames uint64
	// UnexpectedFrames counts received frames of a known type that only the
	// coordinator sends, such as assign.
	UnexpectedFrames uint64
	// DuplicateFrames counts received task frames that were ignored because
	// their sequence number was already received, as after a replay.
	DuplicateFrames uint64
	// OverloadedRejects counts hellos rejected with CODE_OVERLOADED.
	OverloadedRejects uint64
	// FramesSent and BytesSent count the WebSocket messages written to
	// workers and their size on the wire, after compression.
	FramesSent uint64
	BytesSent  uint64
	// Sessions is the number of sessions with an open connection.
	Sessions int
	// DetachedSessions is the number of sessions whose connection ended and
	// that wait, for at most workers.session_ttl, for the worker to resume.
	DetachedSessions int
	// PendingHandshakes is the number of connections without a hello yet.
	PendingHandshakes int
	// StaleOutcomes counts outcomes rejected because their attempt was
	// superseded: requeued, timed out, cancelled or run elsewhere.
	StaleOutcomes uint64
	// DuplicateOutcomes counts outcomes rejected because the same attempt's
	// outcome was applied before, as after a replay.
	DuplicateOutcomes uint64
	// LostWorkers counts grace periods that ended without the worker's
	// return, so its running attempts were lost. A worker that left after
	// draining is not counted.
	LostWorkers uint64
	// DrainedWorkers counts sessions that ended after the worker announced
	// draining.
	DrainedWorkers uint64
	// StaleCheckpoints counts checkpoints rejected as stale: from an
	// attempt that no longer runs, or older than the stored checkpoint.
	StaleCheckpoints uint64
	// RejectedCheckpoints counts checkpoints rejected for other reasons,
	// such as data over the size limit or an unknown task or attempt.
	RejectedCheckpoints uint64
	// AuthFailures counts handshakes rejected with CODE_UNAUTHENTICATED:
	// wrong secret or token, unknown, revoked or expired credential.
	AuthFailures uint64
	// RejectedFrames counts the messages of authenticated connections that
	// failed their tag, by reason (protocol.RejectUntagged or
	// protocol.RejectBadTag). Each one closed its connection.
	RejectedFrames map[string]uint64
}

// New validates cfg, opens the store in cfg.DataDir and binds cfg.Listen, so
// that Addr is known before Run. Run must be called to serve and to release
// the store and the listener.
func New(cfg *config.Config, logger hclog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid coordinator config: %w", err)
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("create data_dir %s: %w", cfg.DataDir, err)
	}
	lock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	storePath := filepath.Join(cfg.DataDir, StoreFile)
	before, statErr := os.Stat(storePath)
	st, err := store.OpenSQLite(ctx, storePath)
	if err != nil {
		lock.Close()
		return nil, err
	}
	switch {
	case errors.Is(statErr, os.ErrNotExist):
		logger.Named("coordinator").Info("created a new store", "path", storePath)
	case statErr == nil && before.Size() == 0:
		// SQLite takes an empty file for an empty database, so a truncated
		// store would otherwise start without a word.
		logger.Named("coordinator").Warn("store file was empty; starting with no tasks and no workers; "+
			"restore it from a backup if it held data", "path", storePath)
	}
	listener, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		_ = st.Close()
		lock.Close()
		hint := "check listen in the config"
		if errors.Is(err, syscall.EADDRINUSE) {
			hint = "stop the process that holds it or change listen"
		}
		return nil, fmt.Errorf("listen on %s: %w; %s", cfg.Listen, err, hint)
	}
	if cfg.TLS.Enabled() {
		tlsConfig, err := serverTLSConfig(cfg.TLS)
		if err != nil {
			_ = listener.Close()
			_ = st.Close()
			lock.Close()
			return nil, err
		}
		listener = tls.NewListener(listener, tlsConfig)
	}

	s := &Server{
		cfg:            cfg,
		log:            logger.Named("coordinator"),
		store:          st,
		dataDirLock:    lock,
		listener:       listener,
		knownTypes:     map[string]bool{},
		started:        time.Now(),
		sessions:       map[string]*session{},
		workers:        map[string]*workerState{},
		graceDeadlines: map[string]time.Time{},
		kick:           make(chan struct{}, 1),
		admission: newSessionAdmission(cfg.Workers.MaxSessionsPerSecond, cfg.Workers.SessionBurst,
			time.Now()),
		connLog: ratelog.NewWithMaxKeys(connLogInterval, connLogMaxKeys),
	}
	s.initMetrics()
	for _, t := range cfg.TaskTypes {
		s.knownTypes[t] = true
	}
	s.streams = newStreamHub(s.log.Named("stream"))
	s.workerSummaries = newWorkerSummaries()
	s.fleet = newFleetHistory(s.streams)
	if err := s.restoreSessions(ctx); err != nil {
		// The workers of the lost sessions start new ones and sync their
		// state, so a broken record costs a resume, not a task.
		s.log.Warn("sessions of the previous run not restored", "error", err)
	}
	s.recordRestoredSessions()
	s.upgrader = websocket.Upgrader{
		HandshakeTimeout: cfg.Workers.HandshakeTimeout,
		// An idle worker costs a 1 KiB read buffer, and a write buffer only
		// while a frame is written; larger frames are read in pieces.
		ReadBufferSize:  1024,
		WriteBufferPool: &sync.Pool{},
		Subprotocols:    []string{protocol.Subprotocol},
		// Workers are not browsers, and the Origin check only protects
		// browser sessions, which this endpoint does not serve.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	s.http = s.newHTTPServer()
	s.http.RegisterOnShutdown(s.streams.close)
	return s, nil
}

// serverTLSConfig returns the listener's TLS settings: the configured
// certificate, TLS 1.2 or later, and HTTP/1.1 only, because the WebSocket
// upgrade of the worker endpoint needs it.
func serverTLSConfig(t config.TLS) (*tls.Config, error) {
	cert, err := t.Certificate(time.Now())
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"http/1.1"},
	}, nil
}

// tlsHandshakeErrorPrefix starts the line that net/http (Go 1.26,
// server.go) logs for a failed TLS handshake, followed by the remote
// address, ": " and the error.
const tlsHandshakeErrorPrefix = "http: TLS handshake error from "

// httpErrorLog returns the ErrorLog of the HTTP server. net/http logs a
// line for every failed TLS handshake, which a port scanner or a worker
// that does not trust the certificate repeats at will, so the lines go
// through connLog, keyed without the remote address.
func (s *Server) httpErrorLog() *log.Logger {
	return s.connLog.StandardLogger(s.log.Named("http"), hclog.Warn, s.httpErrorKey)
}

// httpErrorKey returns the rate-limit key of a line of net/http's error
// log and counts the failed TLS handshakes among them. The key of a TLS
// line is the last part of its error, such as "bad certificate" or
// "connection reset by peer", because the parts before it name addresses.
func (s *Server) httpErrorKey(line string) string {
	if !strings.HasPrefix(line, tlsHandshakeErrorPrefix) {
		return line
	}
	s.metrics.tlsHandshakeErrors.Add(1)
	return "tls handshake: " + line[strings.LastIndex(line, ": ")+2:]
}

// Addr returns the address the listener is bound to, such as
// "127.0.0.1:41234" when cfg.Listen asked for port 0.
func (s *Server) Addr() string {
	return s.listener.Addr().String()
}

// Stats returns the current counters.
func (s *Server) Stats() Stats {
	st := Stats{
		UnknownFrames:       s.unknownFrames.Load(),
		UnexpectedFrames:    s.unexpectedFrames.Load(),
		DuplicateFrames:     s.duplicateFrames.Load(),
		OverloadedRejects:   s.overloadedRejects.Load(),
		FramesSent:          s.framesSent.Load(),
		BytesSent:           s.bytesSent.Load(),
		PendingHandshakes:   int(s.pendingHandshakes.Load()),
		StaleOutcomes:       s.staleOutcomes.Load(),
		DuplicateOutcomes:   s.duplicateOutcomes.Load(),
		LostWorkers:         s.lostWorkers.Load(),
		DrainedWorkers:      s.drainedWorkers.Load(),
		StaleCheckpoints:    s.checkpoints.stale.Load(),
		RejectedCheckpoints: s.checkpoints.rejected.Load(),
		AuthFailures:        s.authFailures.Load(),
		RejectedFrames:      s.rejected.snapshot(),
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ss := range s.sessions {
		if ss.attached() != nil {
			st.Sessions++
		} else {
			st.DetachedSessions++
		}
	}
	return st
}

// Run serves until ctx is cancelled, then shuts down within
// cfg.ShutdownTimeout: it stops accepting, sends every worker a Reject with
// CODE_SHUTTING_DOWN and a retry hint, waits for the connections to end,
// saves the sessions in the store and closes it. Running attempts stay
// running in the store. A restarted coordinator restores the sessions for
// their workers to resume, and gives every worker the grace period to
// return.
func (s *Server) Run(ctx context.Context) error {
	s.log.Info("coordinator listening", "addr", s.Addr(), "tls", s.cfg.TLS.Enabled(),
		"api_auth", s.cfg.APIAuthMode(), "data_dir", s.cfg.DataDir, "task_types", s.cfg.TaskTypes)
	for _, warning := range startupWarnings(s.cfg) {
		s.log.Warn(warning, "addr", s.Addr())
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- s.http.Serve(s.listener) }()

	schedCtx, stopScheduler := context.WithCancel(context.Background())
	schedDone := make(chan struct{})
	go func() {
		defer close(schedDone)
		s.runScheduler(schedCtx)
	}()
	fleetDone := make(chan struct{})
	go func() {
		defer close(fleetDone)
		s.runFleet(schedCtx)
	}()
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		s.watchCredentials(schedCtx)
	}()

	var err error
	select {
	case <-ctx.Done():
	case err = <-serveErr:
		err = fmt.Errorf("serve on %s: %w", s.Addr(), err)
	}

	s.log.Info("coordinator shutting down", "timeout", s.cfg.ShutdownTimeout)
	deadline := time.Now().Add(s.cfg.ShutdownTimeout)
	s.shuttingDown.Store(true)

	// Stop accepting and let HTTP requests in progress finish.
	shutdownCtx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	if shutdownErr := s.http.Shutdown(shutdownCtx); shutdownErr != nil {
		s.log.Warn("http requests did not finish before the shutdown timeout", "error", shutdownErr)
	}

	// Tell every worker to come back later, then wait for the sessions.
	s.closeSessions()
	if !waitWithin(&s.conns, time.Until(deadline)) {
		s.log.Warn("sessions did not end within the shutdown timeout; closing their connections")
		s.forceCloseSessions()
		s.conns.Wait()
	}

	stopScheduler()
	<-schedDone
	<-watchDone
	<-fleetDone
	saveCtx, cancelSave := storeContext()
	if saveErr := s.saveSessions(saveCtx); saveErr != nil {
		s.log.Warn("sessions not saved; their workers will start new sessions and sync their state",
			"error", saveErr)
	}
	cancelSave()
	if closeErr := s.store.Close(); closeErr != nil {
		err = errors.Join(err, fmt.Errorf("close store: %w", closeErr))
	}
	s.dataDirLock.Close()
	s.log.Info("coordinator stopped")
	return err
}

// closeSessions sends every attached worker a Reject with a retry hint. The
// sessions stay, detached, and Run saves them for the next start.
func (s *Server) closeSessions() {
	conns := s.attachedConnections()
	hints := shutdownRetryHints(len(conns), s.cfg.Workers.MaxSessionsPerSecond,
		s.cfg.Workers.SessionBurst)
	for i, c := range conns {
		c.close(rejectFrame(rejectShuttingDown, "coordinator is shutting down", hints[i]),
			"coordinator shutting down")
	}
}

func (s *Server) forceCloseSessions() {
	for _, c := range s.attachedConnections() {
		_ = c.ws.Close()
	}
}

// waitWithin waits for wg and reports whether it finished within timeout.
func waitWithin(wg *sync.WaitGroup, timeout time.Duration) bool {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-done:
		return true
	case <-timer.C:
		return false
	}
}

// kickScheduler requests a scheduling pass without waiting for it.
func (s *Server) kickScheduler() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func storeContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), storeTimeout)
}

// startupWarnings returns the settings of cfg that a coordinator accepts
// but that expose it on the network, each as a log message with its fix.
func startupWarnings(cfg *config.Config) []string {
	if config.Loopback(cfg.Listen) {
		return nil
	}
	var warnings []string
	if cfg.Insecure && !cfg.TLS.Enabled() {
		warnings = append(warnings, "insecure = true: serving plain HTTP and WebSocket on a non-loopback "+
			"listener; anyone on the network path can read task payloads and outputs, and a worker in the "+
			"shared token mode sends its token in clear; set a tls block instead")
	}
	if cfg.APIAuthMode() == config.APIAuthNone {
		warnings = append(warnings, "the HTTP API on a non-loopback listener accepts requests without a "+
			"token; set api { auth = \"token\" } and create tokens with dtf tokens create")
	}
	return warnings
}
