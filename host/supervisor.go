package host

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dtf-io/dtf/host/config"
	"github.com/dtf-io/dtf/plugin/pb"
	wirepb "github.com/dtf-io/dtf/protocol/pb"
)

// Each executor plugin has a supervisor goroutine. It notices a crash, that
// is a process that exited or a gRPC connection that broke, kills what is
// left of the process, and launches a new one through a new go-plugin
// client after a backoff. It never gives up. An attempt of its task types
// assigned while the plugin is down waits up to defaultExecutorUpWait for
// the restart and then runs. Only when the wait ends first does it fail
// with a retryable failure, so the coordinator hands the task out again on
// a new attempt, on this worker or another one. The host keeps announcing
// the types, because the coordinator learns a worker's task types only
// from the hello of a new session.

const (
	// exitPollInterval is how often a supervisor checks whether its
	// plugin process exited. go-plugin reports an exit only through a
	// flag, and a crash during a task wakes the supervisor at once anyway.
	exitPollInterval = 200 * time.Millisecond
	// probeTimeout bounds the Info call that distinguishes a broken gRPC
	// connection to a live process from a passing error.
	probeTimeout = 2 * time.Second
	// crashConfirmWait bounds how long a failed task waits for the
	// supervisor to confirm that the plugin crashed. It covers a probe.
	crashConfirmWait = probeTimeout + time.Second
	// keptExits is the number of recent crashes whose exit a supervisor
	// remembers for the tasks that still report them.
	keptExits = 8
)

// executorDownError is the error of a call to an executor plugin that is
// being restarted.
type executorDownError struct {
	plugin string
	exit   string
	// stays is set when the plugin's restart policy is never.
	stays bool
}

func (e *executorDownError) Error() string {
	if e.stays {
		return fmt.Sprintf("executor plugin %s crashed (%s) and stays down, because its restart policy "+
			"is never; the coordinator may retry the task on a new attempt", e.plugin, e.exit)
	}
	return fmt.Sprintf("executor plugin %s is restarting after it crashed (%s); "+
		"the coordinator may retry the task on a new attempt", e.plugin, e.exit)
}

// newPluginBackoff returns the restart backoff of plugin p: the bounds of
// its restart block, or the top-level ones for a Plugin built without
// config.Load.
func (h *Host) newPluginBackoff(p config.Plugin) *restartBackoff {
	base, limit := p.Restart.BackoffBase, p.Restart.BackoffCap
	if base <= 0 {
		base = h.cfg.RestartBackoffBase
	}
	if limit < base {
		limit = max(h.cfg.RestartBackoffCap, base)
	}
	return newRestartBackoff(base, limit)
}

// startSupervisors starts one supervisor per executor plugin and the loops
// of the metrics plugins (metrics.go).
func (h *Host) startSupervisors() {
	ctx, cancel := context.WithCancel(context.Background())
	h.stopSupervisors = cancel
	for _, ex := range h.executors {
		h.supervisors.Add(1)
		go func() {
			defer h.supervisors.Done()
			ex.supervise(ctx)
		}()
	}
	h.startMetricsLoops(ctx)
}

// endSupervisors stops the supervisors and waits for them, so none
// launches a plugin after shutdown killed the others.
func (h *Host) endSupervisors() {
	if h.stopSupervisors != nil {
		h.stopSupervisors()
	}
	h.supervisors.Wait()
}

// up publishes a configured process as the plugin's current one.
func (e *executorPlugin) up(proc pluginProcess) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.proc = proc
	e.launches++
	e.started = time.Now()
	e.down = ""
	if e.upAgain != nil {
		close(e.upAgain)
		e.upAgain = nil
	}
}

// defaultExecutorUpWait bounds how long an attempt whose executor plugin is being
// restarted waits for it before it fails as retryable. A restart takes the
// restart backoff, 500 ms by default and growing for a plugin that keeps
// crashing, plus the plugin's start. Waiting spares the attempt, which
// would otherwise count against max_attempts and, when the coordinator
// hands the task to this worker again before the restart, fail once more.
const defaultExecutorUpWait = 30 * time.Second

// awaitUp waits until the plugin runs, up to limit or until ctx ends, and
// reports whether it does.
func (e *executorPlugin) awaitUp(ctx context.Context, limit time.Duration) bool {
	e.mu.Lock()
	if e.proc != nil || e.staysDown {
		running := e.proc != nil
		e.mu.Unlock()
		return running
	}
	if e.upAgain == nil {
		e.upAgain = make(chan struct{})
	}
	upAgain := e.upAgain
	e.mu.Unlock()

	timer := time.NewTimer(limit)
	defer timer.Stop()
	select {
	case <-upAgain:
		// stayDown closes upAgain too, without a process.
		return e.current() != nil
	case <-timer.C:
	case <-ctx.Done():
	}
	return false
}

