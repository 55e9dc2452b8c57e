// Package host is the worker host. It launches the connector plugin, which
// keeps the session with the coordinator, the executor plugins, which run
// tasks, and the metrics plugins, which receive its events. It routes each
// assignment to the executor that declared its type and keeps every task
// outcome in an outbox on disk until the coordinator acknowledges it.
package host

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/dtf-io/dtf/host/config"
	"github.com/dtf-io/dtf/internal/dirlock"
	"github.com/dtf-io/dtf/internal/ratelog"
	dtfplugin "github.com/dtf-io/dtf/plugin"
	"github.com/dtf-io/dtf/plugin/pb"
	wirepb "github.com/dtf-io/dtf/protocol/pb"
)

// Version is the host version reported to the coordinator. The build may
// set it with -ldflags "-X github.com/dtf-io/dtf/host.Version=...".
var Version = "0.1.0-dev"

// ErrConnectorFatal is wrapped by Run's error when the connector gives up
// for good, for example after the coordinator rejected the credentials.
var ErrConnectorFatal = errors.New("connector closed the session for good")

// pluginProcess is the part of *dtfplugin.Client that the host uses; tests
// replace it with in-process fakes.
type pluginProcess interface {
	Info() *pb.PluginInfo
	Executor() pb.ExecutorClient
	Connector() pb.ConnectorClient
	Metrics() pb.MetricsClient
	Kill()
	// Pid is the process id, or 0 for a process that has none, such as a
	// test's in-process fake.
	Pid() int
	Exited() bool
	// ExitStatus describes how the process ended, such as "signal:
	// killed", or is "" while it runs.
	ExitStatus() string
}

type launchFunc func(ctx context.Context, cfg dtfplugin.LaunchConfig) (pluginProcess, error)

