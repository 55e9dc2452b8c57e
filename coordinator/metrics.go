package coordinator

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/coordinator/store"
	"github.com/dtf-io/dtf/protocol"
)

// Metrics of the coordinator at GET /metrics, in the Prometheus text
// format. Each Server has its own registry, so two coordinators in one
// process, as in tests, do not share counters. Counters that Stats already
// keeps are read at scrape time by serverCollector instead of being
// counted twice.

// taskCountsMaxAge bounds how often a scrape queries the store for the
// task counts: scrapes within this age of the last query reuse its result.
const taskCountsMaxAge = time.Second

// taskCountsTimeout bounds the store queries of one scrape, well under the
// 10 s default scrape timeout of Prometheus.
const taskCountsTimeout = 3 * time.Second

// handshakeRejectReason is the cause of a handshake that ended with a
// Reject. The set is fixed, so that the reason label has a bounded number
// of values.
type handshakeRejectReason int

const (
	handshakeShuttingDown handshakeRejectReason = iota
	// handshakeNoHello is a connection that sent no valid hello in time.
	handshakeNoHello
	// handshakeNotHello is a first frame of another type, typically a frame
	// delayed past the end of its session.
	handshakeNotHello
	// handshakeInvalidHello is a hello with an invalid worker ID or labels.
	handshakeInvalidHello
	// handshakeUnauthenticated is read from Server.authFailures.
	handshakeUnauthenticated
	// handshakeProtocolError is a SCRAM exchange that broke off or failed
	// for a reason other than the credential, or a failed key derivation.
	handshakeProtocolError
	// handshakeStoreError is a store read that failed during the handshake.
	handshakeStoreError
	// handshakeSessionRate is a hello shed by workers.max_sessions_per_second;
	// it is read from Server.overloadedRejects.
	handshakeSessionRate
	handshakeWorkerIDInUse
	numHandshakeRejectReasons
)

var handshakeRejectLabels = [numHandshakeRejectReasons]string{
	handshakeShuttingDown:    "shutting_down",
	handshakeNoHello:         "no_hello",
	handshakeNotHello:        "not_hello",
	handshakeInvalidHello:    "invalid_hello",
	handshakeUnauthenticated: "unauthenticated",
	handshakeProtocolError:   "protocol_error",
	handshakeStoreError:      "store_error",
	handshakeSessionRate:     "session_rate",
	handshakeWorkerIDInUse:   "worker_id_in_use",
}

// connectionRejectReason is the cause of a WebSocket upgrade request
// rejected before any frame was read.
type connectionRejectReason int

const (
	// connectionAddressRate is workers.connections_per_second_per_address.
	connectionAddressRate connectionRejectReason = iota
	// connectionPendingHandshakes is workers.max_pending_handshakes.
	connectionPendingHandshakes
	// connectionInvalidUpgrade is a request without the dtf subprotocol or
	// one the WebSocket upgrade failed on.
	connectionInvalidUpgrade
	numConnectionRejectReasons
)

var connectionRejectLabels = [numConnectionRejectReasons]string{
	connectionAddressRate:       "address_rate",
	connectionPendingHandshakes: "pending_handshakes",
	connectionInvalidUpgrade:    "invalid_upgrade",
}

// frameRejectReason is the cause of a rejected frame on an open session.
// Every reason except unknown_type and unexpected_type closes the
// connection.
type frameRejectReason int

const (
	frameOversize frameRejectReason = iota
	frameMalformed
	frameInvalidAck
	frameSequenceGap
	// frameHandshakeType is a hello or proof after the handshake.
	frameHandshakeType
	numCountedFrameRejectReasons
)

var frameRejectLabels = [numCountedFrameRejectReasons]string{
	frameOversize:      "oversize",
	frameMalformed:     "malformed",
	frameInvalidAck:    "invalid_ack",
	frameSequenceGap:   "sequence_gap",
	frameHandshakeType: "handshake_type",
}

// The frame reject reasons that Server counts outside serverMetrics.
const (
	frameUntaggedLabel       = "untagged"
	frameBadTagLabel         = "bad_tag"
	frameUnknownTypeLabel    = "unknown_type"
	frameUnexpectedTypeLabel = "unexpected_type"
)

