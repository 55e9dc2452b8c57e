package host

import (
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/host/config"
	dtfplugin "github.com/dtf-io/dtf/plugin"
	"github.com/dtf-io/dtf/plugin/pb"
	wirepb "github.com/dtf-io/dtf/protocol/pb"
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

// rebuiltExecutor is a test executor whose reported version the test
// changes, as a binary rebuilt between two launches would.
type rebuiltExecutor struct {
	*testExecutor
	version atomic.Value
}

func (e *rebuiltExecutor) Info() sdk.Info {
	info := e.testExecutor.Info()
	info.Version = e.version.Load().(string)
	return info
}

// pluginVersions returns the versions of a plugin_list frame by plugin name.
func pluginVersions(frame *wirepb.Frame) map[string]string {
	versions := make(map[string]string)
	for _, p := range frame.GetPluginList().GetPlugins() {
		versions[p.GetName()] = p.GetVersion()
	}
	return versions
}

func TestPluginListSentOnConnect(t *testing.T) {
	exec := &rebuiltExecutor{testExecutor: &testExecutor{name: "r", types: []string{"echo"}}}
	exec.version.Store("1.2.0")
	hs := startHost(t, testConfig(t, "runner"), map[string]sdk.Executor{"runner": exec})
	c := nextConnector(t, hs)
	c.state("connected", "")

	list := expectFrame(t, c, "plugin_list").GetPluginList().GetPlugins()
	require.Len(t, list, 2)
	assert.Equal(t, "reconnection", list[0].GetName())
	assert.Equal(t, dtfplugin.KindConnector, list[0].GetKind())
	assert.Equal(t, "test", list[0].GetVersion())
	assert.Equal(t, "runner", list[1].GetName())
	assert.Equal(t, dtfplugin.KindExecutor, list[1].GetKind())
	assert.Equal(t, "1.2.0", list[1].GetVersion())
}

// An executor restarted on a rebuilt binary shows its new version without
// a new session.
func TestPluginListAfterExecutorRestart(t *testing.T) {
	cfg := testConfig(t, "runner")
	fastRestart(cfg)
	exec := &rebuiltExecutor{testExecutor: &testExecutor{name: "r", types: []string{"echo"}}}
	exec.version.Store("1.2.0")
	hs := startHost(t, cfg, map[string]sdk.Executor{"runner": exec})
	c := nextConnector(t, hs)
	c.state("connected", "")
	assert.Equal(t, "1.2.0", pluginVersions(expectFrame(t, c, "plugin_list"))["runner"])

	exec.version.Store("1.3.0")
	hs.plugins.processes("runner")[0].Kill()
	assert.Equal(t, "1.3.0", pluginVersions(expectFrame(t, c, "plugin_list"))["runner"])
	assert.Len(t, hs.plugins.processes("runner"), 2)
}

// An executor that its restart policy keeps down leaves the list.
func TestPluginListDropsExecutorKeptDown(t *testing.T) {
	cfg := testConfig(t, "runner")
	cfg.Plugins[1].Restart.Policy = config.RestartNever
	exec := &rebuiltExecutor{testExecutor: &testExecutor{name: "r", types: []string{"echo"}}}
	exec.version.Store("1.2.0")
	hs := startHost(t, cfg, map[string]sdk.Executor{"runner": exec})
	c := nextConnector(t, hs)
	c.state("connected", "")
	require.Contains(t, pluginVersions(expectFrame(t, c, "plugin_list")), "runner")

	hs.plugins.processes("runner")[0].Kill()
	versions := pluginVersions(expectFrame(t, c, "plugin_list"))
	assert.NotContains(t, versions, "runner")
	assert.Contains(t, versions, "reconnection")
}
