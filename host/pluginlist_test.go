package host

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/host/config"
	dtfplugin "github.com/dtf-io/dtf/plugin"
	"github.com/dtf-io/dtf/plugin/pb"
	"github.com/dtf-io/dtf/sdk"
)

func TestConnectorConfigListsPlugins(t *testing.T) {
	cfg := testConfig(t, "echo-runner")
	hs := startHost(t, cfg, map[string]sdk.Executor{"echo-runner": &testExecutor{name: "echo", types: []string{"echo"}}})
	c := nextConnector(t, hs)

	plugins := (<-c.configured).GetPlugins()
	require.Len(t, plugins, 2)
	assert.Equal(t, "reconnection", plugins[0].GetName())
	assert.Equal(t, dtfplugin.KindConnector, plugins[0].GetKind())
	assert.Equal(t, "test", plugins[0].GetVersion())
	assert.Equal(t, "echo-runner", plugins[1].GetName())
	assert.Equal(t, dtfplugin.KindExecutor, plugins[1].GetKind())
	// The in-process fakes cannot report a negotiated API version.
	assert.Zero(t, plugins[0].GetApiVersion())
	assert.Zero(t, plugins[1].GetApiVersion())
}

// versionedProcess is a plugin process that reports a negotiated API
// version, as *dtfplugin.Client does.
type versionedProcess struct {
	pluginProcess
	info       *pb.PluginInfo
	apiVersion int
}

func (p versionedProcess) Info() *pb.PluginInfo { return p.info }
func (p versionedProcess) APIVersion() int      { return p.apiVersion }

func TestHostPluginAPIVersion(t *testing.T) {
	proc := versionedProcess{info: &pb.PluginInfo{Name: "dtf-exec-hello", Version: "0.1.0"}, apiVersion: 2}
	got := hostPlugin(config.Plugin{Name: "hello", Kind: dtfplugin.KindExecutor}, proc)
	assert.Equal(t, "hello", got.GetName())
	assert.Equal(t, dtfplugin.KindExecutor, got.GetKind())
	assert.Equal(t, "0.1.0", got.GetVersion())
	assert.EqualValues(t, 2, got.GetApiVersion())
}