func launchPlugin(ctx context.Context, cfg dtfplugin.LaunchConfig) (pluginProcess, error) {
	client, err := dtfplugin.Launch(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return client, nil
}

// Host is one worker. Create it with New and start it with Run.
type Host struct {
	cfg        *config.Config
	logger     hclog.Logger
	rootLogger hclog.Logger
	launch     launchFunc
	outbox     *Outbox
	// outboxWrites bounds the outcomes being encoded and written to the
	// outbox at once (see complete).
	outboxWrites chan struct{}
	// executorUpWait is how long an attempt waits for its crashed
	// executor plugin to run again (defaultExecutorUpWait).
	executorUpWait time.Duration

	executors []*executorPlugin
	routes    map[string]*executorPlugin
	slots     chan struct{}
	// metrics are the metrics plugins and the host's event path to them
	// (metrics.go).
	metrics *hostMetrics

	// tasksCtx is the parent of every task's context; cancelTasks ends
	// them all at shutdown.
	tasksCtx    context.Context
	cancelTasks context.CancelFunc
	tasks       sync.WaitGroup

	// supervisors are the goroutines that restart crashed executor
	// plugins. stopSupervisors ends them before shutdown kills the
	// plugins.
	supervisors     sync.WaitGroup
	stopSupervisors context.CancelFunc

	// drainRequested is closed by the first Drain call, and drainReason
	// is that call's reason.
	drainRequested chan struct{}
	drainOnce      sync.Once
	drainReason    string
	// acked wakes a drain that waits for outcome acknowledgements.
	acked chan struct{}
	// checkpointLogs limits the warnings about rejected checkpoints of
	// running attempts to one line per task and checkpointLogInterval.
	checkpointLogs *ratelog.Limiter

	// sendTimeout bounds each Send of a state sync or an outcome, and
	// resendBase and resendCap the resender's backoff; tests change them.
	sendTimeout time.Duration
	resendBase  time.Duration
	resendCap   time.Duration
	// stopGrace bounds the wait for a stopped attempt's result (stop.go),
	// and timeoutGrace the run of an attempt past its timeout (tasks.go).
	// Tests shorten them.
	stopGrace    time.Duration
	timeoutGrace time.Duration
	// secretFileInterval is the period of the secret_file mode check
	// (secretfile.go); zero means defaultSecretFileInterval.
	secretFileInterval time.Duration
	// resendNow wakes the resender and ends its backoff; resendReady
	// wakes it unless it is backing off.
	resendNow   chan struct{}
	resendReady chan struct{}
	// pluginsChanged wakes the plugin list sender (pluginlist.go).
	pluginsChanged chan struct{}

	// upgradeMu serializes live upgrades of the connector (upgrade.go).
	upgradeMu sync.Mutex
	// sends counts the sends that hold the current connector client; an
	// upgrade waits for them after it paused the senders. Add is called
	// under mu while connector is set.
	sends sync.WaitGroup

	mu            sync.Mutex
	connector     pb.ConnectorClient
	connectorProc pluginProcess
	// connectorBlock is the connector's plugin block: the file's at start,
	// then the one of the last successful upgrade.
	connectorBlock config.Plugin
	// sendPause is non-nil while an upgrade has paused the senders, and
	// closes when a connector is published again.
	sendPause chan struct{}
	// swap is the upgrade that is replacing connectorProc, or nil.
	swap    *connectorSwap
	running map[taskRef]*runningTask
	// held has every outcome that the coordinator has not acknowledged.
	held map[taskRef]*heldOutcome
	// unsent lists, oldest first, the held outcomes that the resender
	// sends next.
	unsent []taskRef
	// session numbers the sessions that started without resuming, from 1
	// before the first connect; a resumed session keeps its number.
	session uint64
	// syncPending is true from a new session's connected event until the
	// connector accepted its state sync; no outcome is sent before that.
	syncPending bool
	// offline is true from a failed connection attempt until the next
	// connected event, so that one outage warns once.
	offline bool
	// lastSessionID is the session of the last connected event. The
	// connector reports no session in its backing_off and circuit_open
	// states, so their log lines name this one, the session that was lost.
	lastSessionID string
	unknownFrames map[string]uint64
	// stopping is set when the host stops taking tasks, at the start of a
	// drain or of an immediate stop; assignments are then released.
	stopping bool
	// draining is the drain under way, or nil.
	draining *drainState
	// lastAssign is when the last assignment arrived; a drain waits until
	// none has arrived for assignSettle (see drain).
	lastAssign time.Time
}

// New checks cfg and returns a host; it starts nothing. logger is the root
// logger: the host logs under "host" and each plugin's relayed log appears
// under the plugin's name.
func New(cfg *config.Config, logger hclog.Logger) (*Host, error) {
	if cfg == nil {
		return nil, errors.New("new host: nil config")
	}
	if cfg.Slots <= 0 {
		return nil, fmt.Errorf("new host: slots must be at least 1, got %d", cfg.Slots)
	}
	if cfg.Connector().Name == "" || len(cfg.Executors()) == 0 {
		return nil, errors.New("new host: the config needs one connector plugin and at least one executor plugin")
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	cfg = withDefaults(cfg)
	h := &Host{
		cfg:            cfg,
		rootLogger:     logger,
		logger:         logger.Named("host").With("worker_id", cfg.Coordinator.WorkerID),
		launch:         launchPlugin,
		routes:         make(map[string]*executorPlugin),
		slots:          make(chan struct{}, cfg.Slots),
		outboxWrites:   make(chan struct{}, maxOutboxWrites),
		executorUpWait: defaultExecutorUpWait,
		sendTimeout:    defaultSendTimeout,
		resendBase:     defaultResendBase,
		resendCap:      defaultResendCap,
		stopGrace:      defaultStopGrace,
		timeoutGrace:   executorGrace,
		resendNow:      make(chan struct{}, 1),
		resendReady:    make(chan struct{}, 1),
		pluginsChanged: make(chan struct{}, 1),
		running:        make(map[taskRef]*runningTask),
		held:           make(map[taskRef]*heldOutcome),
		session:        1,
		connectorBlock: cfg.Connector(),
		unknownFrames:  make(map[string]uint64),
		drainRequested: make(chan struct{}),
		acked:          make(chan struct{}, 1),
		checkpointLogs: ratelog.New(checkpointLogInterval),
	}
	h.metrics = newHostMetrics(h)
	return h, nil
}

// Run starts the plugins and serves tasks until ctx ends or a drain (see
// Drain) is done. When ctx ends it releases the running tasks at once. It
// then stops the connector and kills every plugin process before it
// returns. It returns an error if startup fails or the connector gives up
// for good (ErrConnectorFatal); a crashed plugin is restarted instead.
func (h *Host) Run(ctx context.Context) error {
	h.tasksCtx, h.cancelTasks = context.WithCancel(context.Background())
	// Every plugin process is listed before the host becomes a subreaper,
	// so that none is taken for an orphan (orphans.go).
	h.launch = launchedPlugins.track(h.launch)
	stopOrphanReaper := h.startOrphanReaper()
	defer stopOrphanReaper()
	defer h.shutdown()

	lock, err := lockDataDir(h.cfg.DataDir)
	if err != nil {
		return err
	}
	defer lock.Close()
	stopSecretFileWatch := h.watchSecretFile()
	defer stopSecretFileWatch()
	if err := h.openOutbox(); err != nil {
		return err
	}
	// The resender outlives ctx, so that a stopping host can still hand
	// released outcomes to the connector.
	resendCtx, stopResender := context.WithCancel(context.Background())
	resenderDone := make(chan struct{})
	go func() {
		defer close(resenderDone)
		h.runResender(resendCtx)
	}()
	defer func() {
		stopResender()
		<-resenderDone
	}()
	stopPluginListSender := h.startPluginListSender()
	defer stopPluginListSender()

	// The connector starts first so that a wrong binary fails fast, but it
	// is configured last because its Hello lists the executors' task types.
	connector, err := h.launchConnector(ctx)
	if err != nil {
		return h.locate(h.cfg.Connector(), err)
	}
	if err := h.startExecutors(ctx); err != nil {
		return err
	}
	if err := h.startMetricsPlugins(ctx); err != nil {
		return err
	}
	h.startSupervisors()
	h.logger.Info("worker host started", "slots", h.cfg.Slots, "task_types", h.taskTypes(),
		"held_outcomes", len(h.held))
	return h.serve(ctx, connector)
}

// withDefaults returns a copy of cfg whose unset supervision settings have
// their defaults, for callers that build a Config without config.Load.
func withDefaults(cfg *config.Config) *config.Config {
	c := *cfg
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = config.DefaultDrainTimeout
	}
	if c.RestartBackoffBase <= 0 {
		c.RestartBackoffBase = config.DefaultRestartBackoffBase
	}
	if c.RestartBackoffCap < c.RestartBackoffBase {
		c.RestartBackoffCap = max(config.DefaultRestartBackoffCap, c.RestartBackoffBase)
	}
	return &c
}

// workerLockFile is the file in data_dir that the running worker host
// holds an exclusive lock on. Two hosts on one data_dir would each send the
// other's held outcomes, and delete them on acknowledgements meant for the
// other.
const workerLockFile = "worker.lock"

// lockDataDir creates data_dir if needed and takes its lock without
// waiting.
func lockDataDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create data_dir %s: %w", dir, err)
	}
	f, err := dirlock.Lock(dir, workerLockFile)
	if errors.Is(err, dirlock.ErrInUse) {
		return nil, fmt.Errorf("data_dir %s is in use by another worker; give each worker its own data_dir "+
			"and worker_id", dir)
	}
	if err != nil {
		return nil, err
	}
	// `dtf worker reload` finds the worker to signal through this pid.
	if err := dirlock.WritePID(f); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// WorkerPID returns the process id of the worker host that runs on
