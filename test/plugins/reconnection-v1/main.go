// Command reconnection-v1 serves the real reconnection connector with
// connector plugin API version 1 only, as a plugin built before the
// live-session handover would. Tests run the worker host against it.
package main

import (
	dtfplugin "github.com/dtf-io/dtf/plugin"
	"github.com/dtf-io/dtf/plugins/reconnection/connector"
)

// version is the release version in the plugin's Info.
var version = "v1-test"

func main() {
	logger := dtfplugin.NewLogger(connector.Name)
	impl := connector.New(connector.Options{Logger: logger, Version: version})
	dtfplugin.ServeConnector(impl, dtfplugin.WithLogger(logger), dtfplugin.WithAPIVersions(dtfplugin.APIVersion))
}
