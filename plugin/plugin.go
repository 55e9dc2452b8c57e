// Package plugin is the go-plugin glue between the dtf worker host and its
// plugin binaries. The host calls Launch to start a plugin process and gets
// gRPC clients of the services in plugin/pb. A plugin binary calls
// ServeConnector, ServeExecutor or ServeMetrics from its main function.
package plugin

import (
	"context"
	"fmt"
	"strings"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/dtf-io/dtf/plugin/pb"
)

// Handshake is shared by the host and every plugin binary. go-plugin sets the
// magic cookie in the plugin's environment, and a binary started without it,
// for example by hand from a shell, prints a hint and exits. ProtocolVersion
// is only the fallback API version, because the versions offered come from
// VersionedPlugins.
var Handshake = goplugin.HandshakeConfig{
	ProtocolVersion:  APIVersion,
	MagicCookieKey:   "DTF_PLUGIN_COOKIE",
	MagicCookieValue: "6edbbbd1cdd27c31eb31b306204bd4c5",
}

// APIVersion is the first version of every plugin kind's API in plugin/pb,
// and the only version of the executor and metrics APIs. The host and a
// plugin negotiate the highest version that both offer.
const APIVersion = 1

// ConnectorAPIVersion is the newest version of the connector API. Version 2
// adds the live-session handover: Connector.Export and
// ConnectorConfig.resume. The host keeps offering version 1, and runs such
// a plugin without the handover.
const ConnectorAPIVersion = 2

// APIVersions returns the API versions that the host offers for kind, in
// ascending order, or nil for an unknown kind.
func APIVersions(kind string) []int {
	switch kind {
	case KindConnector:
		return []int{APIVersion, ConnectorAPIVersion}
	case KindExecutor, KindMetrics:
		return []int{APIVersion}
	default:
		return nil
	}
}

// Kinds of plugins. Each kind serves one gRPC service of plugin/pb, and a
// plugin binary serves exactly one kind.
const (
	KindExecutor  = "executor"
	KindConnector = "connector"
	KindMetrics   = "metrics"
)

// MaxMessageBytes bounds one gRPC message between the host and a plugin, in
// both directions. The gRPC default of 4 MiB is too small for a task payload
// or outcome near the wire protocol's 4 MiB frame limit plus its envelope.
const MaxMessageBytes = 16 << 20

// Kinds lists the valid plugin kinds.
func Kinds() []string {
	return []string{KindExecutor, KindConnector, KindMetrics}
}

// VersionedPlugins returns the plugin sets that a host offers for one kind,
// keyed by API version. It returns an error for an unknown kind.
func VersionedPlugins(kind string) (map[int]goplugin.PluginSet, error) {
	switch kind {
	case KindExecutor:
		return map[int]goplugin.PluginSet{
			1: {KindExecutor: &ExecutorPlugin{}},
		}, nil
	case KindConnector:
		// Both versions use the same gRPC service; the negotiated version
		// only tells the host whether it may call Export.
		return map[int]goplugin.PluginSet{
			APIVersion:          {KindConnector: &ConnectorPlugin{}},
			ConnectorAPIVersion: {KindConnector: &ConnectorPlugin{}},
		}, nil
	case KindMetrics:
		return map[int]goplugin.PluginSet{
			1: {KindMetrics: &MetricsPlugin{}},
		}, nil
	default:
		return nil, fmt.Errorf("unknown plugin kind %q; valid kinds: %s",
			kind, strings.Join(Kinds(), ", "))
	}
}

// ExecutorPlugin is the go-plugin binding of the Executor service. The plugin
// side sets Impl; the host side leaves it nil and receives a
// pb.ExecutorClient from Dispense.
type ExecutorPlugin struct {
	goplugin.NetRPCUnsupportedPlugin
	Impl pb.ExecutorServer
}

// GRPCServer registers the executor service on the plugin's gRPC server.
func (p *ExecutorPlugin) GRPCServer(_ *goplugin.GRPCBroker, s *grpc.Server) error {
	if p.Impl == nil {
		return fmt.Errorf("executor plugin has no server implementation")
	}
	pb.RegisterExecutorServer(s, p.Impl)
	return nil
}

// GRPCClient returns a pb.ExecutorClient on the connection to the plugin.
func (p *ExecutorPlugin) GRPCClient(
	_ context.Context,
	_ *goplugin.GRPCBroker,
	conn *grpc.ClientConn,
) (interface{}, error) {
	return pb.NewExecutorClient(conn), nil
}

// ConnectorPlugin is the go-plugin binding of the Connector service. The
// plugin side sets Impl; the host side leaves it nil and receives a
// pb.ConnectorClient from Dispense.
type ConnectorPlugin struct {
	goplugin.NetRPCUnsupportedPlugin
	Impl pb.ConnectorServer
}

// GRPCServer registers the connector service on the plugin's gRPC server.
func (p *ConnectorPlugin) GRPCServer(_ *goplugin.GRPCBroker, s *grpc.Server) error {
	if p.Impl == nil {
		return fmt.Errorf("connector plugin has no server implementation")
	}
	pb.RegisterConnectorServer(s, p.Impl)
	return nil
}

// GRPCClient returns a pb.ConnectorClient on the connection to the plugin.
func (p *ConnectorPlugin) GRPCClient(
	_ context.Context,
	_ *goplugin.GRPCBroker,
	conn *grpc.ClientConn,
) (interface{}, error) {
	return pb.NewConnectorClient(conn), nil
}

var (
	_ goplugin.GRPCPlugin = (*ExecutorPlugin)(nil)
	_ goplugin.GRPCPlugin = (*ConnectorPlugin)(nil)
)
