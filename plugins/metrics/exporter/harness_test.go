package exporter

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/sdk"
	"github.com/dtf-io/dtf/sdk/sdktest"
)

// The exporter served through the SDK's gRPC adapter, as the plugin binary
// serves it: events recorded over gRPC reach the exposition and the
// summary.
func TestExporterThroughSDKHarness(t *testing.T) {
	e := New(Options{Version: "v-test"})
	t.Cleanup(func() { require.NoError(t, e.Close(context.Background())) })
	h := sdktest.NewMetrics(t, e)
	ctx := context.Background()

	info, err := h.Info(ctx)
	require.NoError(t, err)
	assert.Equal(t, Name, info.Name)
	assert.Equal(t, "v-test", info.Version)

	err = h.Validate(ctx, json.RawMessage(`{"listen":"0.0.0.0:1"}`))
	var configErr *sdk.ConfigError
	require.ErrorAs(t, err, &configErr)
	require.Len(t, configErr.Problems, 1)
	assert.Equal(t, "listen", configErr.Problems[0].Path)

	interval, err := h.Configure(ctx, json.RawMessage(`{"listen":"127.0.0.1:0","summary_interval":"3s"}`))
	require.NoError(t, err)
	assert.Equal(t, 3*time.Second, interval)

	require.NoError(t, h.Record(ctx, sdk.EventBatch{
		Events: []sdk.HostEvent{
			state("connected", ""),
			{TaskFinished: &sdk.TaskFinished{Status: sdk.StatusSucceeded, Duration: time.Second}},
			{Reconnected: &sdk.Reconnected{Outage: 2 * time.Second}},
		},
		DroppedBufferFull: 2,
	}))
	families := scrape(t, e)
	assert.Equal(t, 1.0, families.value(t, "dtf_worker_connected"))
	assert.Equal(t, 1.0, families.value(t, "dtf_worker_task_outcomes_total", "status", "succeeded"))

	summary, err := h.Summary(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint64(1), summary.TasksSucceeded)
	assert.Equal(t, uint64(1), summary.Reconnects)
	assert.Equal(t, 2*time.Second, summary.Disconnected)
	assert.Equal(t, uint64(2), summary.EventsDropped)
}
