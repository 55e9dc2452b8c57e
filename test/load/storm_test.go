package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/test/cluster"
)

// stormWorkers is the fleet size of the storm test.
const stormWorkers = 500

// maxStormWindowShare is the largest share of the reconnection dials that
// one stormWindow may contain. The coordinator spaces its shutdown retry
// hints evenly over 1 s to 4 s, so each window expects about 1/30 (3.3 %).
// Runs on a 2-core machine, with other tests or two busy loops beside, gave
// 3.6 % to 4.0 %.
// NOTE: the earliest hint is 1 s after the shutdown. A restart slower than
// that makes the first workers' dials fail and dial again within their
// backoff, which adds dials to the early windows. The test logs how long
// the stop and the start took.
const maxStormWindowShare = 0.05

// TestStormRestartResumesAll runs the storm mode against a real coordinator
// process. 500 simulated workers connect over WebSocket, and the coordinator
// stops on SIGTERM and starts again on the same data_dir and port. Every
// worker must resume its session, and no 100 ms window from the first
// disconnect may contain more than 5 % of the dials.
func TestStormRestartResumesAll(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the dtf binary and runs 500 workers through a coordinator restart, about 10 s; " +
			"runs without -short")
	}
	// The Go runtime raised the soft limit to the hard limit at start, and
	// the coordinator, also a Go program, does the same. Each process has
	// one end of every connection open, plus its own files.
	var limit syscall.Rlimit
	require.NoError(t, syscall.Getrlimit(syscall.RLIMIT_NOFILE, &limit))
	if need := uint64(stormWorkers + 300); limit.Cur < need {
		t.Skipf("open file limit is %d; the test and the coordinator each keep one end of %d connections open "+
			"and need %d (raise it with ulimit -n 4096)", limit.Cur, stormWorkers, need)
	}

	bin, remove, err := cluster.BuildTemp("dtf-storm-bin-", 5*time.Minute, "dtf")
	require.NoError(t, err)
	t.Cleanup(remove)

	dir := t.TempDir()
	addr, err := cluster.FreeAddr()
	require.NoError(t, err)
	const token = "storm-token"
	config := filepath.Join(dir, "coordinator.hcl")
	require.NoError(t, cluster.WriteCoordinatorConfig(config, cluster.CoordinatorConfig{
		Listen:  addr,
		DataDir: filepath.Join(dir, "coordinator"),
		Token:   token,
		// Generous heartbeats keep a busy 2-core machine from dropping a
		// worker before the restart, which would start the storm clock early.
		HeartbeatInterval: 2 * time.Second,
		HeartbeatTimeout:  15 * time.Second,
		ReassignAfter:     time.Minute,
		TaskTypes:         []string{"command"},
		LogLevel:          "info",
	}))
	coordinators := &coordinatorRuns{t: t, bin: bin, dir: dir, config: config, addr: addr}
	t.Cleanup(coordinators.stopAll)
	_, err = coordinators.start(context.Background())
	require.NoError(t, err)

	o, err := parseOptions([]string{"-mode", "storm", "-workers", fmt.Sprint(stormWorkers), "-addr", addr,
		"-token", token, "-duration", "60s", "-timeout", "3m"})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()

	r := newReport(o, t.Name())
	result, err := measureStorm(ctx, o, r, coordinators.restart)
	var block strings.Builder
	r.print(&block, err)
	t.Log("storm result:\n" + block.String())
	require.NoError(t, err, "coordinator logs:\n%s", coordinators.logs())

	assert.Equal(t, stormWorkers, result.returned, "workers with a welcome after the restart")
	assert.Equal(t, stormWorkers, result.resumed, "workers that resumed their session instead of starting a new one")
	assert.GreaterOrEqual(t, result.attempts, stormWorkers, "every worker dials at least once after the restart")
	assert.LessOrEqual(t, result.maxWindowShare(), maxStormWindowShare,
		"share of the %d dials in the busiest %s window: %d", result.attempts, stormWindow, result.maxWindow())
}

// coordinatorRuns starts the coordinator of the storm test, restarts it on
// the same config and stops every run at cleanup.
type coordinatorRuns struct {
	t      *testing.T
	bin    cluster.Binaries
	dir    string
	config string
	addr   string

	mu   sync.Mutex
	runs []*cluster.Process
}

// start starts one more coordinator process and waits until it serves.
func (c *coordinatorRuns) start(ctx context.Context) (*cluster.Process, error) {
	c.mu.Lock()
	name := fmt.Sprintf("coordinator-%d", len(c.runs)+1)
	p, err := cluster.Start(name, filepath.Join(c.dir, name+".log"), c.bin.Path("dtf"),
		[]string{"coordinator", "-config", c.config})
	if err == nil {
		c.runs = append(c.runs, p)
	}
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if err := cluster.WaitHealthy(ctx, 30*time.Second, "http://"+c.addr); err != nil {
		return nil, fmt.Errorf("%s did not become healthy: %w", name, err)
	}
	return p, nil
}

// restart stops the running coordinator with SIGTERM, which saves the
// sessions, and starts it again on the same data_dir and port.
func (c *coordinatorRuns) restart(ctx context.Context) error {
	c.mu.Lock()
	current := c.runs[len(c.runs)-1]
	c.mu.Unlock()
	stopping := time.Now()
	if err := current.Stop(30 * time.Second); err != nil {
		return fmt.Errorf("graceful stop of %s: %w", current.Name, err)
	}
	starting := time.Now()
	if _, err := c.start(ctx); err != nil {
		return err
	}
	c.t.Logf("coordinator restart: stop took %s, start until healthy %s",
		starting.Sub(stopping).Round(time.Millisecond), time.Since(starting).Round(time.Millisecond))
	return nil
}

func (c *coordinatorRuns) stopAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.runs {
		if err := p.Stop(30 * time.Second); err != nil {
			c.t.Logf("stop %s: %v", p.Name, err)
		}
	}
}

// logs returns the log of every run, oldest first.
func (c *coordinatorRuns) logs() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	for _, p := range c.runs {
		fmt.Fprintf(&b, "--- %s\n%s", p.Name, p.Log())
	}
	return b.String()
}
