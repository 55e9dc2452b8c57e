package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/dtf-io/dtf/coordinator"
	"github.com/dtf-io/dtf/coordinator/config"
	"github.com/dtf-io/dtf/plugins/reconnection/connector"
	"github.com/dtf-io/dtf/test/cluster"
	"github.com/dtf-io/dtf/test/faultproxy"
)

// waitLimit bounds every wait for a condition. It lies far above every
// figure measured here, so it only ends a run that hangs.
const waitLimit = 60 * time.Second

// pollInterval is the period of polls of the coordinator's counters, and so
// the resolution of the figures taken from them.
const pollInterval = time.Millisecond

// workerToken is the worker credential of every benchmark coordinator.
const workerToken = "bench-token"

// buildTimeout bounds the build of the dtf binaries on first use.
const buildTimeout = 5 * time.Minute

var (
	buildOnce sync.Once
	buildDir  string
	binaries  cluster.Binaries
	buildErr  error
)

// keepBinariesEnv, when set to a folder, makes the benchmarks build the dtf
// binaries there and keep them, so that a profiler such as perf, run
// around the benchmark, can still read their symbols afterwards.
const keepBinariesEnv = "DTF_BENCH_BINARIES"

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" && os.Getenv(keepBinariesEnv) == "" {
		_ = os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// pluginBinary returns the path of dtf-reconnection built from this
// checkout. The first call builds every dtf binary into a temporary folder,
// which TestMain removes.
func pluginBinary(b *testing.B) string {
	b.Helper()
	buildOnce.Do(func() {
		root, err := cluster.RepoRoot()
		if err != nil {
			buildErr = err
			return
		}
		if buildDir = os.Getenv(keepBinariesEnv); buildDir != "" {
			buildErr = os.MkdirAll(buildDir, 0o755)
		} else {
			buildDir, buildErr = os.MkdirTemp("", "dtf-bench-bin-")
		}
		if buildErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()
		binaries, buildErr = cluster.Build(ctx, root, buildDir)
	})
	if buildErr != nil {
		b.Fatalf("build dtf binaries into %s: %v", buildDir, buildErr)
	}
	return binaries.Path("dtf-reconnection")
}

// heartbeat is a heartbeat interval and timeout. The benchmarks give both
// sides the same values, and the zero value keeps each side's defaults.
type heartbeat struct {
	interval time.Duration
	timeout  time.Duration
}

func (h heartbeat) String() string {
	if h == (heartbeat{}) {
		return fmt.Sprintf("hb=%s-%s", config.DefaultHeartbeatInterval, config.DefaultHeartbeatTimeout)
	}
	return fmt.Sprintf("hb=%s-%s", h.interval, h.timeout)
}

// backoff is the reconnection plugin's backoff policy.
type backoff struct {
	base       time.Duration
	multiplier float64
	cap        time.Duration
}

// defaultBackoff is the plugin's default policy.
var defaultBackoff = backoff{
	base:       connector.DefaultBackoffBase,
	multiplier: connector.DefaultBackoffMultiplier,
	cap:        connector.DefaultBackoffCap,
}

func (p backoff) String() string {
	return fmt.Sprintf("backoff=%s-x%g-%s", p.base, p.multiplier, p.cap)
}

// pluginSettings are the fields of the plugin's config block that the
// benchmarks set. Zero fields keep the plugin's defaults.
type pluginSettings struct {
	heartbeat   heartbeat
	backoff     backoff
	dialTimeout time.Duration
	// resetBackoff sets healthy_after to zero, so every connection that
	// reached Welcome resets the backoff. With the default of 10s, sessions
	// shorter than that let the attempt count grow from one outage to the
	// next.
	resetBackoff bool
}

