//go:build linux

package host

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// becomeSubreaper makes the kernel re-parent the orphaned descendants of
// this process to it instead of to init (prctl PR_SET_CHILD_SUBREAPER,
// Linux 3.4 and later).
func becomeSubreaper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl PR_SET_CHILD_SUBREAPER: %w", err)
	}
	return nil
}

// process is one entry of /proc.
type process struct {
	pid, parent, group int
	zombie             bool
}

// processTree is a snapshot of /proc, seen from this process.
type processTree struct {
	self, selfGroup int
	procs           map[int]process
	children        map[int][]int
}

// readProcessTree reads the parent, process group and state of every
// process from /proc. A process that exits during the read is skipped.
func readProcessTree() (*processTree, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	tree := &processTree{
		self:      os.Getpid(),
		selfGroup: syscall.Getpgrp(),
		procs:     make(map[int]process, len(entries)),
		children:  make(map[int][]int),
	}
	for _, entry := range entries {
		pid, err := strconv.Atoi(entry.Name())
		if err != nil {
			continue
		}
		proc, ok := readProcess(pid)
		if !ok {
			continue
		}
		tree.procs[pid] = proc
		tree.children[proc.parent] = append(tree.children[proc.parent], pid)
	}
	return tree, nil
}

// readProcess parses /proc/PID/stat. The command name in parentheses may
// contain spaces and parentheses, so the fields are counted from the last
// closing parenthesis: state, parent pid, process group.
func readProcess(pid int) (process, bool) {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return process{}, false
	}
	end := strings.LastIndexByte(string(stat), ')')
	if end < 0 {
		return process{}, false
	}
	fields := strings.Fields(string(stat[end+1:]))
	if len(fields) < 3 {
		return process{}, false
	}
	parent, err1 := strconv.Atoi(fields[1])
	group, err2 := strconv.Atoi(fields[2])
	if err1 != nil || err2 != nil {
		return process{}, false
	}
	return process{pid: pid, parent: parent, group: group, zombie: fields[0] == "Z"}, true
}

// descendants returns the processes in the subtrees of roots, the roots
// included.
func (t *processTree) descendants(roots []int) map[int]bool {
	seen := make(map[int]bool)
	stack := slices.Clone(roots)
	for len(stack) > 0 {
		pid := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[pid] {
			continue
		}
		seen[pid] = true
		stack = append(stack, t.children[pid]...)
	}
	return seen
}

// orphans returns the children of this process that are not plugins.
func (t *processTree) orphans(plugins map[int]bool) []process {
	var orphans []process
	for _, pid := range t.children[t.self] {
		if !plugins[pid] {
			orphans = append(orphans, t.procs[pid])
		}
	}
	return orphans
}

// groupKillable reports whether the process group may be killed as a
// whole: it is not the host's own group, every member descends from the
// host, and no member descends from a live plugin, so no running task of
// a live executor uses it.
func (t *processTree) groupKillable(group int, ours, live map[int]bool) bool {
	if group <= 1 || group == t.selfGroup {
		return false
	}
	for pid, proc := range t.procs {
		if proc.group == group && (!ours[pid] || live[pid]) {
			return false
		}
	}
	return true
}

// killOrphans kills the orphans of crashed plugins and reaps them. An
// orphan whose process group a live plugin's task still uses is left
// alone, because a running task may have started it in the background. Such a
// group is killed when its task ends. An orphan in the host's own process
// group is killed alone, not with its group. The kill repeats, for at most
// orphanKillTimeout, until no orphan is left, because the kill of one
// orphan re-parents its own children to the host.
func (h *Host) killOrphans(reason string) {
	launchedPlugins.launching.Lock()
	defer launchedPlugins.launching.Unlock()

	deadline := time.Now().Add(orphanKillTimeout)
	killed := make(map[int]bool)
	var left []int
	for {
		tree, err := readProcessTree()
		if err != nil {
			h.logger.Warn("orphaned task processes not killed", "error", err)
			return
		}
		var acted bool
		left, acted = h.killOrphansOnce(tree, killed)
		if !acted || time.Now().After(deadline) {
			break
		}
		time.Sleep(orphanPollInterval)
	}
	if len(killed) > 0 {
		h.logger.Info("killed orphaned task processes", "reason", reason, "pids", slices.Sorted(maps.Keys(killed)))
	}
	if len(left) > 0 {
		h.logger.Warn("orphaned task processes still running after SIGKILL", "pids", left,
			"timeout", orphanKillTimeout)
	}
}

// orphanActions lists the actions of one round of killOrphans.
type orphanActions struct {
	// reap lists the orphans that have exited, kill those to send
	// SIGKILL, and groups the process groups to send SIGKILL with them.
	reap, kill, groups []int
}

// orphanActions decides what to do with the orphans in the snapshot, given
// the pids of the live plugin processes.
func (t *processTree) orphanActions(plugins map[int]bool) orphanActions {
	live := t.descendants(slices.Collect(maps.Keys(plugins)))
	liveGroups := make(map[int]bool)
	for pid := range live {
		liveGroups[t.procs[pid].group] = true
	}
	ours := t.descendants([]int{t.self})

	var actions orphanActions
	groups := make(map[int]bool)
	for _, orphan := range t.orphans(plugins) {
		switch {
		case orphan.zombie:
			actions.reap = append(actions.reap, orphan.pid)
		case liveGroups[orphan.group] && orphan.group != t.selfGroup:
			// A running task of a live executor uses the group.
		default:
			actions.kill = append(actions.kill, orphan.pid)
			if !groups[orphan.group] && t.groupKillable(orphan.group, ours, live) {
				groups[orphan.group] = true
				actions.groups = append(actions.groups, orphan.group)
			}
		}
	}
	return actions
}

// killOrphansOnce carries out one round of orphanActions and records the
// pids it signalled in killed. It returns the orphans it signalled that
// have not been reaped, and whether it signalled or reaped any process,
// because a reaped orphan's children may have been re-parented after the
// snapshot.
func (h *Host) killOrphansOnce(tree *processTree, killed map[int]bool) (left []int, acted bool) {
	actions := tree.orphanActions(launchedPlugins.pids())
	for _, pid := range actions.reap {
		reapChild(pid)
	}
	for _, group := range actions.groups {
		_ = syscall.Kill(-group, syscall.SIGKILL)
	}
	for _, pid := range actions.kill {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		killed[pid] = true
		if !reapChild(pid) {
			left = append(left, pid)
		}
	}
	return left, len(actions.reap)+len(actions.kill) > 0
}

// reapExitedOrphans reaps the orphans that have exited. It skips a round
// while a plugin starts, because the new process is not listed yet.
func (h *Host) reapExitedOrphans() {
	if !launchedPlugins.launching.TryLock() {
		return
	}
	defer launchedPlugins.launching.Unlock()
	tree, err := readProcessTree()
	if err != nil {
		h.logger.Debug("orphans not reaped", "error", err)
		return
	}
	reaped := 0
	for _, orphan := range tree.orphans(launchedPlugins.pids()) {
		if orphan.zombie && reapChild(orphan.pid) {
			reaped++
		}
	}
	if reaped > 0 {
		h.logger.Debug("reaped exited orphan processes", "count", reaped)
	}
}

// reapChild collects the exit status of the child pid if it has exited,
// without waiting, and reports whether the child is gone. It never waits
// for any child but pid.
func reapChild(pid int) bool {
	var status syscall.WaitStatus
	got, err := syscall.Wait4(pid, &status, syscall.WNOHANG, nil)
	return got == pid || errors.Is(err, syscall.ECHILD)
}
