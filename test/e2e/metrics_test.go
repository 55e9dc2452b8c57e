package e2e

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/test/cluster"
)

// connectionMetrics are the coordinator's connection counters and gauges
// that a cut moves.
type connectionMetrics struct {
	connects, resumes, disconnects, stateSyncs float64
	connectedSessions                          float64
}

// A worker cut off by the fault proxy reconnects and resumes its session.
// The coordinator's /metrics, fetched over HTTP with a read token, is valid
// exposition text before and after the cut, and the cut moved the connect,
// resume and disconnect counters.
func TestMetricsShowReconnectAfterCut(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, func(c *cluster.CoordinatorConfig) {
		c.Extra = "api {\n  auth = \"token\"\n}\n"
	})
	readToken := createReadToken(t, e.coordConfig)
	e.client.Token = readToken
	e.startWorker("worker-1", 1)
	e.waitConnected("worker-1")

	status, _, err := fetchMetrics(e.addr, "")
	require.NoError(t, err)
	assert.Equal(t, http.StatusUnauthorized, status, "/metrics without a token")

	before := e.connectionMetrics(readToken)
	require.GreaterOrEqual(t, before.connects, 1.0, "connects before the cut")
	require.Equal(t, 1.0, before.connectedSessions, "connected sessions before the cut")

	require.Positive(t, e.proxy.Cut(), "no connection to cut")
	var after connectionMetrics
	err = cluster.Poll(context.Background(), 30*time.Second, 100*time.Millisecond, func() (bool, error) {
		after = e.connectionMetrics(readToken)
		return after.connects > before.connects && after.connectedSessions == 1, nil
	})
	require.NoError(t, err, "metrics after the cut: %+v\n%s", after, e.logs())

	assert.Greater(t, after.disconnects, before.disconnects, "disconnects_total moved")
	assert.Greater(t, after.resumes, before.resumes, "resumes_total moved: the worker resumed its session")
	assert.Equal(t, before.stateSyncs, after.stateSyncs, "a resumed session needs no state sync")
}

// fetchMetrics GETs /metrics of the coordinator at addr, with token unless
// empty, and parses the body when the status is 200.
func fetchMetrics(addr, token string) (int, map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return 0, nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, nil, nil
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return resp.StatusCode, nil, fmt.Errorf("invalid exposition text: %w", err)
	}
	return resp.StatusCode, families, nil
}

// connectionMetrics scrapes /metrics and returns the connection metrics.
func (e *env) connectionMetrics(token string) connectionMetrics {
	e.t.Helper()
	status, families, err := fetchMetrics(e.addr, token)
	require.NoError(e.t, err)
	require.Equal(e.t, http.StatusOK, status)
	return connectionMetrics{
		connects:          e.metricValue(families, "dtf_coordinator_connects_total"),
		resumes:           e.metricValue(families, "dtf_coordinator_resumes_total"),
		disconnects:       e.metricValue(families, "dtf_coordinator_disconnects_total"),
		stateSyncs:        e.metricValue(families, "dtf_coordinator_state_syncs_total"),
		connectedSessions: e.metricValue(families, "dtf_coordinator_sessions", "state", "connected"),
	}
}

// metricValue returns the value of the counter or gauge name whose labels
// include labelPairs, given as name, value pairs.
func (e *env) metricValue(families map[string]*dto.MetricFamily, name string, labelPairs ...string) float64 {
	e.t.Helper()
	family, ok := families[name]
	require.True(e.t, ok, "metric %s missing", name)
	for _, m := range family.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		matches := true
		for i := 0; i+1 < len(labelPairs); i += 2 {
			matches = matches && labels[labelPairs[i]] == labelPairs[i+1]
		}
		if !matches {
			continue
		}
		if family.GetType() == dto.MetricType_COUNTER {
			return m.GetCounter().GetValue()
		}
		return m.GetGauge().GetValue()
	}
	require.Failf(e.t, "series missing", "metric %s has no series with labels %v", name, labelPairs)
	return 0
}
