package exporter

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dtf-io/dtf/plugin/pb"
	"github.com/dtf-io/dtf/sdk"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// scrape fetches the exposition of e and parses it with the Prometheus
// text parser, which fails on text that a Prometheus server would reject.
func scrape(t *testing.T, e *Exporter) expositionFamilies {
	t.Helper()
	recorder := httptest.NewRecorder()
	e.Handler().ServeHTTP(recorder, httptest.NewRequest(http.MethodGet, MetricsPath, nil))
	require.Equal(t, http.StatusOK, recorder.Code)
	return parseExposition(t, recorder.Body)
}

func parseExposition(t *testing.T, body io.Reader) expositionFamilies {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(body)
	require.NoError(t, err, "exposition is not valid Prometheus text")
	out := expositionFamilies{}
	for name, family := range families {
		for _, metric := range family.GetMetric() {
			labels := map[string]string{}
			for _, pair := range metric.GetLabel() {
				labels[pair.GetName()] = pair.GetValue()
			}
			value := metric.GetCounter().GetValue() + metric.GetGauge().GetValue() +
				float64(metric.GetHistogram().GetSampleCount())
			out[name] = append(out[name], sample{labels: labels, value: value})
		}
	}
	return out
}

// expositionFamilies maps a metric name to its series. A histogram's value
// is its sample count.
type expositionFamilies map[string][]sample

type sample struct {
	labels map[string]string
	value  float64
}

// value returns the value of the series of name whose labels include the
// given name=value pairs, and fails the test when there is none.
func (f expositionFamilies) value(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	for _, s := range f[name] {
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			if s.labels[labels[i]] != labels[i+1] {
				match = false
			}
		}
		if match {
			return s.value
		}
	}
	t.Fatalf("no series %s with labels %v", name, labels)
	return 0
}

func state(name, reason string) sdk.HostEvent {
	return sdk.HostEvent{State: &sdk.StateChange{State: name, Reason: reason}}
}

func record(t *testing.T, e *Exporter, batch sdk.EventBatch) {
	t.Helper()
	require.NoError(t, e.Record(context.Background(), batch))
}

func events(list ...sdk.HostEvent) sdk.EventBatch {
	return sdk.EventBatch{Events: list}
}

// configure calls Configure through the SDK's gRPC adapter, which the
// plugin binary serves, so that the checks see what the host receives.
func configure(e *Exporter, config string, validateOnly bool) (*pb.MetricsConfigureResponse, error) {
	return sdk.NewMetricsServer(e).Configure(context.Background(),
		&pb.ConfigureRequest{ConfigJson: []byte(config), ValidateOnly: validateOnly})
}

func TestExpositionBeforeAnyEvent(t *testing.T) {
	families := scrape(t, New(Options{}))
	assert.Zero(t, families.value(t, "dtf_worker_reconnects_total"))
	assert.Zero(t, families.value(t, "dtf_worker_connected"))
	assert.Equal(t, 1.0, families.value(t, "dtf_worker_sent_compression_ratio"))
	assert.Zero(t, families.value(t, "dtf_worker_task_outcomes_total", "status", "succeeded"))
	assert.Zero(t, families.value(t, "dtf_worker_events_dropped_total", "reason", "buffer_full"))
	assert.NotEmpty(t, families["go_goroutines"], "the Go runtime collector is registered")
}

// Every metric name follows the Prometheus conventions that the plugin
// promises: the dtf_worker_ prefix, base units, _total only on counters.
func TestMetricNamesFollowConventions(t *testing.T) {
	recorder := httptest.NewRecorder()
	New(Options{}).Handler().ServeHTTP(recorder, httptest.NewRequest(http.MethodGet, MetricsPath, nil))
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(recorder.Body)
	require.NoError(t, err)
	for name, family := range families {
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
			continue
		}
		assert.True(t, strings.HasPrefix(name, "dtf_worker_"), "%s has no dtf_worker_ prefix", name)
		isCounter := family.GetType().String() == "COUNTER"
		assert.Equal(t, isCounter, strings.HasSuffix(name, "_total"), "%s: _total on counters only", name)
		for _, unit := range []string{"_ms", "_milliseconds", "_micros", "_kb", "_mb"} {
			assert.NotContains(t, name, unit, "%s is not in base units", name)
		}
		assert.NotEmpty(t, family.GetHelp(), "%s has no help text", name)
	}
}

