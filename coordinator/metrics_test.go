package coordinator

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/config"
	"github.com/dtf-io/dtf/internal/testcert"
	"github.com/dtf-io/dtf/protocol/pb"
)

// scrapeMetrics fetches /metrics with token, unless empty, and parses the
// exposition text with the Prometheus text parser, which rejects invalid
// text and metric names outside the classic character set.
func scrapeMetrics(t *testing.T, ts *testServer, token string) map[string]*dto.MetricFamily {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, ts.url+"/metrics", nil)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := httpClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, resp.Header.Get("Content-Type"), "text/plain")
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	require.NoError(t, err, "invalid exposition text")
	return families
}

// metricValue returns the value of the counter or gauge name whose labels
// include labels, given as name, value pairs. It fails the test when no
// such series exists.
func metricValue(t *testing.T, families map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	family, ok := families[name]
	require.True(t, ok, "metric %s missing", name)
	for _, m := range family.GetMetric() {
		if !metricHasLabels(m, labels) {
			continue
		}
		switch family.GetType() {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue()
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue()
		default:
			t.Fatalf("metric %s is a %s, not a counter or gauge", name, family.GetType())
		}
	}
	t.Fatalf("metric %s has no series with labels %v", name, labels)
	return 0
}

func metricHasLabels(m *dto.Metric, pairs []string) bool {
	for i := 0; i+1 < len(pairs); i += 2 {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == pairs[i] && l.GetValue() == pairs[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// histogramCount returns the number of observations of histogram name.
func histogramCount(t *testing.T, families map[string]*dto.MetricFamily, name string) uint64 {
	t.Helper()
	family, ok := families[name]
	require.True(t, ok, "metric %s missing", name)
	require.Equal(t, dto.MetricType_HISTOGRAM, family.GetType(), "type of %s", name)
	require.Len(t, family.GetMetric(), 1)
	return family.GetMetric()[0].GetHistogram().GetSampleCount()
}

// waitMetric polls /metrics until the series reaches want.
func waitMetric(t *testing.T, ts *testServer, want float64, name string, labels ...string) {
	t.Helper()
	var got float64
	ok := assert.Eventually(t, func() bool {
		got = metricValue(t, scrapeMetrics(t, ts, ""), name, labels...)
		return got == want
	}, waitFor, 20*time.Millisecond)
	if !ok {
		t.Fatalf("%s%v is %v, want %v", name, labels, got, want)
	}
}

func TestMetricsExpositionNamesAndTypes(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	families := scrapeMetrics(t, ts, "")

	want := map[string]dto.MetricType{
		"dtf_coordinator_sessions":                       dto.MetricType_GAUGE,
		"dtf_coordinator_tasks":                          dto.MetricType_GAUGE,
		"dtf_coordinator_oldest_queued_task_age_seconds": dto.MetricType_GAUGE,
		"dtf_coordinator_connects_total":                 dto.MetricType_COUNTER,
		"dtf_coordinator_resumes_total":                  dto.MetricType_COUNTER,
		"dtf_coordinator_disconnects_total":              dto.MetricType_COUNTER,
		"dtf_coordinator_state_syncs_total":              dto.MetricType_COUNTER,
		"dtf_coordinator_handshakes_rejected_total":      dto.MetricType_COUNTER,
		"dtf_coordinator_connections_rejected_total":     dto.MetricType_COUNTER,
		"dtf_coordinator_tls_handshake_errors_total":     dto.MetricType_COUNTER,
		"dtf_coordinator_frames_rejected_total":          dto.MetricType_COUNTER,
		"dtf_coordinator_duplicate_frames_total":         dto.MetricType_COUNTER,
		"dtf_coordinator_outcomes_rejected_total":        dto.MetricType_COUNTER,
		"dtf_coordinator_checkpoints_rejected_total":     dto.MetricType_COUNTER,
		"dtf_coordinator_workers_lost_total":             dto.MetricType_COUNTER,
		"dtf_coordinator_workers_drained_total":          dto.MetricType_COUNTER,
		"dtf_coordinator_frames_sent_total":              dto.MetricType_COUNTER,
		"dtf_coordinator_sent_bytes_total":               dto.MetricType_COUNTER,
		"dtf_coordinator_dispatch_latency_seconds":       dto.MetricType_HISTOGRAM,
		"dtf_coordinator_store_commit_duration_seconds":  dto.MetricType_HISTOGRAM,
		"dtf_coordinator_store_batch_duration_seconds":   dto.MetricType_HISTOGRAM,
		"go_goroutines":                 dto.MetricType_GAUGE,
		"process_resident_memory_bytes": dto.MetricType_GAUGE,
	}
	for name, typ := range want {
		family, ok := families[name]
		if !assert.True(t, ok, "metric %s missing", name) {
			continue
		}
		assert.Equal(t, typ, family.GetType(), "type of %s", name)
		assert.NotEmpty(t, family.GetHelp(), "help of %s", name)
	}

	for name, family := range families {
		ours := strings.HasPrefix(name, "dtf_coordinator_")
		assert.True(t, ours || strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") ||
			strings.HasPrefix(name, "promhttp_"), "unexpected metric %s", name)
		if ours && family.GetType() == dto.MetricType_COUNTER {
			assert.True(t, strings.HasSuffix(name, "_total"), "counter %s lacks _total", name)
		}
	}

	for _, state := range []string{"connected", "draining", "detached", "pending_handshake"} {
		assert.Zero(t, metricValue(t, families, "dtf_coordinator_sessions", "state", state), state)
	}
	for _, state := range []string{"queued", "running", "succeeded", "failed", "cancelled", "timed_out"} {
		assert.Zero(t, metricValue(t, families, "dtf_coordinator_tasks", "state", state), state)
	}
	for _, reason := range handshakeRejectLabels {
		assert.Zero(t, metricValue(t, families, "dtf_coordinator_handshakes_rejected_total", "reason", reason))
	}
	for _, reason := range []string{"oversize", "malformed", "invalid_ack", "sequence_gap", "handshake_type",
		"untagged", "bad_tag", "unknown_type", "unexpected_type"} {
		assert.Zero(t, metricValue(t, families, "dtf_coordinator_frames_rejected_total", "reason", reason))
	}
}

func TestMetricsCountConnectSyncAndResume(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	w := newSeqWorker(t, ts, "w1")
	require.NotNil(t, w.connect().GetWelcome())
	w.sync()

	families := scrapeMetrics(t, ts, "")
	assert.Equal(t, 1.0, metricValue(t, families, "dtf_coordinator_connects_total"))
	assert.Equal(t, 0.0, metricValue(t, families, "dtf_coordinator_resumes_total"))
	assert.Equal(t, 1.0, metricValue(t, families, "dtf_coordinator_state_syncs_total"))
	assert.Equal(t, 1.0, metricValue(t, families, "dtf_coordinator_sessions", "state", "connected"))
	assert.Positive(t, metricValue(t, families, "dtf_coordinator_frames_sent_total"))
	assert.Positive(t, metricValue(t, families, "dtf_coordinator_sent_bytes_total"))

	w.cut()
	waitMetric(t, ts, 1, "dtf_coordinator_sessions", "state", "detached")
	families = scrapeMetrics(t, ts, "")
	assert.Equal(t, 1.0, metricValue(t, families, "dtf_coordinator_disconnects_total"))
	assert.Equal(t, 0.0, metricValue(t, families, "dtf_coordinator_sessions", "state", "connected"))

	welcome := w.connect().GetWelcome()
	require.NotNil(t, welcome)
	require.True(t, welcome.GetResumed())
	families = scrapeMetrics(t, ts, "")
	assert.Equal(t, 2.0, metricValue(t, families, "dtf_coordinator_connects_total"))
	assert.Equal(t, 1.0, metricValue(t, families, "dtf_coordinator_resumes_total"))
	assert.Equal(t, 1.0, metricValue(t, families, "dtf_coordinator_state_syncs_total"), "a resume needs no sync")
	assert.Equal(t, 1.0, metricValue(t, families, "dtf_coordinator_sessions", "state", "connected"))
	assert.Equal(t, 0.0, metricValue(t, families, "dtf_coordinator_sessions", "state", "detached"))
}

func TestMetricsCountRejectedFrames(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))

	// A text message is not a frame.
	w, _ := connectSynced(t, ts, "w1", []string{"command"})
	w.writeMu.Lock()
	require.NoError(t, w.conn.WriteMessage(websocket.TextMessage, []byte("not a frame")))
	w.writeMu.Unlock()
	w.waitClosed()
	waitMetric(t, ts, 1, "dtf_coordinator_frames_rejected_total", "reason", "malformed")

	// An acknowledgement of a frame the coordinator never sent ends the
	// session.
	w2, _ := connectSynced(t, ts, "w2", []string{"command"})
	w2.send(&pb.Frame{Seq: 2, Ack: 1000, Body: &pb.Frame_Heartbeat{Heartbeat: &pb.Heartbeat{}}})
	w2.waitClosed()
	waitMetric(t, ts, 1, "dtf_coordinator_frames_rejected_total", "reason", "invalid_ack")

	// A hello after the handshake closes the connection.
	w3, _ := connectSynced(t, ts, "w3", []string{"command"})
	w3.send(&pb.Frame{Body: &pb.Frame_Hello{Hello: &pb.Hello{WorkerId: "w3"}}})
	w3.waitClosed()
	waitMetric(t, ts, 1, "dtf_coordinator_frames_rejected_total", "reason", "handshake_type")

	families := scrapeMetrics(t, ts, "")
	assert.Zero(t, metricValue(t, families, "dtf_coordinator_frames_rejected_total", "reason", "sequence_gap"))
}

func TestMetricsCountStormRejection(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.Workers.MaxSessionsPerSecond = 1
	cfg.Workers.SessionBurst = 1
	ts := startServer(t, cfg)

	first, conn, err := dialHello(ts, "w1")
	require.NoError(t, err)
	defer conn.Close()
	require.NotNil(t, first.GetWelcome())
	second, conn2, err := dialHello(ts, "w2")
	require.NoError(t, err)
	defer conn2.Close()
	require.Equal(t, pb.Reject_CODE_OVERLOADED, second.GetReject().GetCode(), "second hello: %v", second)

	families := scrapeMetrics(t, ts, "")
	assert.Equal(t, 1.0, metricValue(t, families, "dtf_coordinator_handshakes_rejected_total",
		"reason", "session_rate"))
	assert.Equal(t, 1.0, metricValue(t, families, "dtf_coordinator_connects_total"))
}

func TestMetricsTasksAndLatencies(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	submit(t, ts, commandSpec(), commandSpec())
	// The task counts are cached for up to a second.
	waitMetric(t, ts, 2, "dtf_coordinator_tasks", "state", "queued")
	families := scrapeMetrics(t, ts, "")
	assert.Positive(t, metricValue(t, families, "dtf_coordinator_oldest_queued_task_age_seconds"))
	assert.Positive(t, histogramCount(t, families, "dtf_coordinator_store_commit_duration_seconds"),
		"the submission committed a batch")
	assert.Positive(t, histogramCount(t, families, "dtf_coordinator_store_batch_duration_seconds"))
	assert.Zero(t, histogramCount(t, families, "dtf_coordinator_dispatch_latency_seconds"))

	w, _ := connectSynced(t, ts, "w1", []string{"command"})
	w.expect("assign")
	w.expect("assign")
	waitMetric(t, ts, 2, "dtf_coordinator_tasks", "state", "running")
	families = scrapeMetrics(t, ts, "")
	assert.Equal(t, uint64(2), histogramCount(t, families, "dtf_coordinator_dispatch_latency_seconds"))
	assert.Zero(t, metricValue(t, families, "dtf_coordinator_tasks", "state", "queued"))
	assert.Zero(t, metricValue(t, families, "dtf_coordinator_oldest_queued_task_age_seconds"))
}

func TestMetricsRequireReadToken(t *testing.T) {
	cfg := testConfig(t, "")
	cfg.API.Auth = config.APIAuthToken
	ts := startServer(t, cfg)

	resp, err := httpClient.Get(ts.url + "/metrics")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)

	read := createToken(t, ts, RoleRead, nil)
	families := scrapeMetrics(t, ts, read)
	assert.Contains(t, families, "dtf_coordinator_connects_total")
}

