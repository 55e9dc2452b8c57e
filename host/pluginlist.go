package host

import (
	"github.com/dtf-io/dtf/host/config"
	dtfplugin "github.com/dtf-io/dtf/plugin"
	"github.com/dtf-io/dtf/plugin/pb"
)

// apiVersioned is the part of *dtfplugin.Client that reports the
// negotiated plugin API version; the host's in-process test fakes lack it.
type apiVersioned interface {
	APIVersion() int
}

// The launcher's client must keep reporting the version, or every worker
// would send API version 0.
var _ apiVersioned = (*dtfplugin.Client)(nil)

// hostPlugins lists the running plugin processes, the connector first, for
// the Hello that the connector sends, so that `dtf workers` shows which
// plugin versions the worker runs. A plugin that is down between restarts
// is left out.
//
// NOTE: the connector sends the list that it got at its last Configure, so
// an executor restarted on a new binary shows its new version only after
// the connector itself is launched again.
func (h *Host) hostPlugins(connector pluginProcess) []*pb.HostPlugin {
	plugins := []*pb.HostPlugin{hostPlugin(h.cfg.Connector(), connector)}
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
