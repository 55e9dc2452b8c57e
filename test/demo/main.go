// Command dtf-demo is what `make run` runs: it starts a coordinator on a
// temporary SQLite file and two workers that reach it through a fault
// proxy, submits this repository's Go packages as gotest tasks, cuts the
// network in the middle of the run, and prints the results. It exits 1 when
// a task was lost, finished more than once or failed.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/test/cluster"
	"github.com/dtf-io/dtf/test/faultproxy"
)

func main() {
	binDir := flag.String("bin", "bin", "folder with the dtf binaries built by make build")
	repo := flag.String("repo", ".", "Go module whose packages become gotest tasks")
	cutFor := flag.Duration("cut", 3*time.Second, "how long the network stays cut")
	limit := flag.Duration("timeout", 170*time.Second, "time limit for the whole run")
	keep := flag.Bool("keep", false, "keep the temporary folder with configs, logs and the database")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *limit)
	defer cancel()

	d := &demo{cutFor: *cutFor, keep: *keep}
	err := d.run(ctx, *binDir, *repo)
	// Keep configs, logs and the database of a failed run for inspection.
	d.keep = d.keep || err != nil
	d.shutdown()
	if err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo failed: %v\n", err)
		if d.dir != "" {
			fmt.Fprintf(os.Stderr, "logs are in %s\n", d.dir)
		}
		os.Exit(1)
	}
}

type demo struct {
	cutFor      time.Duration
	keep        bool
	dir         string
	bin         cluster.Binaries
	coordinator *cluster.Process
	// coordConfig is the coordinator's config file, which dtf credentials
	// reads to find the store.
	coordConfig string
	workers     []*cluster.Process
	proxy       *faultproxy.Proxy
	client      *api.Client
	// before lists the processes from the bin folder that ran before the
	// demo started, such as a worker of the user's, so that the check at
	// shutdown names only the demo's own.
	before map[int]bool
}

func (d *demo) run(ctx context.Context, binDir, repo string) error {
	var err error
	if d.bin.Dir, err = filepath.Abs(binDir); err != nil {
		return err
	}
	d.before = make(map[int]bool)
	for _, pid := range cluster.ProcessesIn(d.bin.Dir) {
		d.before[pid] = true
	}
	if repo, err = filepath.Abs(repo); err != nil {
		return err
	}
	if d.dir, err = os.MkdirTemp("", "dtf-demo-"); err != nil {
		return err
	}

	// Start the coordinator, the fault proxy in front of it and two workers.
	if err := d.startCoordinator(ctx); err != nil {
		return err
	}
	if err := d.startWorkers(ctx, 2); err != nil {
		return err
	}

	// Submit one gotest task per package.
	packages, err := listPackages(ctx, repo)
	if err != nil {
		return err
	}
	batch, err := d.submit(ctx, repo, packages)
	if err != nil {
		return err
	}
	fmt.Printf("submitted %d gotest tasks as batch %s\n", len(packages), batch)

	// Cut the network once some tasks run, then let the workers reconnect.
	if err := d.cutMidRun(ctx, batch); err != nil {
		return err
	}

	tasks, err := d.waitDone(ctx, batch)
	if err != nil {
		return err
	}
	return d.report(ctx, tasks)
}

func (d *demo) startCoordinator(ctx context.Context) error {
	addr, err := cluster.FreeAddr()
	if err != nil {
		return err
	}
	config := filepath.Join(d.dir, "coordinator.hcl")
	d.coordConfig = config
	// No shared token: each worker logs in with a credential of its own,
	// and every message between it and the coordinator carries a tag.
	err = cluster.WriteCoordinatorConfig(config, cluster.CoordinatorConfig{
		Listen:            addr,
		DataDir:           filepath.Join(d.dir, "coordinator"),
		HeartbeatInterval: time.Second,
		HeartbeatTimeout:  3 * time.Second,
		ReassignAfter:     30 * time.Second,
	})
	if err != nil {
		return err
	}
	d.coordinator, err = cluster.Start("coordinator", filepath.Join(d.dir, "coordinator.log"),
		d.bin.Path("dtf"), []string{"coordinator", "-config", config})
	if err != nil {
		return err
	}
	base := "http://" + addr
	d.client = &api.Client{BaseURL: base}
	if err := cluster.WaitHealthy(ctx, 20*time.Second, base); err != nil {
		return fmt.Errorf("coordinator did not become healthy: %w\n%s", err, d.coordinator.Log())
	}
	d.proxy, err = faultproxy.New(addr)
	if err != nil {
		return err
	}
	fmt.Printf("coordinator on %s (SQLite in %s), fault proxy on %s\n",
		addr, filepath.Join(d.dir, "coordinator"), d.proxy.Addr())
	return nil
}

