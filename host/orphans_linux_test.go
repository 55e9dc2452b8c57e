//go:build linux

package host

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/plugin/pb"
)

// snapshot builds a process tree seen from pid 100 in group 100.
func snapshot(procs ...process) *processTree {
	tree := &processTree{self: 100, selfGroup: 100, procs: map[int]process{}, children: map[int][]int{}}
	for _, p := range procs {
		tree.procs[p.pid] = p
		tree.children[p.parent] = append(tree.children[p.parent], p.pid)
	}
	return tree
}

func TestOrphanActions(t *testing.T) {
	// The host 100 runs the plugin 101. The plugin's task 110 leads group 110.
	host := process{pid: 100, parent: 1, group: 100}
	plugin := process{pid: 101, parent: 100, group: 100}
	task := process{pid: 110, parent: 101, group: 110}
	cases := []struct {
		name  string
		procs []process
		want  orphanActions
	}{
		{"no orphans", []process{host, plugin, task}, orphanActions{}},
		{"crashed executor's task leader and its child",
			[]process{host, {pid: 120, parent: 100, group: 120}, {pid: 121, parent: 120, group: 120}},
			orphanActions{kill: []int{120}, groups: []int{120}}},
		{"exited orphan is reaped",
			[]process{host, plugin, {pid: 130, parent: 100, group: 130, zombie: true}},
			orphanActions{reap: []int{130}}},
		{"background process of a running task is spared",
			[]process{host, plugin, task, {pid: 111, parent: 100, group: 110}},
			orphanActions{}},
		{"orphan in the host's group is killed without its group",
			[]process{host, plugin, {pid: 140, parent: 100, group: 100}},
			orphanActions{kill: []int{140}}},
		{"group with a process from outside is not killed",
			[]process{host, {pid: 150, parent: 100, group: 150}, {pid: 151, parent: 1, group: 150}},
			orphanActions{kill: []int{150}}},
		{"orphan that left its task's group",
			[]process{host, plugin, task, {pid: 160, parent: 100, group: 160}},
			orphanActions{kill: []int{160}, groups: []int{160}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tree := snapshot(tc.procs...)
			plugins := map[int]bool{}
			if _, ok := tree.procs[plugin.pid]; ok {
				plugins[plugin.pid] = true
			}
			assert.Equal(t, tc.want, tree.orphanActions(plugins))
		})
	}
}

// pidProcess is a plugin process known only by its pid.
type pidProcess struct {
	pid    int
	exited atomic.Bool
}

func (p *pidProcess) Info() *pb.PluginInfo          { return &pb.PluginInfo{} }
func (p *pidProcess) Executor() pb.ExecutorClient   { return nil }
func (p *pidProcess) Connector() pb.ConnectorClient { return nil }
func (p *pidProcess) Metrics() pb.MetricsClient     { return nil }
func (p *pidProcess) Kill()                         {}
func (p *pidProcess) Pid() int                      { return p.pid }
func (p *pidProcess) Exited() bool                  { return p.exited.Load() }
func (p *pidProcess) ExitStatus() string            { return "" }

// startOrphan starts a shell that leaves a sleep behind and exits, and
// returns the sleep's pid. With ownGroup the shell leads a new process
// group, which the sleep shares.
func startOrphan(t *testing.T, ownGroup bool) int {
	t.Helper()
	cmd := exec.Command("sh", "-c", "sleep 61 >/dev/null 2>&1 & echo $!")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: ownGroup}
	out, err := cmd.Output()
	require.NoError(t, err)
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		reapChild(pid)
	})
	proc, ok := readProcess(pid)
	require.True(t, ok, "sleep %d not found", pid)
	require.Equal(t, os.Getpid(), proc.parent, "the sleep was not re-parented to the subreaper")
	return pid
}

func TestKillOrphansReapsReparentedProcess(t *testing.T) {
	require.NoError(t, becomeSubreaper())
	h := &Host{logger: hclog.NewNullLogger()}
	for _, ownGroup := range []bool{true, false} {
		t.Run("own group "+strconv.FormatBool(ownGroup), func(t *testing.T) {
			pid := startOrphan(t, ownGroup)
			h.killOrphans("test")
			_, err := os.Stat("/proc/" + strconv.Itoa(pid))
			assert.True(t, os.IsNotExist(err), "orphan %d was not killed and reaped", pid)
		})
	}
}

func TestKillOrphansSparesPlugins(t *testing.T) {
	require.NoError(t, becomeSubreaper())
	cmd := exec.Command("sleep", "62")
	require.NoError(t, cmd.Start())
	plugin := &pidProcess{pid: cmd.Process.Pid}
	launchedPlugins.mu.Lock()
	launchedPlugins.plugins[plugin] = struct{}{}
	launchedPlugins.mu.Unlock()
	t.Cleanup(func() {
		plugin.exited.Store(true)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})

	h := &Host{logger: hclog.NewNullLogger()}
	h.killOrphans("test")
	proc, ok := readProcess(plugin.pid)
	require.True(t, ok, "the plugin process was killed and reaped")
	assert.False(t, proc.zombie, "the plugin process was killed")
}

func TestReapExitedOrphans(t *testing.T) {
	require.NoError(t, becomeSubreaper())
	pid := startOrphan(t, true)
	h := &Host{logger: hclog.NewNullLogger()}

	h.reapExitedOrphans()
	proc, ok := readProcess(pid)
	require.True(t, ok, "a running orphan was reaped")
	require.False(t, proc.zombie, "a running orphan was killed")

	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	require.Eventually(t, func() bool {
		proc, ok := readProcess(pid)
		return ok && proc.zombie
	}, waitFor, 5*time.Millisecond)
	h.reapExitedOrphans()
	_, err := os.Stat("/proc/" + strconv.Itoa(pid))
	assert.True(t, os.IsNotExist(err), "exited orphan %d was not reaped", pid)
}
