package host

import (
	"context"
	"errors"
	"sync"
	"time"

	dtfplugin "github.com/dtf-io/dtf/plugin"
)

// An executor runs each task in a process tree of its own. When the
// executor plugin dies, for example on a SIGKILL, nothing stops that tree,
// and a retried attempt of the task could run next to it. On Linux the
// host therefore makes itself a child subreaper (orphans_linux.go): the
// kernel re-parents such orphaned processes to the host instead of init.
// The host then:
//
//   - on an executor crash, kills the process group of every orphan that no
//     live plugin's task still uses, and reaps the orphans;
//   - every orphanReapInterval, reaps orphans that exited, so that no zombie
//     stays;
//   - when it stops, after the plugins, kills and reaps every orphan.
//
// An orphan is a child process of the host that is not one of its plugins.
// The host reaps only these, with wait4 on each pid, because go-plugin
// waits for the plugin processes itself and would lose their exit status
// to a wait for any child.
//
// The list of plugin processes is kept per process, not per Host, because
// the subreaper setting applies to the whole process.

const (
	// orphanReapInterval is how often the host reaps orphans that exited.
	orphanReapInterval = 5 * time.Second
	// orphanKillTimeout bounds the kill and reap of orphans after a crash
	// or at stop. A SIGKILLed process exits within milliseconds unless it
	// waits in the kernel, for example on a hung network file system.
	orphanKillTimeout = 2 * time.Second
	// orphanPollInterval is the pause between the rounds of a kill. Each
	// round finds the processes re-parented since the previous one.
	orphanPollInterval = 20 * time.Millisecond
)

// errSubreaperUnsupported is returned where the system has no child
// subreapers.
var errSubreaperUnsupported = errors.New("child subreapers are not supported")

// pluginRegistry lists the plugin processes of this process that go-plugin
// has not reaped yet.
type pluginRegistry struct {
	// launching is held for reading while a plugin starts, and for writing
	// while orphans are killed, so that a plugin that has started but is
	// not listed yet is never taken for an orphan.
	launching sync.RWMutex

	mu      sync.Mutex
	plugins map[pluginProcess]struct{}
}

var launchedPlugins = &pluginRegistry{plugins: make(map[pluginProcess]struct{})}

// track wraps launch so that every plugin process it starts is listed.
func (r *pluginRegistry) track(launch launchFunc) launchFunc {
	return func(ctx context.Context, cfg dtfplugin.LaunchConfig) (pluginProcess, error) {
		r.launching.RLock()
		defer r.launching.RUnlock()
		proc, err := launch(ctx, cfg)
		if err == nil {
			r.mu.Lock()
			r.plugins[proc] = struct{}{}
			r.mu.Unlock()
		}
		return proc, err
	}
}

// pids returns the pids of the listed plugin processes that go-plugin has
// not reaped, and removes the others from the list. A process that exited but is not
// reaped yet stays listed, so that its zombie is left to go-plugin.
func (r *pluginRegistry) pids() map[int]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	pids := make(map[int]bool, len(r.plugins))
	for proc := range r.plugins {
		if proc.Exited() {
			delete(r.plugins, proc)
			continue
		}
		if pid := proc.Pid(); pid > 0 {
			pids[pid] = true
		}
	}
	return pids
}

// runOrphanReaper reaps exited orphans every orphanReapInterval until ctx
// ends.
func (h *Host) runOrphanReaper(ctx context.Context) {
	ticker := time.NewTicker(orphanReapInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			h.reapExitedOrphans()
		}
	}
}

// startOrphanReaper makes the host a child subreaper where the system
// supports it and starts the periodic reaper. The returned function stops
// the reaper, and then kills and reaps every orphan. Call it after the
// plugins are killed.
func (h *Host) startOrphanReaper() (stop func()) {
	err := becomeSubreaper()
	if errors.Is(err, errSubreaperUnsupported) {
		h.logger.Debug("worker host is not a child subreaper", "error", err)
		return func() {}
	}
	if err != nil {
		h.logger.Warn("worker host is not a child subreaper; processes of a task whose executor plugin "+
			"crashed keep running until they end", "error", err)
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.runOrphanReaper(ctx)
	}()
	return func() {
		cancel()
		<-done
		h.killOrphans("the worker host stops")
	}
}