// downMessage returns why the plugin cannot take a task now, or "".
func (e *executorPlugin) downMessage() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.proc != nil {
		return ""
	}
	return (&executorDownError{plugin: e.cfg.Name, exit: e.down, stays: e.staysDown}).Error()
}

// clientFor returns the executor's client and records in task the launch
// number of the process that runs it.
func (e *executorPlugin) clientFor(task *runningTask) (pb.ExecutorClient, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.proc == nil {
		return nil, &executorDownError{plugin: e.cfg.Name, exit: e.down, stays: e.staysDown}
	}
	client := e.proc.Executor()
	task.mu.Lock()
	task.launch = e.launches
	task.client = client
	task.mu.Unlock()
	return client, nil
}

// supervise restarts the plugin whenever it crashes, until ctx ends.
func (e *executorPlugin) supervise(ctx context.Context) {
	backoff := e.host.newPluginBackoff(e.cfg)
	ticker := time.NewTicker(exitPollInterval)
	defer ticker.Stop()
	for {
		probe := false
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		case <-e.crashed:
			probe = true
		}
		e.mu.Lock()
		proc, launch, started := e.proc, e.launches, e.started
		e.mu.Unlock()
		exit := checkProcess(ctx, proc, probe)
		if exit == "" {
			continue
		}
		e.markDown(launch, exit)
		proc.Kill()
		e.host.killOrphans(fmt.Sprintf("executor plugin %s crashed (%s)", e.cfg.Name, exit))
		if e.cfg.Restart.Never() {
			e.stayDown(exit)
			wake(e.host.pluginsChanged)
			return
		}
		if !e.relaunch(ctx, backoff, time.Since(started), exit) {
			return
		}
	}
}

// checkProcess returns how a crashed process ended, or "" while it runs.
// With probe set it also calls Info, so a gRPC connection that broke while
// the process lives counts as a crash. It serves executor and metrics
// plugins.
func checkProcess(ctx context.Context, proc pluginProcess, probe bool) string {
	if proc == nil {
		return ""
	}
	if proc.Exited() {
		return proc.ExitStatus()
	}
	if !probe {
		return ""
	}
	probeCtx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	var err error
	if client := proc.Metrics(); client != nil {
		_, err = client.Info(probeCtx, &pb.Empty{})
	} else {
		_, err = proc.Executor().Info(probeCtx, &pb.Empty{})
	}
	if err == nil || ctx.Err() != nil {
		return ""
	}
	// A killed process breaks its connection a moment before go-plugin
	// reports the exit, and the exit status, such as "signal: killed", is
	// the more useful message.
	if exit := awaitExit(proc, exitAwait); exit != "still running" {
		return exit
	}
	return fmt.Sprintf("gRPC connection lost: %v", err)
}

// exitAwait bounds how long awaitExit waits for go-plugin to notice the
// exit of a process whose gRPC stream just broke.
const exitAwait = time.Second

// awaitExit returns how proc ended, waiting up to wait for the exit, or
// "still running" when the process outlives the wait, for example when only
// its gRPC connection broke.
func awaitExit(proc pluginProcess, wait time.Duration) string {
	deadline := time.Now().Add(wait)
	for !proc.Exited() {
		if time.Now().After(deadline) {
			return "still running"
		}
		time.Sleep(20 * time.Millisecond)
	}
	return proc.ExitStatus()
}

// connectorStaysDown returns the error that stops the worker when connector
// plugin p, whose restart policy is never, stopped with err and exit.
func connectorStaysDown(p config.Plugin, err error, exit string) error {
	return fmt.Errorf("connector plugin %s stopped (%v, exit: %s) and its restart policy is never, "+
		"so the worker stops; set policy = \"always\" in its restart block to restart it", p.Name, err, exit)
}

// stayDown leaves a crashed plugin whose restart policy is never down for
// the rest of the host's life. Tasks that wait for it fail at once.
func (e *executorPlugin) stayDown(exit string) {
	e.host.logger.Error("executor plugin crashed and stays down, because its restart policy is never; "+
		"tasks of its types fail as retryable until the worker restarts",
		"plugin", e.cfg.Name, "exit", exit, "task_types", e.host.typesOf(e))
	e.mu.Lock()
	defer e.mu.Unlock()
	e.staysDown = true
	if e.upAgain != nil {
		close(e.upAgain)
		e.upAgain = nil
	}
}

// typesOf returns the task types routed to ex, sorted.
func (h *Host) typesOf(ex *executorPlugin) []string {
	var types []string
	for taskType, routed := range h.routes {
		if routed == ex {
			types = append(types, taskType)
		}
	}
	sort.Strings(types)
	return types
}

