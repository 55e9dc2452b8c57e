package e2e

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/test/cluster"
)

// startMetricsWorker starts a worker with the metrics plugin, whose
// summary interval is interval, and returns the plugin's settings with the
// address of its endpoint.
func (e *env) startMetricsWorker(id string, interval time.Duration) *cluster.MetricsPlugin {
	e.t.Helper()
	metrics := &cluster.MetricsPlugin{SummaryInterval: interval}
	config := filepath.Join(e.dir, id+".hcl")
	require.NoError(e.t, cluster.WriteWorkerConfig(config, cluster.WorkerConfig{
		Bin:               bin,
		URL:               "ws://" + e.proxy.Addr(),
		WorkerID:          id,
		Token:             token,
		DataDir:           filepath.Join(e.dir, id),
		Slots:             1,
		HeartbeatInterval: 500 * time.Millisecond,
		HeartbeatTimeout:  2 * time.Second,
		BackoffBase:       100 * time.Millisecond,
		BackoffCap:        time.Second,
		HealthyAfter:      3 * time.Second,
		Metrics:           metrics,
	}))
	p, err := cluster.Start(id, filepath.Join(e.dir, id+".log"), bin.Path("dtf"), []string{"worker", "-config", config})
	require.NoError(e.t, err)
	e.workers[id] = p
	return metrics
}

// scrapeCounter fetches url, checks that the body is valid Prometheus text
// exposition, and returns the value of the counter name. It returns an
// error while the endpoint cannot be reached, and fails the test on text
// that the parser rejects.
func scrapeCounter(t *testing.T, url, name string) (float64, error) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: status %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	require.NoError(t, err, "GET %s returned invalid exposition text", url)
	family, ok := families[name]
	require.True(t, ok, "GET %s has no %s", url, name)
	require.Len(t, family.GetMetric(), 1, "%s has one series", name)
	return family.GetMetric()[0].GetCounter().GetValue(), nil
}

// A cut of the worker's connection moves the reconnect counter of the
// worker's metrics endpoint, and the summary that reaches the coordinator
// reports the reconnect too.
func TestWorkerMetricsAfterCut(t *testing.T) {
	e := newEnv(t)
	metrics := e.startMetricsWorker("w-metrics", 300*time.Millisecond)
	e.waitConnected("w-metrics")
	ctx := context.Background()

	var before float64
	err := cluster.Poll(ctx, 30*time.Second, 50*time.Millisecond, func() (bool, error) {
		value, err := scrapeCounter(t, metrics.URL(), "dtf_worker_reconnects_total")
		before = value
		return err == nil, nil
	})
	require.NoError(t, err, "the worker's metrics endpoint did not come up\n%s", e.logs())
	assert.Zero(t, before, "no reconnect before the cut")

	require.Positive(t, e.proxy.Cut(), "the proxy had a connection to cut")

	err = cluster.Poll(ctx, 30*time.Second, 100*time.Millisecond, func() (bool, error) {
		value, err := scrapeCounter(t, metrics.URL(), "dtf_worker_reconnects_total")
		return err == nil && value >= before+1, nil
	})
	require.NoError(t, err, "dtf_worker_reconnects_total did not move after the cut\n%s", e.logs())

	// The coordinator shows the summary of the worker's current session
	// once a summary interval has passed after the reconnect.
	var summary *api.WorkerMetrics
	err = cluster.Poll(ctx, 30*time.Second, 100*time.Millisecond, func() (bool, error) {
		workers, err := e.client.ListWorkers(ctx)
		if err != nil {
			return false, nil
		}
		for _, w := range workers {
			if w.ID == "w-metrics" && w.Metrics != nil && w.Metrics.Reconnects >= 1 {
				summary = w.Metrics
				return true, nil
			}
		}
		return false, nil
	})
	require.NoError(t, err, "GET /v1/workers shows no summary with the reconnect\n%s", e.logs())
	assert.Positive(t, summary.DisconnectedMs, "the outage counts as time without a session")
	assert.Positive(t, summary.FramesOut)
	assert.Positive(t, summary.BytesIn)
	assert.False(t, summary.WindowEnd.Before(summary.WindowStart))
	assert.Contains(t, summary.Outcomes, api.StateSucceeded)
}
