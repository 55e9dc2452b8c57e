// Command dtf-reconnection is the worker's reconnection plugin. The worker
// host launches it through go-plugin as a plugin of kind "connector"; it
// owns the WebSocket connection to the coordinator. The implementation is
// in the connector package.
package main

import (
	"flag"
	"fmt"
	"os"

	dtfplugin "github.com/dtf-io/dtf/plugin"
	"github.com/dtf-io/dtf/plugins/reconnection/connector"
	"github.com/dtf-io/dtf/protocol"
)

// version is the plugin's release version, set at build time with
// -ldflags "-X main.version=v1.2.3".
var version = "dev"

func main() {
	flags := flag.NewFlagSet("dtf-reconnection", flag.ContinueOnError)
	showVersion := flags.Bool("version", false,
		"print the plugin name, its version and the API versions it serves, then exit")
	if err := flags.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if *showVersion {
		fmt.Printf("dtf-%s %s (plugin kind %s, plugin API version %d, wire protocol %s)\n",
			connector.Name, version, dtfplugin.KindConnector, dtfplugin.APIVersion, protocol.Subprotocol)
		return
	}

	// The logger must exist before serving starts, because go-plugin
	// replaces os.Stderr while it serves.
	logger := dtfplugin.NewLogger(connector.Name)
	impl := connector.New(connector.Options{Logger: logger, Version: version})
	dtfplugin.ServeConnector(impl, dtfplugin.WithLogger(logger))
}
