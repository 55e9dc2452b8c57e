package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/test/cluster"
)

// runHostRSS starts one real worker host with the config that the
// end-to-end tests use, waits until the coordinator lists it as connected,
// holds for o.duration and reports the resident memory of the host and of
// each plugin process it started.
func runHostRSS(ctx context.Context, o *options, r *report) error {
	bin, err := filepath.Abs(o.bin)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "dtf-load-host-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	workerID := fmt.Sprintf("load-host-%d", os.Getpid())
	configPath := filepath.Join(dir, "worker.hcl")
	err = cluster.WriteWorkerConfig(configPath, cluster.WorkerConfig{
		Bin:               cluster.Binaries{Dir: bin},
		URL:               "ws://" + o.addr,
		WorkerID:          workerID,
		Token:             o.token,
		DataDir:           filepath.Join(dir, "data"),
		Slots:             1,
		HeartbeatInterval: 2 * time.Second,
		HeartbeatTimeout:  6 * time.Second,
		BackoffBase:       o.workerSettings.backoffBase,
		BackoffCap:        o.workerSettings.backoffCap,
		HealthyAfter:      o.workerSettings.healthyAfter,
	})
	if err != nil {
		return fmt.Errorf("write worker config: %w", err)
	}
	args := []string{"-config", configPath}
	if o.host == "dtf" {
		args = append([]string{"worker"}, args...)
	}
	host, err := cluster.Start("worker", filepath.Join(dir, "worker.log"), filepath.Join(bin, o.host), args)
	if err != nil {
		return err
	}
	defer func() { _ = host.Stop(10 * time.Second) }()

	client, err := api.NewClient("http://" + o.addr)
	if err != nil {
		return err
	}
	err = cluster.Poll(ctx, o.timeout, 100*time.Millisecond, func() (bool, error) {
		workers, err := client.ListWorkers(ctx)
		if err != nil {
			return false, nil
		}
		return cluster.ConnectedWorkers(workers)[workerID], nil
	})
	if err != nil {
		return fmt.Errorf("worker %s did not connect (log %s): %w", workerID, host.LogPath, err)
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(o.duration):
	}

	hostRSS, err := vmRSS(host.Pid())
	if err != nil {
		return fmt.Errorf("read VmRSS of worker host pid %d: %w", host.Pid(), err)
	}
	r.add("worker_host", strings.Join(append([]string{o.host}, args[:len(args)-1]...), " ")+" WORKER.hcl")
	r.add("worker_config", "test/cluster WriteWorkerConfig: reconnection, command and gotest plugins")
	r.add("held_for", o.duration)
	r.add("host_rss", fmt.Sprintf("%d KiB (pid %d; %s)", hostRSS, host.Pid(), rssSplit(host.Pid())))
	byName := map[string]int64{}
	for _, pid := range cluster.ChildrenOf(host.Pid()) {
		rss, err := vmRSS(pid)
		if err != nil {
			continue
		}
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		name := filepath.Base(exe)
		byName[name] += rss
		r.add("child_rss", fmt.Sprintf("%d KiB (%s, pid %d; %s)", rss, name, pid, rssSplit(pid)))
	}

	// The target counts the host, its reconnection plugin and one executor.
	sum := hostRSS + byName["dtf-reconnection"] + byName["dtf-exec-command"]
	r.add("host_reconn_command", fmt.Sprintf("%.1f MiB (host + dtf-reconnection + dtf-exec-command)",
		float64(sum)/1024))
	var all int64 = hostRSS
	var names []string
	for name, rss := range byName {
		all += rss
		names = append(names, name)
	}
	r.add("host_all_children", fmt.Sprintf("%.1f MiB (host + %s)", float64(all)/1024, strings.Join(names, " + ")))
	return nil
}
