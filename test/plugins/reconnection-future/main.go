// Command reconnection-future serves the real reconnection connector with
// only a plugin API version that no host supports, FutureAPIVersion, so
// that tests can check the launch error for a plugin with no version in
// common with the host.
package main

import (
	dtfplugin "github.com/dtf-io/dtf/plugin"
	"github.com/dtf-io/dtf/plugins/reconnection/connector"
)

// FutureAPIVersion is far above any connector API version that dtf ships.
const FutureAPIVersion = 99

func main() {
	logger := dtfplugin.NewLogger(connector.Name)
	impl := connector.New(connector.Options{Logger: logger, Version: "future-test"})
	dtfplugin.ServeConnector(impl, dtfplugin.WithLogger(logger), dtfplugin.WithAPIVersions(FutureAPIVersion))
}