// data_dir dir. It returns an error that wraps dirlock.ErrNotHeld when no
// worker runs there.
func WorkerPID(dir string) (int, error) {
	return dirlock.Holder(dir, workerLockFile)
}

// openOutbox opens data_dir/outbox and holds the outcomes that a previous
// run left there; they are sent after the next state sync. Only their refs
// stay in memory: the resender reads each outcome from its file when it
// sends it.
func (h *Host) openOutbox() error {
	outbox, err := OpenOutbox(filepath.Join(h.cfg.DataDir, "outbox"))
	if err != nil {
		return err
	}
	h.outbox = outbox
	problems, err := outbox.Walk(func(name string, outcome *wirepb.TaskOutcome) {
		ref := refOf(outcome.GetRef())
		entry := &heldOutcome{}
		if name != fileName(ref) {
			// Get would not find this file, so the outcome stays in memory.
			entry.memory = outcome
		}
		h.held[ref] = entry
	})
	if err != nil {
		return err
	}
	for _, problem := range problems {
		h.logger.Error("outbox file set aside", "error", problem)
	}
	if len(h.held) > 0 {
		h.logger.Info("loaded held outcomes from outbox", "count", len(h.held), "dir", outbox.Dir())
	}
	return nil
}

// launchConfig turns a plugin block into a launch of its binary.
func (h *Host) launchConfig(p config.Plugin) dtfplugin.LaunchConfig {
	env := p.Environ(os.LookupEnv)
	env = append(env, dtfplugin.LogLevelEnv+"="+h.cfg.LogLevel)
	return dtfplugin.LaunchConfig{
		Name:         p.Name,
		Kind:         p.Kind,
		Path:         p.Path,
		Args:         p.Args,
		Env:          env,
		SHA256:       p.SHA256,
		StartTimeout: p.StartTimeout,
		Logger:       h.rootLogger.Named(p.Name),
	}
}

