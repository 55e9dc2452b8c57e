package coordinator

import (
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/protocol/pb"
)

// The coordinator keeps the newest worker_metrics summary of each worker's
// session in memory, one per worker, and drops it with the session: when
// the worker starts a new session, or when session_ttl ends a detached
// one. The summaries are not stored, so a restarted coordinator shows none
// until each worker sends its next one.

// workerSummary is the newest summary of one worker and the session that
// sent it.
type workerSummary struct {
	sessionID string
	metrics   *pb.WorkerMetrics
	received  time.Time
}

// workerSummaries holds a Server's summaries by worker ID. Server.mu
// guards the map, because each access checks it against Server.sessions.
type workerSummaries struct {
	byWorker map[string]workerSummary
}

func newWorkerSummaries() *workerSummaries {
	return &workerSummaries{byWorker: map[string]workerSummary{}}
}

func (s *Server) summaries() *workerSummaries {
	return s.workerSummaries
}

// handleWorkerMetrics keeps a worker's summary in place of its previous
// one. A summary from a session that is no longer the worker's current
// one is dropped.
func (s *Server) handleWorkerMetrics(ss *session, _ *connection, frame *pb.Frame) {
	metrics := frame.GetWorkerMetrics()
	summaries := s.summaries()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sessions[ss.workerID] != ss {
		return
	}
	summaries.byWorker[ss.workerID] = workerSummary{sessionID: ss.id, metrics: metrics, received: time.Now()}
	if len(summaries.byWorker) > len(s.sessions) {
		s.pruneSummariesLocked(summaries)
	}
	ss.log.Trace("worker metrics received", "reconnects", metrics.GetReconnects(),
		"events_dropped", metrics.GetEventsDropped())
}

// pruneSummariesLocked drops the summaries whose session is gone. The
// caller holds s.mu.
func (s *Server) pruneSummariesLocked(summaries *workerSummaries) {
	for workerID, summary := range summaries.byWorker {
		if ss := s.sessions[workerID]; ss == nil || ss.id != summary.sessionID {
			delete(summaries.byWorker, workerID)
		}
	}
}

// fillWorkerMetrics sets wk.Metrics to the worker's newest summary, if its
// session still exists. The caller holds s.mu.
func (s *Server) fillWorkerMetrics(wk *api.Worker) {
	summaries := s.summaries()
	summary, ok := summaries.byWorker[wk.ID]
	if !ok {
		return
	}
	if ss := s.sessions[wk.ID]; ss == nil || ss.id != summary.sessionID {
		delete(summaries.byWorker, wk.ID)
		return
	}
	wk.Metrics = apiWorkerMetrics(summary)
}

// currentSummaries returns the summaries of the current sessions, by
// worker ID, and drops the others.
func (s *Server) currentSummaries() map[string]workerSummary {
	summaries := s.summaries()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneSummariesLocked(summaries)
	out := make(map[string]workerSummary, len(summaries.byWorker))
	for workerID, summary := range summaries.byWorker {
		out[workerID] = summary
	}
	return out
}

// apiWorkerMetrics converts a kept summary to its API form.
func apiWorkerMetrics(summary workerSummary) *api.WorkerMetrics {
	m := summary.metrics
	return &api.WorkerMetrics{
		WindowStart:    time.UnixMilli(m.GetWindowStartUnixMs()).UTC(),
		WindowEnd:      time.UnixMilli(m.GetWindowEndUnixMs()).UTC(),
		Received:       summary.received.UTC(),
		Reconnects:     m.GetReconnects(),
		DisconnectedMs: m.GetDisconnectedMs(),
		SmoothedRTTMs:  float64(m.GetSmoothedRttMicros()) / 1000,
		FramesIn:       m.GetFramesIn(),
		FramesOut:      m.GetFramesOut(),
		BytesIn:        m.GetBytesIn(),
		BytesOut:       m.GetBytesOut(),
		Outcomes: map[string]uint64{
			api.StateSucceeded: m.GetTasksSucceeded(),
			api.StateFailed:    m.GetTasksFailed(),
			api.StateCancelled: m.GetTasksCancelled(),
			api.StateTimedOut:  m.GetTasksTimedOut(),
		},
		PluginRestarts: m.GetPluginRestarts(),
		EventsDropped:  m.GetEventsDropped(),
	}
}

// workerMetricsCollector returns a collector of the workers' summaries,
// one series per worker and metric with a worker_id label. The worker IDs
// are bounded by the sessions, because a summary leaves with its session.
// The counts restart from zero when a worker's metrics plugin restarts,
// which Prometheus treats as a counter reset.
func (s *Server) workerMetricsCollector() prometheus.Collector {
	return &summaryCollector{server: s}
}