// markDown records the crash of launch, so that tasks find its exit and
// new assignments are rejected until the relaunch.
func (e *executorPlugin) markDown(launch uint64, exit string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.proc = nil
	e.down = exit
	if e.exits == nil {
		e.exits = make(map[uint64]string)
	}
	e.exits[launch] = exit
	for old := range e.exits {
		if old+keptExits <= launch {
			delete(e.exits, old)
		}
	}
}

// relaunch launches and configures a new process after the backoff,
// retrying until it succeeds or ctx ends. It reports whether a process
// runs again.
func (e *executorPlugin) relaunch(ctx context.Context, backoff *restartBackoff, ran time.Duration, exit string) bool {
	logger := e.host.logger.With("plugin", e.cfg.Name)
	delay, recent, looping := backoff.crashed(time.Now(), ran)
	logger.Warn("executor plugin crashed, restarting it; its running tasks are reported as retryable failures",
		"exit", exit, "ran_for", ran.Round(time.Millisecond), "restart_in", delay.Round(time.Millisecond))
	for {
		if looping {
			logger.Warn("executor plugin is crash looping; its task types are rejected while it is down, "+
				"check its log", "crashes", recent, "window", restartWarnWindow)
		}
		if !sleepCtx(ctx, delay) {
			return false
		}
		proc, err := e.launchConfigured(ctx)
		if err == nil {
			e.up(proc)
			wake(e.host.pluginsChanged)
			e.checkTaskTypes(proc.Info())
			logger.Info("executor plugin restarted", "path", e.cfg.Path, "version", proc.Info().GetVersion())
			e.host.recordRestart(e.cfg, exit)
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		delay, recent, looping = backoff.crashed(time.Now(), 0)
		logger.Error("executor plugin restart failed, trying again", "error", err,
			"restart_in", delay.Round(time.Millisecond))
	}
}

// launchConfigured launches a process of the plugin and configures it.
func (e *executorPlugin) launchConfigured(ctx context.Context) (pluginProcess, error) {
	proc, err := e.host.launch(ctx, e.host.launchConfig(e.cfg))
	if err != nil {
		return nil, err
	}
	if err := e.configure(ctx, proc); err != nil {
		proc.Kill()
		return nil, err
	}
	return proc, nil
}

// checkTaskTypes warns when a relaunched plugin declares other task types
// than at start. The routing table and the session's hello keep the types
// from the start until the host restarts.
func (e *executorPlugin) checkTaskTypes(info *pb.PluginInfo) {
	declared := e.host.typesOf(e)
	now := slices.Sorted(slices.Values(info.GetTaskTypes()))
	if !slices.Equal(declared, now) {
		e.host.logger.Warn("restarted executor plugin declares other task types; "+
			"the worker keeps routing the types from its start until it restarts",
			"plugin", e.cfg.Name, "routed", declared, "declared", now)
	}
}

// crashMessage returns the outcome message of a call that failed because
// the plugin crashed while it ran the task, or "" for any other failure.
// A broken stream wakes the supervisor and waits up to crashConfirmWait
// for it to confirm the crash, so the message can name the exit.
func (e *executorPlugin) crashMessage(task *runningTask, err error) string {
	var down *executorDownError
	if errors.As(err, &down) {
		return down.Error()
	}
	task.mu.Lock()
	launch := task.launch
	task.mu.Unlock()
	if launch == 0 || err == nil {
		return ""
	}

	exit, ok := e.exitOf(launch)
	code := status.Code(err)
	if !ok && (code == codes.Unavailable || code == codes.Canceled || code == codes.Internal) {
		wake(e.crashed)
		deadline := time.Now().Add(crashConfirmWait)
		for !ok && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
			exit, ok = e.exitOf(launch)
		}
	}
	if !ok {
		return ""
	}
	return fmt.Sprintf("executor plugin %s crashed while the attempt ran (%s); "+
		"the coordinator may retry the task on a new attempt", e.cfg.Name, exit)
}

// exitOf returns how the process of launch ended, once it has.
func (e *executorPlugin) exitOf(launch uint64) (string, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if exit, ok := e.exits[launch]; ok {
		return exit, true
	}
	if e.launches == launch && e.proc != nil && e.proc.Exited() {
		return e.proc.ExitStatus(), true
	}
	return "", false
}

// rejectedOutcome is the outcome of an assignment that the host did not
// start. It is a retryable failure, and with released set the attempt does
// not count against the task's max_attempts.
func rejectedOutcome(ref taskRef, message string, released bool) *wirepb.TaskOutcome {
	now := time.Now().UnixMilli()
	return &wirepb.TaskOutcome{
		Ref:            ref.proto(),
		Status:         wirepb.Status_STATUS_FAILED,
		Message:        message,
		Retryable:      true,
		Released:       released,
		StartedUnixMs:  now,
		FinishedUnixMs: now,
	}
}
