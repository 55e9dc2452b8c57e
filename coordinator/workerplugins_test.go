package coordinator

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/protocol/pb"
)

func TestWorkersListHelloPlugins(t *testing.T) {
	ts := startServer(t, testConfig(t, t.TempDir()))
	_, first := connectWorker(t, ts, &pb.Hello{WorkerId: "w1", Slots: 1, Plugins: []*pb.WorkerPlugin{
		{Name: "reconnection", Kind: "connector", Version: "1.2.0", ApiVersion: 1},
		{Name: "hello", Kind: "executor", Version: "0.1.0", ApiVersion: 2},
	}})
	require.NotNil(t, first.GetWelcome(), "first frame: %v", first)

	var resp struct{ Workers []api.Worker }
	require.Equal(t, 200, doJSON(t, "GET", ts.url+"/v1/workers", nil, &resp))
	require.Len(t, resp.Workers, 1)
	assert.Equal(t, []api.WorkerPlugin{
		{Name: "reconnection", Kind: "connector", Version: "1.2.0", APIVersion: 1},
		{Name: "hello", Kind: "executor", Version: "0.1.0", APIVersion: 2},
	}, resp.Workers[0].Plugins)
}

func TestWorkerPluginsTrimmed(t *testing.T) {
	long := strings.Repeat("v", maxPluginFieldBytes+10)
	hello := &pb.Hello{}
	for range maxHelloPlugins + 5 {
		hello.Plugins = append(hello.Plugins, &pb.WorkerPlugin{Name: "p", Kind: "executor", Version: long})
	}
	plugins := workerPlugins(hello.GetPlugins())
	assert.Len(t, plugins, maxHelloPlugins)
	assert.Len(t, plugins[0].Version, maxPluginFieldBytes)

	// A cut inside a multi-byte rune drops the rune's bytes.
	split := strings.Repeat("a", maxPluginFieldBytes-1) + "é"
	assert.Equal(t, strings.Repeat("a", maxPluginFieldBytes-1), trimField(split))
	assert.Nil(t, workerPlugins(nil))
}

// A plugin_list frame replaces the hello's list, and a later one replaces
// the earlier, so a plugin restarted on a new binary shows its new version.
func TestPluginListReplacesHelloList(t *testing.T) {
	ts := startServer(t, testConfig(t, ""))
	w := newSeqWorker(t, ts, "w1")
	w.connect()
	w.sync()

	listed := func() []api.WorkerPlugin {
		var resp struct{ Workers []api.Worker }
		require.Equal(t, 200, doJSON(t, "GET", ts.url+"/v1/workers", nil, &resp))
		require.Len(t, resp.Workers, 1)
		return resp.Workers[0].Plugins
	}
	pluginList := func(version string) *pb.Frame {
		return &pb.Frame{Body: &pb.Frame_PluginList{PluginList: &pb.PluginList{Plugins: []*pb.WorkerPlugin{
			{Name: "reconnection", Kind: "connector", Version: "1.0.0", ApiVersion: 2},
			{Name: "hello", Kind: "executor", Version: version, ApiVersion: 1},
		}}}}
	}
	assert.Empty(t, listed(), "the seq worker's hello lists no plugins")

	w.send(pluginList("1.2.0"))
	require.Eventually(t, func() bool {
		plugins := listed()
		return len(plugins) == 2 && plugins[1].Version == "1.2.0"
	}, waitFor, 10*time.Millisecond)

	w.send(pluginList("1.3.0"))
	require.Eventually(t, func() bool {
		plugins := listed()
		return len(plugins) == 2 && plugins[1].Version == "1.3.0"
	}, waitFor, 10*time.Millisecond)
	assert.Equal(t, api.WorkerPlugin{Name: "reconnection", Kind: "connector", Version: "1.0.0", APIVersion: 2},
		listed()[0])

	var resp struct{ Workers []api.Worker }
	require.Equal(t, 200, doJSON(t, "GET", ts.url+"/v1/workers", nil, &resp))
	require.Len(t, resp.Workers, 1)
	assert.Equal(t, "1.0.0", resp.Workers[0].PluginVersion, "the connector's listed version replaces the hello's")
}