func TestReconnectCountersMove(t *testing.T) {
	e := New(Options{})
	record(t, e, events(
		state("connecting", ""),
		state("connected", ""),
		state("backing_off", "read tcp 127.0.0.1:1: connection reset by peer"),
		state("resuming", ""),
		state("connected", ""),
		sdk.HostEvent{Reconnected: &sdk.Reconnected{
			Outage: 1500 * time.Millisecond, Resumed: true, Attempts: 1,
		}},
	))

	families := scrape(t, e)
	assert.Equal(t, 1.0, families.value(t, "dtf_worker_reconnects_total"))
	assert.Equal(t, 1.0, families.value(t, "dtf_worker_resumed_reconnects_total"))
	assert.Equal(t, 1.0, families.value(t, "dtf_worker_disconnects_total"))
	assert.Equal(t, 2.0, families.value(t, "dtf_worker_connection_attempts_total"))
	assert.Equal(t, 1.5, families.value(t, "dtf_worker_disconnected_seconds_total"))
	assert.Equal(t, 1.0, families.value(t, "dtf_worker_outage_duration_seconds"), "one outage observed")
	assert.Equal(t, 1.0, families.value(t, "dtf_worker_connected"))
	assert.Equal(t, 1.0, families.value(t, "dtf_worker_connection_state", "state", "connected"))
	assert.Equal(t, 0.0, families.value(t, "dtf_worker_connection_state", "state", "resuming"))
	assert.Equal(t, 2.0, families.value(t, "dtf_worker_connection_state_changes_total", "state", "connected"))
	for _, s := range families["dtf_worker_connection_state_changes_total"] {
		assert.NotContains(t, s.labels["state"], "reset", "no free-text reason becomes a label")
	}
}

// A state this build does not know counts under "other", so the label keeps
// a fixed set of values.
func TestUnknownStateCountsAsOther(t *testing.T) {
	e := New(Options{})
	record(t, e, events(state("teleporting", ""), state("also-new", "")))
	families := scrape(t, e)
	assert.Equal(t, 2.0, families.value(t, "dtf_worker_connection_state_changes_total", "state", "other"))
	assert.Len(t, families["dtf_worker_connection_state_changes_total"], len(connectionStates)+1)
}

func TestConnectorStatsCountersMove(t *testing.T) {
	e := New(Options{})
	stats := func(in, out, raw, encoded uint64, samples ...time.Duration) sdk.HostEvent {
		return sdk.HostEvent{ConnectorStats: &sdk.ConnectorStats{
			FramesIn: in, FramesOut: out, BytesIn: in * 100, BytesOut: out * 100,
			FrameBytesOutRaw: raw, FrameBytesOutEncoded: encoded,
			SmoothedRTT: 2500 * time.Microsecond, RTTSamples: samples,
			SendQueueFrames: []int{1, 2, 3, 4, 5}, ReplayFrames: 6, ReplayBytes: 700,
		}}
	}
	record(t, e, events(stats(10, 20, 4000, 1000, 2*time.Millisecond, 3*time.Millisecond)))
	// A connector that restarted reports counters from zero again: its
	// values add to the totals instead of lowering them.
	record(t, e, events(stats(15, 30, 6000, 1500, 2500*time.Microsecond), stats(4, 5, 1000, 500)))

	families := scrape(t, e)
	assert.Equal(t, 19.0, families.value(t, "dtf_worker_frames_received_total"))
	assert.Equal(t, 35.0, families.value(t, "dtf_worker_frames_sent_total"))
	assert.Equal(t, 1900.0, families.value(t, "dtf_worker_received_bytes_total"))
	assert.Equal(t, 3500.0, families.value(t, "dtf_worker_sent_bytes_total"))
	assert.Equal(t, 3.5, families.value(t, "dtf_worker_sent_compression_ratio"), "7000 raw over 2000 encoded")
	assert.Equal(t, 3.0, families.value(t, "dtf_worker_rtt_seconds"), "three samples observed")
	assert.Equal(t, 0.0025, families.value(t, "dtf_worker_rtt_smoothed_seconds"))
	assert.Equal(t, 3.0, families.value(t, "dtf_worker_send_queue_frames", "priority", "checkpoint"))
	assert.Equal(t, 5.0, families.value(t, "dtf_worker_send_queue_frames", "priority", "telemetry"))
	assert.Equal(t, 6.0, families.value(t, "dtf_worker_replay_buffer_frames"))
	assert.Equal(t, 700.0, families.value(t, "dtf_worker_replay_buffer_bytes"))
}

