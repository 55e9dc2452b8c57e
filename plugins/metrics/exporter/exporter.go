// Package exporter is the metrics plugin's implementation of the Metrics
// service of plugin/pb. It receives the worker host's events, keeps them
// as Prometheus metrics that it serves in the text exposition format on
// its own HTTP listener, and keeps the compact summary that the host
// sends to the coordinator.
//
// The package has no go-plugin dependency, so it is tested in process; the
// plugin binary in the parent folder serves it through go-plugin.
package exporter

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dtf-io/dtf/plugin/pb"
)

// Name is the plugin's name in PluginInfo.
const Name = "metrics"

// MetricsPath is the path of the Prometheus endpoint.
const MetricsPath = "/metrics"

// readHeaderTimeout bounds the request header of a scrape, so a client
// that opens connections and sends nothing cannot hold them open.
const readHeaderTimeout = 10 * time.Second

// Options configure an Exporter.
type Options struct {
	// Logger receives the plugin's logs; nil discards them.
	Logger hclog.Logger
	// Version is the plugin's version in PluginInfo.
	Version string
}

// Exporter implements pb.MetricsServer. Configure must precede the
// endpoint; Record and Summary work before it.
type Exporter struct {
	pb.UnimplementedMetricsServer

	log      hclog.Logger
	version  string
	registry *prometheus.Registry

	mu       sync.Mutex
	recorder *recorder
	cfg      *Config
	server   *http.Server
	addr     string
	// serveDone is closed when the HTTP server's goroutine returned.
	serveDone chan struct{}
}

var _ pb.MetricsServer = (*Exporter)(nil)

// New returns an Exporter whose summary window starts now.
func New(opts Options) *Exporter {
	logger := opts.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	registry := prometheus.NewRegistry()
	return &Exporter{
		log:      logger,
		version:  opts.Version,
		registry: registry,
		recorder: newRecorder(newMetricSet(registry), time.Now()),
	}
}

// Info returns the plugin's name and version.
func (e *Exporter) Info(context.Context, *pb.Empty) (*pb.PluginInfo, error) {
	return &pb.PluginInfo{Name: Name, Version: e.version}, nil
}

// Configure checks the config block, binds the listener and starts
// serving the Prometheus endpoint on it. An invalid config is reported as
// problems in the response, and validate_only stops after the check. An
// address that cannot be bound fails with Unavailable, and a second call
// with FailedPrecondition, because a go-plugin process is configured once.
func (e *Exporter) Configure(_ context.Context, req *pb.ConfigureRequest) (*pb.MetricsConfigureResponse, error) {
	cfg, err := ParseConfig(req.GetConfigJson())
	var invalid *ConfigError
	switch {
	case errors.As(err, &invalid):
		return &pb.MetricsConfigureResponse{Problems: invalid.Problems}, nil
	case err != nil:
		return nil, status.Error(codes.InvalidArgument, err.Error())
	case req.GetValidateOnly():
		return &pb.MetricsConfigureResponse{SummaryIntervalMs: cfg.SummaryInterval.Milliseconds()}, nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cfg != nil {
		return nil, status.Error(codes.FailedPrecondition,
			"the metrics plugin is configured already; restart it to change its config")
	}
	listener, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable,
			"metrics endpoint cannot listen on %s: %v; choose a free port in listen", cfg.Listen, err)
	}

	mux := http.NewServeMux()
	mux.Handle("GET "+MetricsPath, e.Handler())
	e.server = &http.Server{Handler: mux, ReadHeaderTimeout: readHeaderTimeout}
	e.cfg = cfg
	e.addr = listener.Addr().String()
	e.serveDone = make(chan struct{})
	go func(server *http.Server, done chan struct{}) {
		defer close(done)
		if err := server.Serve(listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
			e.log.Error("metrics endpoint stopped", "addr", listener.Addr().String(), "error", err)
		}
	}(e.server, e.serveDone)
	e.log.Info("serving Prometheus metrics", "url", fmt.Sprintf("http://%s%s", e.addr, MetricsPath),
		"summary_interval", cfg.SummaryInterval)
	return &pb.MetricsConfigureResponse{SummaryIntervalMs: cfg.SummaryInterval.Milliseconds()}, nil
}

// Record applies the host's events to the metrics and the summary.
func (e *Exporter) Record(_ context.Context, req *pb.RecordRequest) (*pb.Empty, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.recorder.record(req, time.Now())
	return &pb.Empty{}, nil
}

// Summary returns the worker's summary since the plugin started.
func (e *Exporter) Summary(context.Context, *pb.Empty) (*pb.WorkerSummary, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.recorder.snapshot(time.Now()), nil
}

// Handler returns the handler of the Prometheus endpoint.
func (e *Exporter) Handler() http.Handler {
	return promhttp.HandlerFor(e.registry, promhttp.HandlerOpts{ErrorLog: hclogAdapter{e.log}})
}

// Addr returns the address that the endpoint listens on, or "" before
// Configure. It differs from the config's listen address when that names
// port 0.
func (e *Exporter) Addr() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.addr
}

// Close stops the endpoint, waiting up to the context's end for scrapes
// in progress, and returns once its goroutine has ended.
func (e *Exporter) Close(ctx context.Context) error {
	e.mu.Lock()
	server, done := e.server, e.serveDone
	e.mu.Unlock()
	if server == nil {
		return nil
	}
	err := server.Shutdown(ctx)
	if err != nil {
		_ = server.Close()
	}
	<-done
	return err
}

// hclogAdapter passes promhttp's error messages to the plugin's logger.
type hclogAdapter struct {
	log hclog.Logger
}

func (a hclogAdapter) Println(v ...interface{}) {
	a.log.Error("metrics exposition failed", "error", fmt.Sprint(v...))
}
