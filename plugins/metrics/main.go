// Command dtf-metrics is the worker's metrics plugin. The worker host
// launches it through go-plugin as a plugin of kind "metrics". It serves
// the host's events as Prometheus metrics on its own listener and returns
// the summary that the host sends to the coordinator. The implementation
// is in the exporter package.
package main

import (
	"context"
	"time"

	"github.com/dtf-io/dtf/plugins/metrics/exporter"
	"github.com/dtf-io/dtf/sdk"
)

// version is the plugin's release version, set at build time with
// -ldflags "-X main.version=v1.2.3".
var version = "dev"

// closeTimeout bounds the wait for scrapes in progress when the plugin
// stops.
const closeTimeout = 2 * time.Second

func main() {
	// ServeMetrics answers -version and --version itself, before anything
	// else runs.
	// The logger must exist before serving starts, because go-plugin
	// replaces os.Stderr while it serves.
	logger := sdk.NewLogger(exporter.Name)
	impl := exporter.New(exporter.Options{Logger: logger, Version: version})
	sdk.ServeMetrics(impl, sdk.WithLogger(logger))

	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	if err := impl.Close(ctx); err != nil {
		logger.Warn("metrics endpoint did not close cleanly", "error", err)
	}
}