func TestTaskRestartAndDropCountersMove(t *testing.T) {
	e := New(Options{})
	finished := func(s sdk.Status) sdk.HostEvent {
		return sdk.HostEvent{TaskFinished: &sdk.TaskFinished{Status: s, Duration: 1200 * time.Millisecond}}
	}
	restart := sdk.HostEvent{PluginRestart: &sdk.PluginRestart{
		Plugin: "command", Kind: "executor", Exit: "signal: killed",
	}}
	host := sdk.HostEvent{HostStats: &sdk.HostStats{RunningTasks: 2, HeldOutcomes: 3, Slots: 4}}
	record(t, e, sdk.EventBatch{
		Events:            []sdk.HostEvent{finished(sdk.StatusSucceeded), finished(sdk.StatusFailed), restart, host},
		DroppedBufferFull: 5,
	})
	record(t, e, sdk.EventBatch{
		Events:              []sdk.HostEvent{finished(sdk.StatusSucceeded), finished("")},
		DroppedBufferFull:   7,
		DroppedRecordFailed: 3,
	})

	families := scrape(t, e)
	assert.Equal(t, 2.0, families.value(t, "dtf_worker_task_outcomes_total", "status", "succeeded"))
	assert.Equal(t, 1.0, families.value(t, "dtf_worker_task_outcomes_total", "status", "failed"))
	assert.Equal(t, 1.0, families.value(t, "dtf_worker_task_outcomes_total", "status", "unspecified"))
	assert.Equal(t, 4.0, families.value(t, "dtf_worker_task_duration_seconds"))
	assert.Equal(t, 1.0, families.value(t, "dtf_worker_plugin_restarts_total", "plugin", "command", "kind", "executor"))
	assert.Equal(t, 7.0, families.value(t, "dtf_worker_events_dropped_total", "reason", "buffer_full"))
	assert.Equal(t, 3.0, families.value(t, "dtf_worker_events_dropped_total", "reason", "record_failed"))
	assert.Equal(t, 2.0, families.value(t, "dtf_worker_running_tasks"))
	assert.Equal(t, 3.0, families.value(t, "dtf_worker_held_outcomes"))
	assert.Equal(t, 4.0, families.value(t, "dtf_worker_slots"))

	summary, err := e.Summary(context.Background())
	require.NoError(t, err)
	assert.Equal(t, uint64(2), summary.TasksSucceeded)
	assert.Equal(t, uint64(1), summary.TasksFailed)
	assert.Equal(t, uint64(1), summary.PluginRestarts)
	assert.Equal(t, uint64(10), summary.EventsDropped)
}

