package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/test/cluster"
)

// tutorialBlock returns the fenced code block that follows marker in
// docs/plugins.md.
func tutorialBlock(t *testing.T, docs, marker string) string {
	t.Helper()
	_, rest, found := strings.Cut(docs, "<!-- "+marker+" -->\n")
	require.True(t, found, "docs/plugins.md has no %q marker", marker)
	_, rest, found = strings.Cut(rest, "\n")
	require.True(t, found, "no code block after %q", marker)
	block, _, found := strings.Cut(rest, "```\n")
	require.True(t, found, "the code block after %q is not closed", marker)
	return block
}

// goCommand runs the go tool in dir as the tutorial's reader does. The
// test may run offline, so it takes modules only from the local module
// cache and skips the checksum database. A reader who is online needs
// neither setting.
func goCommand(ctx context.Context, t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOPROXY=off", "GOSUMDB=off", "GOFLAGS=-mod=mod")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "go %s in %s:\n%s", strings.Join(args, " "), dir, out)
}

// requireRepoModules replaces the tutorial's go mod tidy: it gives the
// module in dir the requirements and checksums of the dtf module. Offline,
// tidy fails on a fresh machine, because it also resolves the modules that
// the tests of every dependency import, and a build fetches none of those.
func requireRepoModules(ctx context.Context, t *testing.T, dir, repo string) {
	t.Helper()
	cmd := exec.CommandContext(ctx, "go", "mod", "edit", "-json")
	cmd.Dir = repo
	out, err := cmd.Output()
	require.NoError(t, err, "go mod edit -json in %s", repo)
	var mod struct {
		Require []struct{ Path, Version string }
	}
	require.NoError(t, json.Unmarshal(out, &mod))
	args := []string{"mod", "edit", "-require=github.com/dtf-io/dtf@v0.0.0-00010101000000-000000000000"}
	for _, r := range mod.Require {
		args = append(args, "-require="+r.Path+"@"+r.Version)
	}
	goCommand(ctx, t, dir, args...)
	sums, err := os.ReadFile(filepath.Join(repo, "go.sum"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go.sum"), sums, 0o644))
}

// TestTutorialExecutorRunsTask follows docs/plugins.md from an empty folder:
// it builds the tutorial's executor in a new module, writes the tutorial's
// coordinator and worker configs, runs a hello task with `dtf run` and
// checks its outcome and the plugin versions that `dtf workers` shows.
func TestTutorialExecutorRunsTask(t *testing.T) {
	repo, err := cluster.RepoRoot()
	require.NoError(t, err)
	data, err := os.ReadFile(filepath.Join(repo, "docs", "plugins.md"))
	require.NoError(t, err)
	docs := string(data)

	// Step 2 and 3: a new module with the tutorial's main.go, built as the
	// tutorial builds it, with requireRepoModules in place of go mod tidy.
	dir := filepath.Join(t.TempDir(), "hello")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	goCommand(ctx, t, dir, "mod", "init", "example.com/hello")
	goCommand(ctx, t, dir, "mod", "edit", "-replace", "github.com/dtf-io/dtf="+repo)
	code := tutorialBlock(t, docs, "examples/hello/main.go")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "main.go"), []byte(code), 0o644))
	requireRepoModules(ctx, t, dir, repo)
	goCommand(ctx, t, dir, "build", "-o", "dtf-exec-hello", ".")

	out, err := exec.Command(filepath.Join(dir, "dtf-exec-hello"), "-version").CombinedOutput()
	require.NoError(t, err, "output: %s", out)
	assert.Equal(t, "dtf-exec-hello 0.1.0 (plugin kind executor, plugin API version 1)\n", string(out))

	// Step 4: the tutorial's configs, on a free port and with this test's
	// dtf binaries in place of the checkout's bin folder.
	addr, err := cluster.FreeAddr()
	require.NoError(t, err)
	adapt := strings.NewReplacer("127.0.0.1:7070", addr, "../dtf/bin/", bin.Dir+"/")
	for _, name := range []string{"coordinator.hcl", "worker.hcl"} {
		text := adapt.Replace(tutorialBlock(t, docs, "tutorial: "+name))
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644))
	}

	// Step 5: the coordinator, the worker and `dtf run`.
	coordinator, err := cluster.Start("coordinator", filepath.Join(dir, "coordinator.log"),
		bin.Path("dtf"), []string{"coordinator", "-config", filepath.Join(dir, "coordinator.hcl")})
	require.NoError(t, err)
	t.Cleanup(func() { _ = coordinator.Stop(15 * time.Second) })
	require.NoError(t, cluster.WaitHealthy(ctx, 20*time.Second, "http://"+addr),
		"coordinator log:\n%s", coordinator.Log())
	worker, err := cluster.Start("worker-1", filepath.Join(dir, "worker.log"),
		bin.Path("dtf"), []string{"worker", "-config", filepath.Join(dir, "worker.hcl")})
	require.NoError(t, err)
	t.Cleanup(func() { _ = worker.Stop(15 * time.Second) })

	dtf := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, bin.Path("dtf"), append([]string{"-addr", "http://" + addr}, args...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	runOut, err := dtf("run", "-type", "hello", "-payload", `{"name": "world", "times": 3}`)
	require.NoError(t, err, "dtf run:\n%s\nworker log:\n%s", runOut, worker.Log())
	assert.Contains(t, runOut, "succeeded 1")

	client := &api.Client{BaseURL: "http://" + addr}
	tasks, err := client.ListTasks(ctx, "", "")
	require.NoError(t, err)
	require.Len(t, tasks, 1)
	task, err := client.GetTask(ctx, tasks[0].ID)
	require.NoError(t, err)
	assert.Equal(t, api.StateSucceeded, task.State)
	require.NotNil(t, task.Outcome)
	assert.Equal(t, "greeted world", task.Outcome.Message)
	assert.Equal(t, "Hi, world!\nHi, world!\nHi, world!\n", string(task.Outcome.Output))

	// dtf workers shows each plugin's name, version and API version.
	workersJSON, err := dtf("workers", "-output", "json")
	require.NoError(t, err, workersJSON)
	var listed struct{ Workers []api.Worker }
	require.NoError(t, json.Unmarshal([]byte(workersJSON), &listed), workersJSON)
	require.Len(t, listed.Workers, 1)
	assert.Equal(t, []api.WorkerPlugin{
		{Name: "reconnection", Kind: "connector", Version: "dev", APIVersion: 2},
		{Name: "hello", Kind: "executor", Version: "0.1.0", APIVersion: 1},
	}, listed.Workers[0].Plugins)
	table, err := dtf("workers")
	require.NoError(t, err, table)
	assert.Contains(t, table, "PLUGINS")
	assert.Contains(t, table, "reconnection dev/api2, hello 0.1.0/api1")
}

// versionLine is the line that every plugin binary prints for -version.
var versionLine = regexp.MustCompile(
	`^[a-z-]+ \S+ \(plugin kind (executor|connector|metrics), plugin API versions? [0-9, ]+(, [^)]+)?\)\n$`)

// TestPluginBinariesReportVersion runs every shipped plugin binary with
// -version and --version, without the go-plugin magic cookie in its
// environment, as an operator or release script would.
func TestPluginBinariesReportVersion(t *testing.T) {
	for _, name := range []string{
		"dtf-reconnection", "dtf-metrics", "dtf-exec-command", "dtf-exec-gotest", "dtf-exec-checkpoint",
	} {
		for _, flag := range []string{"-version", "--version"} {
			t.Run(name+flag, func(t *testing.T) {
				cmd := exec.Command(bin.Path(name), flag)
				cmd.Env = []string{}
				out, err := cmd.Output()
				require.NoError(t, err, "output: %s", out)
				assert.Regexp(t, versionLine, string(out))
			})
		}
	}
}
