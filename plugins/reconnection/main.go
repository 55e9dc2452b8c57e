// Command dtf-reconnection is the worker's reconnection plugin. The worker
// host launches it through go-plugin as a plugin of kind "connector"; it
// owns the WebSocket connection to the coordinator. The implementation is
// in the connector package. Run by hand, it only answers -version.
package main

import (
	dtfplugin "github.com/dtf-io/dtf/plugin"
	"github.com/dtf-io/dtf/plugins/reconnection/connector"
	"github.com/dtf-io/dtf/protocol"
)

// version is the plugin's release version, set at build time with
// -ldflags "-X main.version=v1.2.3".
var version = "dev"

func main() {
	// The logger must exist before serving starts, because go-plugin
	// replaces os.Stderr while it serves.
	logger := dtfplugin.NewLogger(connector.Name)
	impl := connector.New(connector.Options{Logger: logger, Version: version})
	// Version 2 adds the live-session handover (Export and resume), which
	// the connector package implements; version 1 keeps older hosts working.
	dtfplugin.ServeConnector(impl, dtfplugin.WithLogger(logger),
		dtfplugin.WithAPIVersions(dtfplugin.APIVersion, dtfplugin.ConnectorAPIVersion),
		dtfplugin.WithVersionDetails("wire protocol "+protocol.Subprotocol))
}