// serverMetrics holds the counters and histograms of /metrics that Stats
// does not keep. The counters are usable in the zero value; the registry
// and the histograms are set by initMetrics.
type serverMetrics struct {
	registry *prometheus.Registry

	// connects counts handshakes that attached a connection to a session,
	// new or resumed, and resumes counts the resumed ones among them.
	connects atomic.Uint64
	resumes  atomic.Uint64
	// disconnects counts the connections of sessions that ended.
	disconnects atomic.Uint64
	stateSyncs  atomic.Uint64

	handshakeRejects   [numHandshakeRejectReasons]atomic.Uint64
	connectionRejects  [numConnectionRejectReasons]atomic.Uint64
	frameRejects       [numCountedFrameRejectReasons]atomic.Uint64
	tlsHandshakeErrors atomic.Uint64

	dispatchLatency     prometheus.Histogram
	storeCommitDuration prometheus.Histogram
	storeBatchDuration  prometheus.Histogram

	tasks taskCountCache
}

// taskCountCache keeps the last task counts read from the store.
type taskCountCache struct {
	mu     sync.Mutex
	read   time.Time
	counts store.TaskCounts
	err    error
}

// commitObserver is the optional store method behind the store commit
// histograms. store.SQLite implements it.
type commitObserver interface {
	SetCommitObserver(observe func(store.BatchCommit))
}

// initMetrics creates the registry of /metrics with the Go runtime and
// process collectors, the histograms and the collector of the Server's
// counters, and hooks the commit histograms into the store.
func (s *Server) initMetrics() {
	m := &s.metrics
	m.registry = prometheus.NewRegistry()
	m.dispatchLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "dtf", Subsystem: "coordinator", Name: "dispatch_latency_seconds",
		Help: "Time from when a queued task could run, after its retry backoff, to its Assign frame " +
			"being queued for a worker.",
		Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900},
	})
	m.storeCommitDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "dtf", Subsystem: "coordinator", Name: "store_commit_duration_seconds",
		Help:    "Time of the COMMIT of one group-commit batch of the store, including the WAL sync.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	})
	m.storeBatchDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "dtf", Subsystem: "coordinator", Name: "store_batch_duration_seconds",
		Help: "Time from the start of a group-commit batch's transaction to the end of its commit; " +
			"writes wait this long once the writer took them.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	})
	if observer, ok := s.store.(commitObserver); ok {
		observer.SetCommitObserver(func(c store.BatchCommit) {
			m.storeCommitDuration.Observe(c.Commit.Seconds())
			m.storeBatchDuration.Observe(c.Duration.Seconds())
		})
	}

	// Another collector, such as one of per-worker summaries, is one more
	// entry in this list.
	m.registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.dispatchLatency,
		m.storeCommitDuration,
		m.storeBatchDuration,
		&serverCollector{s: s},
		s.workerMetricsCollector(),
	)
}

// Registry returns the Prometheus registry that /metrics serves.
func (s *Server) Registry() *prometheus.Registry {
	return s.metrics.registry
}

// metricsHandler serves the registry in the Prometheus exposition formats.
// Errors of a scrape go through connLog, so each distinct error logs at
// most one line per connLogInterval.
func (s *Server) metricsHandler() http.HandlerFunc {
	log := s.log.Named("metrics")
	errorLog := s.connLog.StandardLogger(log, hclog.Warn, func(line string) string { return "scrape: " + line })
	handler := promhttp.InstrumentMetricHandler(s.metrics.registry,
		promhttp.HandlerFor(s.metrics.registry, promhttp.HandlerOpts{
			ErrorLog: errorLog,
			// A scrape that finds a collector error still returns the
			// metrics it could gather, so one failing store query does not
			// hide the session metrics.
			ErrorHandling:       promhttp.ContinueOnError,
			MaxRequestsInFlight: 4,
			Timeout:             taskCountsTimeout + time.Second,
		}))
	return handler.ServeHTTP
}

// observeDispatch records the dispatch latency of a task that could run
// since ready.
func (s *Server) observeDispatch(ready, now time.Time) {
	if h := s.metrics.dispatchLatency; h != nil && !ready.IsZero() {
		h.Observe(max(now.Sub(ready), 0).Seconds())
	}
}

// countFrameReject counts a frame rejected on an open session.
func (s *Server) countFrameReject(reason frameRejectReason) {
	s.metrics.frameRejects[reason].Add(1)
}

