package host

import (
	"context"

	"github.com/dtf-io/dtf/host/config"
	dtfplugin "github.com/dtf-io/dtf/plugin"
	"github.com/dtf-io/dtf/plugin/pb"
	wirepb "github.com/dtf-io/dtf/protocol/pb"
)

// apiVersioned is the part of *dtfplugin.Client that reports the
// negotiated plugin API version; the host's in-process test fakes lack it.
type apiVersioned interface {
	APIVersion() int
}

// The launcher's client must keep reporting the version, or every worker
// would send API version 0.
var _ apiVersioned = (*dtfplugin.Client)(nil)

// hostPlugins lists the running plugin processes, the connector first, so
// that `dtf workers` shows which plugin versions the worker runs. The
// connector gets this list at its Configure for its Hello, and the host
// sends it again in plugin_list frames (startPluginListSender). A plugin
// that is down between restarts is left out.
func (h *Host) hostPlugins(connector pluginProcess) []*pb.HostPlugin {
	plugins := []*pb.HostPlugin{hostPlugin(h.connectorPlugin(), connector)}
	for _, ex := range h.executors {
		if proc := ex.current(); proc != nil {
			plugins = append(plugins, hostPlugin(ex.cfg, proc))
		}
	}
	if h.metrics != nil {
		for _, m := range h.metrics.plugins {
			if proc := m.current(); proc != nil {
				plugins = append(plugins, hostPlugin(m.cfg, proc))
			}
		}
	}
	return plugins
}

// hostPlugin describes one plugin process. Its API version is 0 when the
// process cannot report it.
func hostPlugin(cfg config.Plugin, proc pluginProcess) *pb.HostPlugin {
	plugin := &pb.HostPlugin{Name: cfg.Name, Kind: cfg.Kind, Version: proc.Info().GetVersion()}
	if v, ok := proc.(apiVersioned); ok {
		plugin.ApiVersion = uint32(v.APIVersion())
	}
	return plugin
}

// startPluginListSender starts the goroutine that sends the coordinator a
// plugin_list frame each time pluginsChanged wakes it: after every connect,
// and after each plugin restart or connector upgrade. The hello's list
// dates from the connector's launch, so without these frames `dtf workers`
// would show the version of a plugin's first launch until the connector
// restarts. Wakes that arrive during a send merge into one more send,
// which lists the plugins of that moment. The returned function stops the
// goroutine and waits for it.
func (h *Host) startPluginListSender() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-h.pluginsChanged:
				h.sendPluginList()
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// sendPluginList sends the current plugin list as a best-effort frame. A
// list lost with a dropped connection is sent again after the next
// connect, and while no connector runs there is nothing to send.
func (h *Host) sendPluginList() {
	h.mu.Lock()
	connector := h.connectorProc
	h.mu.Unlock()
	if connector == nil {
		return
	}
	list := &wirepb.PluginList{}
	for _, p := range h.hostPlugins(connector) {
		list.Plugins = append(list.Plugins, &wirepb.WorkerPlugin{
			Name: p.GetName(), Kind: p.GetKind(), Version: p.GetVersion(), ApiVersion: p.GetApiVersion(),
		})
	}
	h.sendBestEffort(&wirepb.Frame{Body: &wirepb.Frame_PluginList{PluginList: list}})
}