func (d *demo) startWorkers(ctx context.Context, count int) error {
	for i := 1; i <= count; i++ {
		id := fmt.Sprintf("worker-%d", i)
		config := filepath.Join(d.dir, id+".hcl")
		secretFile := filepath.Join(d.dir, id+".secret")
		if err := cluster.CreateCredential(ctx, d.bin, d.coordConfig, id, secretFile); err != nil {
			return err
		}
		err := cluster.WriteWorkerConfig(config, cluster.WorkerConfig{
			Bin:               d.bin,
			URL:               "ws://" + d.proxy.Addr(),
			WorkerID:          id,
			SecretFile:        secretFile,
			DataDir:           filepath.Join(d.dir, id),
			Slots:             1,
			HeartbeatInterval: time.Second,
			HeartbeatTimeout:  3 * time.Second,
			BackoffBase:       200 * time.Millisecond,
			BackoffCap:        2 * time.Second,
			HealthyAfter:      5 * time.Second,
		})
		if err != nil {
			return err
		}
		worker, err := cluster.Start(id, filepath.Join(d.dir, id+".log"),
			d.bin.Path("dtf-worker"), []string{"-config", config})
		if err != nil {
			return err
		}
		d.workers = append(d.workers, worker)
	}
	err := cluster.Poll(ctx, 30*time.Second, 100*time.Millisecond, func() (bool, error) {
		workers, err := d.client.ListWorkers(ctx)
		if err != nil {
			return false, nil
		}
		return len(cluster.ConnectedWorkers(workers)) == count, nil
	})
	if err != nil {
		return fmt.Errorf("workers did not connect: %w\n%s", err, d.workers[0].Log())
	}
	fmt.Printf("%d workers connected, each with its own credential (SCRAM login, tagged messages)\n", count)
	return nil
}

// listPackages returns the module's packages, without the end-to-end tests
// under test/ that start clusters of their own.
func listPackages(ctx context.Context, repo string) ([]string, error) {
	cmd := exec.CommandContext(ctx, "go", "list", "./...")
	cmd.Dir = repo
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list in %s: %w", repo, err)
	}
	var packages []string
	for _, pkg := range strings.Fields(string(out)) {
		if strings.Contains(pkg, "/test/") {
			continue
		}
		packages = append(packages, pkg)
	}
	return packages, nil
}

func (d *demo) submit(ctx context.Context, repo string, packages []string) (string, error) {
	req := api.SubmitRequest{}
	for _, pkg := range packages {
		payload, _ := json.Marshal(map[string]any{
			"dir":      repo,
			"packages": []string{pkg},
			"args":     []string{"-short", "-count=1"},
		})
		req.Tasks = append(req.Tasks, api.TaskSpec{
			Name:    pkg,
			Type:    "gotest",
			Payload: payload,
			Timeout: "3m",
		})
	}
	resp, err := d.client.Submit(ctx, req)
	if err != nil {
		return "", err
	}
	return resp.Batch, nil
}

func (d *demo) cutMidRun(ctx context.Context, batch string) error {
	err := cluster.Poll(ctx, 60*time.Second, 100*time.Millisecond, func() (bool, error) {
		tasks, err := d.client.ListTasks(ctx, batch, "")
		if err != nil {
			return false, nil
		}
		running := 0
		for _, t := range tasks {
			if t.State == api.StateRunning {
				running++
			}
		}
		return running >= 2, nil
	})
	if err != nil {
		return fmt.Errorf("tasks did not start: %w", err)
	}
	fmt.Printf("cutting the network between workers and coordinator for %s\n", d.cutFor)
	d.proxy.Refuse(true)
	d.proxy.Cut()
	select {
	case <-time.After(d.cutFor):
	case <-ctx.Done():
		return ctx.Err()
	}
	d.proxy.Refuse(false)
	fmt.Println("network restored")
	return nil
}