// summaryMetric is one metric of the summary collector.
type summaryMetric struct {
	desc      *prometheus.Desc
	valueType prometheus.ValueType
	value     func(*pb.WorkerMetrics) float64
}

// summaryCollector exposes the summaries at scrape time.
type summaryCollector struct {
	server *Server
}

var summaryMetrics = []summaryMetric{
	summaryCounter("reconnects_total", "Sessions the worker opened again after a lost one.",
		func(m *pb.WorkerMetrics) float64 { return float64(m.GetReconnects()) }),
	summaryCounter("disconnected_seconds_total", "Time the worker spent without a session.",
		func(m *pb.WorkerMetrics) float64 { return float64(m.GetDisconnectedMs()) / 1000 }),
	summaryGauge("rtt_smoothed_seconds", "The worker's smoothed heartbeat round-trip time.",
		func(m *pb.WorkerMetrics) float64 { return float64(m.GetSmoothedRttMicros()) / 1e6 }),
	summaryCounter("frames_received_total", "WebSocket messages the worker received.",
		func(m *pb.WorkerMetrics) float64 { return float64(m.GetFramesIn()) }),
	summaryCounter("frames_sent_total", "WebSocket messages the worker sent.",
		func(m *pb.WorkerMetrics) float64 { return float64(m.GetFramesOut()) }),
	summaryCounter("received_bytes_total", "Bytes the worker received, as on the wire.",
		func(m *pb.WorkerMetrics) float64 { return float64(m.GetBytesIn()) }),
	summaryCounter("sent_bytes_total", "Bytes the worker sent, as on the wire.",
		func(m *pb.WorkerMetrics) float64 { return float64(m.GetBytesOut()) }),
	summaryCounter("plugin_restarts_total", "Crashed plugins that the worker host launched again.",
		func(m *pb.WorkerMetrics) float64 { return float64(m.GetPluginRestarts()) }),
	summaryCounter("events_dropped_total", "Host events that the worker's metrics plugin did not receive.",
		func(m *pb.WorkerMetrics) float64 { return float64(m.GetEventsDropped()) }),
	summaryGauge("window_end_timestamp_seconds", "End of the summary's window, by the worker's clock.",
		func(m *pb.WorkerMetrics) float64 { return float64(m.GetWindowEndUnixMs()) / 1000 }),
	summaryGauge("window_start_timestamp_seconds",
		"Start of the summary's window, when the worker's metrics plugin started, by the worker's clock.",
		func(m *pb.WorkerMetrics) float64 { return float64(m.GetWindowStartUnixMs()) / 1000 }),
}

// outcomesDesc has a status label besides worker_id.
var outcomesDesc = prometheus.NewDesc("dtf_worker_summary_task_outcomes_total",
	"Task attempts finished on the worker, by status.", []string{"worker_id", "status"}, nil)

func summaryCounter(name, help string, value func(*pb.WorkerMetrics) float64) summaryMetric {
	return summaryMetric{desc: summaryDesc(name, help), valueType: prometheus.CounterValue, value: value}
}

func summaryGauge(name, help string, value func(*pb.WorkerMetrics) float64) summaryMetric {
	return summaryMetric{desc: summaryDesc(name, help), valueType: prometheus.GaugeValue, value: value}
}

func summaryDesc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc("dtf_worker_summary_"+name, help+" From the newest summary of the worker's "+
		"metrics plugin, counted since that plugin started.", []string{"worker_id"}, nil)
}

// Describe sends the descriptions of every summary metric.
func (c *summaryCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, metric := range summaryMetrics {
		ch <- metric.desc
	}
	ch <- outcomesDesc
}

// Collect sends the metrics of every worker that has a summary, in
// worker ID order.
func (c *summaryCollector) Collect(ch chan<- prometheus.Metric) {
	summaries := c.server.currentSummaries()
	ids := make([]string, 0, len(summaries))
	for id := range summaries {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		m := summaries[id].metrics
		for _, metric := range summaryMetrics {
			ch <- prometheus.MustNewConstMetric(metric.desc, metric.valueType, metric.value(m), id)
		}
		outcomes := map[string]uint64{
			api.StateSucceeded: m.GetTasksSucceeded(),
			api.StateFailed:    m.GetTasksFailed(),
			api.StateCancelled: m.GetTasksCancelled(),
			api.StateTimedOut:  m.GetTasksTimedOut(),
		}
		for status, count := range outcomes {
			ch <- prometheus.MustNewConstMetric(outcomesDesc, prometheus.CounterValue, float64(count), id, status)
		}
	}
}