// cachedTaskCounts returns the task counts, read from the store at most
// once per taskCountsMaxAge. It returns false when the store has no
// grouped count (taskCounter) or the query failed. A failed query is
// logged through connLog.
func (s *Server) cachedTaskCounts() (store.TaskCounts, bool) {
	counter, ok := s.store.(taskCounter)
	if !ok {
		return store.TaskCounts{}, false
	}
	c := &s.metrics.tasks
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := time.Now(); now.Sub(c.read) >= taskCountsMaxAge {
		ctx, cancel := context.WithTimeout(context.Background(), taskCountsTimeout)
		c.counts, c.err = counter.CountTasks(ctx)
		cancel()
		c.read = now
		if c.err != nil {
			s.connLog.Warn(s.log.Named("metrics"), "count tasks", "counting tasks for /metrics failed",
				"error", c.err)
		}
	}
	return c.counts, c.err == nil
}

// serverCollector exposes the Server's counters and gauges, reading them
// at scrape time.
type serverCollector struct {
	s *Server
}

func metricDesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName("dtf", "coordinator", name), help, labels, nil)
}

var (
	sessionsDesc = metricDesc("sessions",
		"Worker sessions by state: connected, draining (connected and announced draining), detached "+
			"(waiting for a resume) and pending_handshake (connections without a hello yet).", "state")
	tasksDesc = metricDesc("tasks",
		"Tasks in the store by state, read at most once per second.", "state")
	oldestQueuedDesc = metricDesc("oldest_queued_task_age_seconds",
		"Time since the longest-waiting queued task could run (after its retry backoff); 0 when none is queued.")
	connectsDesc = metricDesc("connects_total",
		"Handshakes that attached a worker connection to a session, new or resumed.")
	resumesDesc = metricDesc("resumes_total",
		"Handshakes that resumed a worker's existing session.")
	disconnectsDesc = metricDesc("disconnects_total",
		"Worker connections of a session that ended, for any reason.")
	stateSyncsDesc = metricDesc("state_syncs_total",
		"State syncs received from workers that started a new session.")
	handshakesRejectedDesc = metricDesc("handshakes_rejected_total",
		"Worker handshakes that ended with a Reject, by reason. session_rate is a hello shed in a "+
			"reconnection storm; unauthenticated is a failed credential or token check.", "reason")
	connectionsRejectedDesc = metricDesc("connections_rejected_total",
		"WebSocket upgrade requests rejected before the handshake, by reason.", "reason")
	tlsHandshakeErrorsDesc = metricDesc("tls_handshake_errors_total",
		"TLS handshakes on the listener that failed.")
	framesRejectedDesc = metricDesc("frames_rejected_total",
		"Frames of open sessions that were rejected, by reason. Each one except unknown_type and "+
			"unexpected_type closed its connection.", "reason")
	duplicateFramesDesc = metricDesc("duplicate_frames_total",
		"Received task frames ignored because their sequence number was already received, as after a replay.")
	outcomesRejectedDesc = metricDesc("outcomes_rejected_total",
		"Task outcomes not applied, by reason: stale (a superseded attempt), duplicate (already applied) "+
			"or lost_cancel (the report of the cancel the coordinator sent for an attempt it had ended as lost).",
		"reason")
	checkpointsRejectedDesc = metricDesc("checkpoints_rejected_total",
		"Checkpoints not stored, by reason: stale (an attempt that no longer runs, or older than the "+
			"stored one) or invalid (no task reference, over the size limit, unknown task).", "reason")
	workersLostDesc = metricDesc("workers_lost_total",
		"Grace periods that ended without the worker's return while it had running attempts.")
	workersDrainedDesc = metricDesc("workers_drained_total",
		"Sessions that ended after the worker announced draining.")
	framesSentDesc = metricDesc("frames_sent_total",
		"WebSocket messages written to workers.")
	sentBytesDesc = metricDesc("sent_bytes_total",
		"Bytes of the WebSocket messages written to workers, after compression.")
)

// Describe sends the descriptions of every metric that Collect sends.
func (c *serverCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		sessionsDesc, tasksDesc, oldestQueuedDesc, connectsDesc, resumesDesc, disconnectsDesc,
		stateSyncsDesc, handshakesRejectedDesc, connectionsRejectedDesc, tlsHandshakeErrorsDesc,
		framesRejectedDesc, duplicateFramesDesc, outcomesRejectedDesc, checkpointsRejectedDesc,
		workersLostDesc, workersDrainedDesc, framesSentDesc, sentBytesDesc,
	} {
		ch <- d
	}
}