func (d *demo) waitDone(ctx context.Context, batch string) ([]api.Task, error) {
	var tasks []api.Task
	lastDone := -1
	err := cluster.Poll(ctx, 0, 500*time.Millisecond, func() (bool, error) {
		var err error
		tasks, err = d.client.ListTasks(ctx, batch, "")
		if err != nil {
			return false, nil
		}
		done := 0
		for _, t := range tasks {
			if api.Terminal(t.State) {
				done++
			}
		}
		if done != lastDone {
			fmt.Printf("  %d/%d tasks finished\n", done, len(tasks))
			lastDone = done
		}
		return done == len(tasks), nil
	})
	if err != nil {
		return nil, fmt.Errorf("tasks did not finish: %w", err)
	}
	full := make([]api.Task, 0, len(tasks))
	for _, t := range tasks {
		task, err := d.client.GetTask(ctx, t.ID)
		if err != nil {
			return nil, err
		}
		full = append(full, *task)
	}
	return full, nil
}

// testCounts is the part of the gotest executor's result JSON that the
// report reads.
type testCounts struct {
	Counts struct {
		Pass int `json:"pass"`
		Fail int `json:"fail"`
		Skip int `json:"skip"`
	} `json:"counts"`
}

func (d *demo) report(ctx context.Context, tasks []api.Task) error {
	sort.Slice(tasks, func(i, j int) bool { return tasks[i].Name < tasks[j].Name })
	fmt.Println()
	table := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(table, "PACKAGE\tSTATE\tWORKER\tATTEMPTS\tPASS\tFAIL\tSKIP\tTIME")
	var problems []string
	for _, t := range tasks {
		var counts testCounts
		elapsed := ""
		if t.Outcome != nil {
			_ = json.Unmarshal(t.Outcome.Result, &counts)
			elapsed = t.Outcome.Finished.Sub(t.Outcome.Started).Round(100 * time.Millisecond).String()
		}
		fmt.Fprintf(table, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\n", t.Name, t.State, t.WorkerID,
			len(t.Attempts), counts.Counts.Pass, counts.Counts.Fail, counts.Counts.Skip, elapsed)
		problems = append(problems, checkExactlyOnce(t)...)
		if t.State != api.StateSucceeded {
			problems = append(problems, fmt.Sprintf("%s ended %s", t.Name, t.State))
		}
	}
	table.Flush()

	// Reconnects per worker: each session after the first is a reconnect.
	workers, err := d.client.ListWorkers(ctx)
	if err != nil {
		return err
	}
	fmt.Println()
	for _, w := range workers {
		reconnects := max(w.Connects-1, 0)
		fmt.Printf("%s: %d reconnect(s)\n", w.ID, reconnects)
		if reconnects == 0 {
			problems = append(problems, w.ID+" never reconnected, so the cut was not exercised")
		}
	}

	fmt.Println()
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	fmt.Printf("every one of %d tasks finished exactly once\n", len(tasks))
	return nil
}

// checkExactlyOnce returns what is wrong with a finished task's record: it
// must have exactly one outcome, from its last attempt, and no earlier
// attempt may have finished.
func checkExactlyOnce(t api.Task) []string {
	var problems []string
	if t.Outcome == nil {
		return []string{fmt.Sprintf("%s has no outcome", t.Name)}
	}
	if t.Outcome.Attempt != t.Attempt {
		problems = append(problems, fmt.Sprintf("%s: outcome of attempt %d but current attempt is %d",
			t.Name, t.Outcome.Attempt, t.Attempt))
	}
	finished := 0
	for _, a := range t.Attempts {
		if api.Terminal(a.State) {
			finished++
		}
	}
	if finished != 1 {
		problems = append(problems, fmt.Sprintf("%s: %d attempts finished, want 1", t.Name, finished))
	}
	return problems
}

func (d *demo) shutdown() {
	for _, w := range d.workers {
		if err := w.Stop(15 * time.Second); err != nil {
			fmt.Fprintf(os.Stderr, "stop %s: %v\n", w.Name, err)
		}
	}
	if d.proxy != nil {
		d.proxy.Close()
	}
	if d.coordinator != nil {
		if err := d.coordinator.Stop(15 * time.Second); err != nil {
			fmt.Fprintf(os.Stderr, "stop coordinator: %v\n", err)
		}
	}
	var left []int
	for _, pid := range cluster.ProcessesIn(d.bin.Dir) {
		if !d.before[pid] {
			left = append(left, pid)
		}
	}
	if len(left) > 0 {
		fmt.Fprintf(os.Stderr, "processes left running from %s: %v\n", d.bin.Dir, left)
	}
	if d.dir != "" && !d.keep {
		os.RemoveAll(d.dir)
	}
}