func TestTLSHandshakeErrorsCountedAndRateLimited(t *testing.T) {
	ca, err := testcert.NewCA("dtf test CA")
	require.NoError(t, err)
	files, err := ca.WriteServerFiles(t.TempDir(), "127.0.0.1")
	require.NoError(t, err)
	cfg := testConfig(t, "")
	cfg.TLS = config.TLS{CertFile: files.CertFile, KeyFile: files.KeyFile}
	logs := &logBuffer{next: testLogWriter{t}}
	ts := startServerLogging(t, cfg, logs)

	// Each connection sends bytes that are not a TLS record, so net/http
	// logs a failed handshake for each.
	const attempts = 20
	for i := range attempts {
		conn, err := net.DialTimeout("tcp", ts.Addr(), waitFor)
		require.NoError(t, err)
		_ = conn.SetDeadline(time.Now().Add(waitFor))
		_, err = fmt.Fprintf(conn, "GET /healthz HTTP/1.1\r\nHost: x%d\r\n\r\n", i)
		require.NoError(t, err)
		_, _ = conn.Read(make([]byte, 512))
		conn.Close()
	}

	client := &http.Client{Timeout: waitFor, Transport: &http.Transport{
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{RootCAs: ca.Pool()},
	}}
	var value float64
	require.Eventually(t, func() bool {
		resp, err := client.Get("https://" + ts.Addr() + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		parser := expfmt.NewTextParser(model.LegacyValidation)
		families, err := parser.TextToMetricFamilies(resp.Body)
		if err != nil {
			return false
		}
		value = metricValue(t, families, "dtf_coordinator_tls_handshake_errors_total")
		return value == attempts
	}, waitFor, 20*time.Millisecond, "tls_handshake_errors_total is %v", value)

	logs.mu.Lock()
	lines := strings.Count(logs.buf.String(), "TLS handshake error")
	logs.mu.Unlock()
	assert.Positive(t, lines)
	assert.Less(t, lines, attempts/2, "the handshake errors are logged at most once per second")
}