// Collect reads the counters and gauges.
func (c *serverCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	m := &s.metrics
	c.collectSessions(ch)
	c.collectTasks(ch)

	counter := func(desc *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(v), labels...)
	}
	counter(connectsDesc, m.connects.Load())
	counter(resumesDesc, m.resumes.Load())
	counter(disconnectsDesc, m.disconnects.Load())
	counter(stateSyncsDesc, m.stateSyncs.Load())

	for reason := range numHandshakeRejectReasons {
		v := m.handshakeRejects[reason].Load()
		switch reason {
		case handshakeUnauthenticated:
			v = s.authFailures.Load()
		case handshakeSessionRate:
			v = s.overloadedRejects.Load()
		}
		counter(handshakesRejectedDesc, v, handshakeRejectLabels[reason])
	}
	for reason := range numConnectionRejectReasons {
		counter(connectionsRejectedDesc, m.connectionRejects[reason].Load(), connectionRejectLabels[reason])
	}
	counter(tlsHandshakeErrorsDesc, m.tlsHandshakeErrors.Load())

	for reason := range numCountedFrameRejectReasons {
		counter(framesRejectedDesc, m.frameRejects[reason].Load(), frameRejectLabels[reason])
	}
	tagged := s.rejected.snapshot()
	counter(framesRejectedDesc, tagged[protocol.RejectUntagged], frameUntaggedLabel)
	counter(framesRejectedDesc, tagged[protocol.RejectBadTag], frameBadTagLabel)
	counter(framesRejectedDesc, s.unknownFrames.Load(), frameUnknownTypeLabel)
	counter(framesRejectedDesc, s.unexpectedFrames.Load(), frameUnexpectedTypeLabel)
	counter(duplicateFramesDesc, s.duplicateFrames.Load())

	counter(outcomesRejectedDesc, s.staleOutcomes.Load(), "stale")
	counter(outcomesRejectedDesc, s.duplicateOutcomes.Load(), "duplicate")
	counter(outcomesRejectedDesc, s.lostCancelOutcomes.Load(), "lost_cancel")
	counter(checkpointsRejectedDesc, s.checkpoints.stale.Load(), "stale")
	counter(checkpointsRejectedDesc, s.checkpoints.rejected.Load(), "invalid")
	counter(workersLostDesc, s.lostWorkers.Load())
	counter(workersDrainedDesc, s.drainedWorkers.Load())
	counter(framesSentDesc, s.framesSent.Load())
	counter(sentBytesDesc, s.bytesSent.Load())
}

// collectSessions counts the sessions by state under s.mu, as Stats does.
func (c *serverCollector) collectSessions(ch chan<- prometheus.Metric) {
	s := c.s
	var connected, draining, detached int
	s.mu.Lock()
	for _, ss := range s.sessions {
		switch {
		case ss.attached() == nil:
			detached++
		case ss.draining.Load():
			draining++
		default:
			connected++
		}
	}
	s.mu.Unlock()
	gauge := func(v int, state string) {
		ch <- prometheus.MustNewConstMetric(sessionsDesc, prometheus.GaugeValue, float64(v), state)
	}
	gauge(connected, "connected")
	gauge(draining, "draining")
	gauge(detached, "detached")
	gauge(int(s.pendingHandshakes.Load()), "pending_handshake")
}

// collectTasks sends the task gauges, every state included so that a
// state without tasks reads 0 rather than missing. It sends nothing when
// the counts are unavailable.
func (c *serverCollector) collectTasks(ch chan<- prometheus.Metric) {
	counts, ok := c.s.cachedTaskCounts()
	if !ok {
		return
	}
	for _, state := range []string{api.StateQueued, api.StateRunning, api.StateSucceeded, api.StateFailed,
		api.StateCancelled, api.StateTimedOut} {
		ch <- prometheus.MustNewConstMetric(tasksDesc, prometheus.GaugeValue, float64(counts.ByState[state]), state)
	}
	age := 0.0
	if !counts.OldestReady.IsZero() {
		age = max(time.Since(counts.OldestReady).Seconds(), 0)
	}
	ch <- prometheus.MustNewConstMetric(oldestQueuedDesc, prometheus.GaugeValue, age)
}
