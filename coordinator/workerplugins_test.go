package coordinator

import (
	"strings"
	"testing"

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
	plugins := workerPlugins(hello)
	assert.Len(t, plugins, maxHelloPlugins)
	assert.Len(t, plugins[0].Version, maxPluginFieldBytes)

	// A cut inside a multi-byte rune drops the rune's bytes.
	split := strings.Repeat("a", maxPluginFieldBytes-1) + "é"
	assert.Equal(t, strings.Repeat("a", maxPluginFieldBytes-1), trimField(split))
	assert.Nil(t, workerPlugins(&pb.Hello{}))
}