// The summary counts since the plugin started and includes an outage that
// still lasts.
func TestSummaryWindow(t *testing.T) {
	e := New(Options{})
	lost := time.Now().Add(-3 * time.Second)
	lostEvent := state("backing_off", "cut")
	lostEvent.Time = lost
	record(t, e, events(
		state("connected", ""),
		sdk.HostEvent{ConnectorStats: &sdk.ConnectorStats{
			FramesIn: 8, FramesOut: 9, BytesIn: 80, BytesOut: 90, SmoothedRTT: 1500 * time.Microsecond,
		}},
		sdk.HostEvent{Reconnected: &sdk.Reconnected{Outage: 2 * time.Second}},
		lostEvent,
	))

	summary, err := e.Summary(context.Background())
	require.NoError(t, err)
	assert.Equal(t, uint64(1), summary.Reconnects)
	assert.GreaterOrEqual(t, summary.Disconnected, 5*time.Second, "2s outage plus the one since lost")
	assert.Equal(t, 1500*time.Microsecond, summary.SmoothedRTT)
	assert.Equal(t, uint64(8), summary.FramesIn)
	assert.Equal(t, uint64(90), summary.BytesOut)
	assert.False(t, summary.WindowEnd.Before(summary.WindowStart), "window ends after it starts")
}

func TestConfigureServesEndpoint(t *testing.T) {
	e := New(Options{})
	t.Cleanup(func() { require.NoError(t, e.Close(context.Background())) })
	resp, err := configure(e, `{"listen":"127.0.0.1:0","summary_interval":"250ms"}`, false)
	require.NoError(t, err)
	assert.Equal(t, int64(250), resp.GetSummaryIntervalMs())
	record(t, e, events(state("connected", "")))

	httpResp, err := http.Get("http://" + e.Addr() + MetricsPath)
	require.NoError(t, err)
	defer httpResp.Body.Close()
	require.Equal(t, http.StatusOK, httpResp.StatusCode)
	families := parseExposition(t, httpResp.Body)
	assert.Equal(t, 1.0, families.value(t, "dtf_worker_connected"))

	other, err := http.Get("http://" + e.Addr() + "/")
	require.NoError(t, err)
	other.Body.Close()
	assert.Equal(t, http.StatusNotFound, other.StatusCode)

	_, err = configure(e, `{}`, false)
	assert.Equal(t, codes.InvalidArgument, status.Code(err), "a second Configure is rejected")
	assert.Contains(t, status.Convert(err).Message(), "configured already")
}

func TestConfigureRejectsInvalidConfig(t *testing.T) {
	e := New(Options{})
	resp, err := configure(e, `{"listen":"0.0.0.0:9464"}`, false)
	require.NoError(t, err)
	require.Len(t, resp.GetProblems(), 1)
	assert.Equal(t, "listen", resp.GetProblems()[0].GetPath())
	assert.Contains(t, resp.GetProblems()[0].GetDetail(), "insecure = true")
	assert.Empty(t, e.Addr(), "nothing listens after a rejected config")
}

// validate_only checks the config and binds nothing, so that a check of
// a worker's config does not take the port of a running worker.
func TestConfigureValidateOnly(t *testing.T) {
	e := New(Options{})
	resp, err := configure(e, `{"listen":"127.0.0.1:0","summary_interval":"2s"}`, true)
	require.NoError(t, err)
	assert.Empty(t, resp.GetProblems())
	assert.Empty(t, e.Addr(), "validate_only binds no listener")

	resp, err = configure(e, `{"summary_interval":"forever"}`, true)
	require.NoError(t, err)
	require.Len(t, resp.GetProblems(), 1)
	assert.Equal(t, "summary_interval", resp.GetProblems()[0].GetPath())
}

func TestConfigureReportsBusyPort(t *testing.T) {
	first := New(Options{})
	t.Cleanup(func() { require.NoError(t, first.Close(context.Background())) })
	_, err := configure(first, `{"listen":"127.0.0.1:0"}`, false)
	require.NoError(t, err)

	second := New(Options{})
	_, err = configure(second, `{"listen":"`+first.Addr()+`"}`, false)
	assert.Equal(t, codes.Unavailable, status.Code(err))
	assert.Contains(t, status.Convert(err).Message(), first.Addr())
}