// configJSON returns the plugin's config block as the worker host passes
// it in ConnectorConfig.config_json.
func (s pluginSettings) configJSON() ([]byte, error) {
	fields := map[string]any{}
	if s.heartbeat.interval > 0 {
		fields["heartbeat_interval"] = s.heartbeat.interval.String()
		fields["heartbeat_timeout"] = s.heartbeat.timeout.String()
	}
	if s.backoff.base > 0 {
		fields["backoff_base"] = s.backoff.base.String()
		fields["backoff_multiplier"] = s.backoff.multiplier
		fields["backoff_cap"] = s.backoff.cap.String()
	}
	if s.dialTimeout > 0 {
		fields["dial_timeout"] = s.dialTimeout.String()
	}
	if s.resetBackoff {
		fields["healthy_after"] = "0s"
	}
	return json.Marshal(fields)
}

// benchCoordinator is a coordinator.Server running in the benchmark
// process on 127.0.0.1 with a fresh SQLite store.
type benchCoordinator struct {
	server *coordinator.Server
	logger hclog.InterceptLogger
	// logs receives the coordinator's log calls once the first watch is
	// registered. Until then no log call reaches it, so benchmarks that
	// watch nothing pay nothing for it.
	logs     logSink
	sinkOnce sync.Once
}

// startCoordinator runs a coordinator with the heartbeat hb until the
// benchmark ends. It writes no log.
func startCoordinator(b *testing.B, hb heartbeat) *benchCoordinator {
	b.Helper()
	cfg := config.Default("127.0.0.1:0", b.TempDir())
	cfg.Workers.Token = workerToken
	cfg.ShutdownTimeout = 5 * time.Second
	if hb.interval > 0 {
		cfg.Workers.HeartbeatInterval = hb.interval
		cfg.Workers.HeartbeatTimeout = hb.timeout
	}

	logger := hclog.NewInterceptLogger(&hclog.LoggerOptions{
		Name:   "coordinator",
		Level:  hclog.Warn,
		Output: io.Discard,
	})
	server, err := coordinator.New(cfg, logger)
	if err != nil {
		b.Fatalf("start coordinator: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- server.Run(ctx) }()
	b.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				b.Errorf("coordinator run: %v", err)
			}
		case <-time.After(cfg.ShutdownTimeout + waitLimit):
			b.Errorf("coordinator did not stop within %s", cfg.ShutdownTimeout+waitLimit)
		}
	})
	return &benchCoordinator{server: server, logger: logger}
}

// watchLog returns a watch for the coordinator's log calls with message,
// at any level, because some events are visible only in its log.
func (c *benchCoordinator) watchLog(message string) *logWatch {
	// The sink is shared by every logger derived from c.logger, including
	// those made before this call.
	c.sinkOnce.Do(func() { c.logger.RegisterSink(&c.logs) })
	return c.logs.watch(message)
}

// waitStats polls the coordinator's counters until ready holds, and returns
// when it saw them hold.
func (c *benchCoordinator) waitStats(b *testing.B, what string, ready func(coordinator.Stats) bool) time.Time {
	b.Helper()
	var last coordinator.Stats
	err := cluster.Poll(context.Background(), waitLimit, pollInterval, func() (bool, error) {
		last = c.server.Stats()
		return ready(last), nil
	})
	if err != nil {
		b.Fatalf("coordinator never showed %s: %v; last counters: %+v", what, err, last)
	}
	return time.Now()
}

// startProxy starts a fault proxy in front of addr until the benchmark
// ends.
func startProxy(b *testing.B, addr string) *faultproxy.Proxy {
	b.Helper()
	proxy, err := faultproxy.New(addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = proxy.Close() })
	return proxy
}

// durations collects one figure per iteration.
type durations struct {
	total, largest time.Duration
	count          int
}

func (d *durations) add(value time.Duration) {
	d.total += value
	d.largest = max(d.largest, value)
	d.count++
}

// report reports the mean as name-ms and the largest as name-max-ms.
func (d *durations) report(b *testing.B, name string) {
	if d.count == 0 {
		return
	}
	b.ReportMetric(milliseconds(d.total)/float64(d.count), name+"-ms")
	b.ReportMetric(milliseconds(d.largest), name+"-max-ms")
}

// milliseconds returns d in milliseconds, for ReportMetric.
func milliseconds(d time.Duration) float64 {
	return float64(d) / float64(time.Millisecond)
}
