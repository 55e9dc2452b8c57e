package coordinator

import "github.com/dtf-io/dtf/protocol/pb"

// handlePluginList keeps a worker's plugin_list frame, which replaces the
// plugin list of its hello in the workers API. The worker host sends one
// after every connect, after each plugin restart and after a live upgrade
// of the connector, because the hello's list dates from the connector's
// own launch.
func (s *Server) handlePluginList(ss *session, _ *connection, frame *pb.Frame) {
	list := frame.GetPluginList()
	s.mu.Lock()
	ss.pluginList = list
	s.mu.Unlock()
	ss.log.Debug("plugin list received", "plugins", len(list.GetPlugins()))
}

// currentPlugins returns the session's newest plugin list: the one of its
// last plugin_list frame, or else the hello's. The caller holds Server.mu.
func (ss *session) currentPlugins() []*pb.WorkerPlugin {
	if ss.pluginList != nil {
		return ss.pluginList.GetPlugins()
	}
	return ss.hello.GetPlugins()
}

// listedConnectorVersion returns the connector's version from the
// session's last plugin_list frame. It reports false before the first
// one, and the hello's plugin_version then stays current. A live upgrade
// of the connector changes it without a new hello. The caller holds
// Server.mu.
func (ss *session) listedConnectorVersion() (string, bool) {
	for _, p := range ss.pluginList.GetPlugins() {
		if p.GetKind() == "connector" {
			return trimField(p.GetVersion()), true
		}
	}
	return "", false
}
