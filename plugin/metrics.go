package plugin

import (
	"context"
	"fmt"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/dtf-io/dtf/plugin/pb"
)

// MetricsPlugin is the go-plugin binding of the Metrics service. The plugin
// side sets Impl; the host side leaves it nil and receives a
// pb.MetricsClient from Dispense.
type MetricsPlugin struct {
	goplugin.NetRPCUnsupportedPlugin
	Impl pb.MetricsServer
}

var _ goplugin.GRPCPlugin = (*MetricsPlugin)(nil)

// GRPCServer registers the metrics service on the plugin's gRPC server.
func (p *MetricsPlugin) GRPCServer(_ *goplugin.GRPCBroker, s *grpc.Server) error {
	if p.Impl == nil {
		return fmt.Errorf("metrics plugin has no server implementation")
	}
	pb.RegisterMetricsServer(s, p.Impl)
	return nil
}

// GRPCClient returns a pb.MetricsClient on the connection to the plugin.
func (p *MetricsPlugin) GRPCClient(
	_ context.Context,
	_ *goplugin.GRPCBroker,
	conn *grpc.ClientConn,
) (interface{}, error) {
	return pb.NewMetricsClient(conn), nil
}

// ServeMetrics serves impl as a metrics plugin, with the lifecycle of
// ServeConnector: it returns when the host kills the plugin, when the host
// process exits, or on SIGTERM. A plugin that serves its own listener,
// such as a Prometheus endpoint, closes it after ServeMetrics returns.
func ServeMetrics(impl pb.MetricsServer, opts ...ServeOption) {
	serve(KindMetrics, &MetricsPlugin{Impl: impl}, opts)
}
