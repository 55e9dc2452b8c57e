package sdktest

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	dtfplugin "github.com/dtf-io/dtf/plugin"
	"github.com/dtf-io/dtf/sdk"
)

// inProcess is a gRPC server and a client connection to it over an
// in-memory listener, with the message limits of a real plugin.
type inProcess struct {
	server  *grpc.Server
	conn    *grpc.ClientConn
	stopped chan struct{}
}

// serveInProcess starts a gRPC server with the services that register
// adds and connects to it. It fails t when the connection cannot be made.
func serveInProcess(t testing.TB, register func(*grpc.Server)) *inProcess {
	t.Helper()
	listener := bufconn.Listen(bufferBytes)
	p := &inProcess{
		server: grpc.NewServer(
			grpc.MaxRecvMsgSize(dtfplugin.MaxMessageBytes),
			grpc.MaxSendMsgSize(dtfplugin.MaxMessageBytes),
		),
		stopped: make(chan struct{}),
	}
	register(p.server)
	go func() {
		defer close(p.stopped)
		_ = p.server.Serve(listener)
	}()

	conn, err := grpc.NewClient("passthrough:///sdktest",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return listener.DialContext(ctx)
		}),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(dtfplugin.MaxMessageBytes),
			grpc.MaxCallSendMsgSize(dtfplugin.MaxMessageBytes),
		),
	)
	if err != nil {
		p.server.Stop()
		t.Fatalf("sdktest: connect to in-process plugin: %v", err)
	}
	p.conn = conn
	return p
}

// close closes the connection and stops the server, waiting up to
// sdk.DefaultStopTimeout for its goroutine.
func (p *inProcess) close() {
	_ = p.conn.Close()
	p.server.Stop()
	timer := time.NewTimer(sdk.DefaultStopTimeout)
	defer timer.Stop()
	select {
	case <-p.stopped:
	case <-timer.C:
	}
}
