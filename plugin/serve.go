package plugin

import (
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/dtf-io/dtf/plugin/pb"
)

// LogLevelEnv names the environment variable through which the host passes
// its log level to a plugin. The host drops relayed entries below its own
// level anyway; the variable saves the plugin from writing them.
const LogLevelEnv = "DTF_LOG_LEVEL"

// parentCheckInterval is how often a plugin checks that the host that
// started it is still its parent process.
const parentCheckInterval = time.Second

// A connector plugin pings its host over the gRPC connection after
// hostPingInterval without a message from it, and drops the connection when
// the host does not acknowledge within hostPingTimeout. The host's gRPC
// runtime acknowledges pings by itself, so only a host that is not running
// at all, such as a stopped (SIGSTOP) process or a paused VM, misses them. The plugin's
// Events stream then ends, the plugin closes its WebSocket, and the
// coordinator stops counting the worker as connected instead of assigning
// tasks to a host that cannot run them. Executor plugins do not do this:
// their running tasks outlive a short stall of the host.
const (
	hostPingInterval = 5 * time.Second
	hostPingTimeout  = 5 * time.Second
)

// ServeOption changes how ServeConnector and ServeExecutor run.
type ServeOption func(*serveConfig)

type serveConfig struct {
	logger         hclog.Logger
	versionDetails []string
	apiVersions    []int
}

// WithAPIVersions sets the plugin API versions that the binary serves; the
// default is APIVersion alone. A connector offers ConnectorAPIVersion only
// when it implements Export and ConnectorConfig.resume, because the host
// then relies on both. The host and the plugin negotiate the highest
// version that both offer, and a binary with no version in common with
// the host fails to launch with an error that names both sides' versions.
func WithAPIVersions(versions ...int) ServeOption {
	return func(c *serveConfig) { c.apiVersions = append([]int(nil), versions...) }
}

// WithLogger replaces the default plugin logger from NewLogger. The logger
// must not write to stdout, which carries go-plugin's handshake.
func WithLogger(logger hclog.Logger) ServeOption {
	return func(c *serveConfig) { c.logger = logger }
}

// WithVersionDetails adds details to the line that the binary prints for
// -version, such as the wire protocol that a connector speaks.
func WithVersionDetails(details ...string) ServeOption {
	return func(c *serveConfig) { c.versionDetails = append(c.versionDetails, details...) }
}

// NewLogger returns the logger a plugin should use: JSON lines on the
// process's stderr, which the host parses and relays under the plugin's
// name, at the level from LogLevelEnv (default info). Call it before
// ServeConnector or ServeExecutor, because go-plugin replaces os.Stderr
// while it serves.
func NewLogger(name string) hclog.Logger {
	level := hclog.LevelFromString(strings.TrimSpace(os.Getenv(LogLevelEnv)))
	if level == hclog.NoLevel {
		level = hclog.Info
	}
	return newDurationLogger(hclog.New(&hclog.LoggerOptions{
		Name:       name,
		Level:      level,
		Output:     os.Stderr,
		JSONFormat: true,
	}))
}

// ServeConnector serves impl as a connector plugin until the host kills the
// plugin, the host process exits, or the process receives SIGTERM. All of
// these stop the gRPC server, which cancels the Events stream's context, and
// then ServeConnector returns; main should return right after it.
func ServeConnector(impl pb.ConnectorServer, opts ...ServeOption) {
	serve(KindConnector, &ConnectorPlugin{Impl: impl}, opts)
}

// ServeExecutor serves impl as an executor plugin, with the same lifecycle
// as ServeConnector. Stopping the server cancels the context of every
// running Execute call. A caller that must wait for its tasks to stop does
// so after ServeExecutor returns, as sdk.ServeExecutor does.
func ServeExecutor(impl pb.ExecutorServer, opts ...ServeOption) {
	serve(KindExecutor, &ExecutorPlugin{Impl: impl}, opts)
}

func serve(kind string, p goplugin.Plugin, opts []ServeOption) {
	cfg := serveConfig{}
	for _, opt := range opts {
		opt(&cfg)
	}
	// A binary run with -version prints its version line and exits 0
	// before go-plugin checks for the magic cookie (version.go).
	versions := map[int]goplugin.PluginSet{}
	for _, v := range cfg.apiVersions {
		versions[v] = goplugin.PluginSet{kind: p}
	}
	if len(versions) == 0 {
		versions[APIVersion] = goplugin.PluginSet{kind: p}
	}
	exitForVersion(kind, p, versions, cfg.versionDetails)
	if cfg.logger == nil {
		cfg.logger = NewLogger(kind)
	}
	logger := cfg.logger

	// Every reason to stop closes stopCh once; the server factory below
	// stops the gRPC server when it closes, even before it serves.
	stopCh := make(chan struct{})
	var stopOnce sync.Once
	stop := func(reason string) {
		stopOnce.Do(func() {
			if reason != "" {
				logger.Info("stopping plugin", "reason", reason)
			}
			close(stopCh)
		})
	}
	defer stop("")

	surviveBrokenPipe()
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM)
	defer signal.Stop(signals)
	go func() {
		select {
		case <-signals:
			stop("received SIGTERM")
		case <-stopCh:
		}
	}()
	go watchParent(os.Getppid(), stopCh, stop)

	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig:  Handshake,
		VersionedPlugins: versions,
		Logger:           logger,
		GRPCServer: func(options []grpc.ServerOption) *grpc.Server {
			options = append(options,
				grpc.MaxRecvMsgSize(MaxMessageBytes),
				grpc.MaxSendMsgSize(MaxMessageBytes),
			)
			if kind == KindConnector {
				options = append(options, grpc.KeepaliveParams(keepalive.ServerParameters{
					Time:    hostPingInterval,
					Timeout: hostPingTimeout,
				}))
			}
			server := grpc.NewServer(options...)
			go func() {
				<-stopCh
				server.Stop()
			}()
			return server
		},
	})
}

// surviveBrokenPipe keeps a write to a closed stdout or stderr from ending
// the process. Go's runtime ends a program with SIGPIPE on such a write
// unless the program requests the signal with signal.Notify. A plugin's
// stderr is a pipe to its host, so once the host has died, the plugin's
// first log line, such as "stopping plugin", would kill it before it
// stopped its tasks' process groups. With the signal requested, the write
// returns EPIPE, the logger drops the line, and the shutdown goes on. The
// disposition is a handler, not "ignore", so processes the plugin starts
// get the default SIGPIPE again at exec. The signals are never read, and
// a full channel drops them.
func surviveBrokenPipe() {
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
}

// watchParent stops the plugin when its parent process changes, which
// happens when the host dies and the plugin is re-parented to init or a
// subreaper. It covers systems without Pdeathsig and hosts that were
// killed in a way that the death signal missed.
func watchParent(parent int, stopCh <-chan struct{}, stop func(string)) {
	ticker := time.NewTicker(parentCheckInterval)
	defer ticker.Stop()
	for {
		select {
		case <-stopCh:
			return
		case <-ticker.C:
			if os.Getppid() != parent {
				stop("host process exited")
				return
			}
		}
	}
}
