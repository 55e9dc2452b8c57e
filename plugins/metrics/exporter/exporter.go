// Package exporter is the metrics plugin's implementation of
// sdk.MetricsPlugin. It receives the worker host's events, keeps them
// as Prometheus metrics that it serves in the text exposition format on
// its own HTTP listener, and keeps the compact summary that the host
// sends to the coordinator.
//
// The package has no go-plugin dependency, so it is tested in process; the
// plugin binary in the parent folder serves it with sdk.ServeMetrics.
package exporter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dtf-io/dtf/sdk"
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

// Exporter implements sdk.MetricsPlugin. Configure must precede the
// endpoint; Record and Summary work before it.
type Exporter struct {
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

var (
	_ sdk.MetricsPlugin   = (*Exporter)(nil)
	_ sdk.ConfigValidator = (*Exporter)(nil)
)

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
func (e *Exporter) Info() sdk.Info {
	return sdk.Info{Name: Name, Version: e.version}
}

// ValidateConfig checks the config block without binding the listener.
func (e *Exporter) ValidateConfig(config json.RawMessage) error {
	_, err := parseConfig(config)
	return err
}

// Configure checks the config block, binds the listener, starts serving
// the Prometheus endpoint on it and returns the summary interval. An
// invalid config returns a *sdk.ConfigError. An address that cannot be
// bound returns an error wrapping sdk.ErrUnavailable, and a second call an
// error too, because a go-plugin process is configured once.
func (e *Exporter) Configure(config json.RawMessage) (time.Duration, error) {
	cfg, err := parseConfig(config)
	if err != nil {
		return 0, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cfg != nil {
		return 0, errors.New("the metrics plugin is configured already; restart it to change its config")
	}
	listener, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return 0, fmt.Errorf("metrics endpoint cannot listen on %s: %w: %v; choose a free port in listen",
			cfg.Listen, sdk.ErrUnavailable, err)
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
	return cfg.SummaryInterval, nil
}

// parseConfig is ParseConfig with the problems of an invalid config as a
// *sdk.ConfigError, which the host shows at the lines of the settings.
func parseConfig(config json.RawMessage) (*Config, error) {
	cfg, err := ParseConfig(config)
	var invalid *ConfigError
	if errors.As(err, &invalid) {
		return nil, &sdk.ConfigError{Problems: invalid.Problems}
	}
	return cfg, err
}

// Record applies the host's events to the metrics and the summary.
func (e *Exporter) Record(_ context.Context, batch sdk.EventBatch) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.recorder.record(batch, time.Now())
	return nil
}

// Summary returns the worker's summary since the plugin started.
func (e *Exporter) Summary(context.Context) (sdk.WorkerSummary, error) {
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