func (h *Host) launchConnector(ctx context.Context) (pluginProcess, error) {
	p := h.connectorPlugin()
	proc, err := h.launch(ctx, h.launchConfig(p))
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.connectorProc = proc
	h.mu.Unlock()
	h.logger.Info("connector plugin started", "plugin", p.Name, "path", p.Path,
		"version", proc.Info().GetVersion())
	return proc, nil
}

// startExecutors launches every executor, builds the routing table from the
// task types they declare and configures them.
func (h *Host) startExecutors(ctx context.Context) error {
	for _, p := range h.cfg.Executors() {
		ex := &executorPlugin{cfg: p, host: h, crashed: make(chan struct{}, 1)}
		proc, err := h.launch(ctx, h.launchConfig(p))
		if err != nil {
			return h.locate(p, err)
		}
		ex.up(proc)
		h.executors = append(h.executors, ex)
		if err := h.route(ex, proc.Info()); err != nil {
			return h.locateRoute(p, err)
		}
		if err := ex.configure(ctx, proc); err != nil {
			return h.locate(p, err)
		}
		h.logger.Info("executor plugin started", "plugin", p.Name, "path", p.Path,
			"version", proc.Info().GetVersion(), "task_types", proc.Info().GetTaskTypes())
	}
	return nil
}

// route assigns the task types that an executor declares to it. Two
// executors that declare the same type are a configuration error, because
// the host could not tell which one should run it.
func (h *Host) route(ex *executorPlugin, info *pb.PluginInfo) error {
	if len(info.GetTaskTypes()) == 0 {
		return fmt.Errorf("executor plugin %s declares no task types; check the plugin's Info", ex.cfg.Name)
	}
	for _, taskType := range info.GetTaskTypes() {
		if other, ok := h.routes[taskType]; ok {
			return fmt.Errorf("task type %q is declared by executor plugins %s and %s; "+
				"remove one of them from the worker config", taskType, other.cfg.Name, ex.cfg.Name)
		}
		h.routes[taskType] = ex
	}
	return nil
}

func (h *Host) taskTypes() []string {
	types := make([]string, 0, len(h.routes))
	for t := range h.routes {
		types = append(types, t)
	}
	sort.Strings(types)
	return types
}

// shutdown cancels the running tasks, waits for them up to the shutdown
// timeout and kills every plugin process.
func (h *Host) shutdown() {
	h.endSupervisors()
	h.cancelTasks()
	done := make(chan struct{})
	go func() {
		h.tasks.Wait()
		close(done)
	}()
	timer := time.NewTimer(h.cfg.ShutdownTimeout)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		h.logger.Warn("tasks still running after shutdown timeout", "timeout", h.cfg.ShutdownTimeout)
	}

	var procs []pluginProcess
	h.mu.Lock()
	if h.connectorProc != nil {
		procs = append(procs, h.connectorProc)
	}
	h.connector, h.connectorProc = nil, nil
	h.mu.Unlock()
	for _, ex := range h.executors {
		if proc := ex.current(); proc != nil {
			procs = append(procs, proc)
		}
	}
	procs = append(procs, h.metricsProcesses()...)

	// Kill waits up to a few seconds for a graceful exit, so all plugins
	// are killed at once.
	var wg sync.WaitGroup
	for _, proc := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			proc.Kill()
		}()
	}
	wg.Wait()
	h.logger.Info("worker host stopped")
}
