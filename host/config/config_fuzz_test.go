package config

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/dtf-io/dtf/internal/fuzzcorpus"
)

// updateFuzzCorpus rewrites the seed corpus under testdata/fuzz:
// go test ./host/config -run TestWriteFuzzCorpus -update-fuzz-corpus
var updateFuzzCorpus = flag.Bool("update-fuzz-corpus", false, "rewrite the seed corpus under testdata/fuzz")

// FuzzLoad loads arbitrary file contents as a worker config, in a folder
// laid out like writeWorkerConfig's, with plugin stand-ins under bin/.
// Load must return either a config or a *DiagnosticsError, and every
// diagnostic must carry a position in the file or name the setting it is
// about.
func FuzzLoad(f *testing.F) {
	path := fuzzConfigPath(f)
	settings := settingNames()
	f.Fuzz(func(t *testing.T, src []byte) {
		if err := os.WriteFile(path, src, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := Load(path)
		if err == nil {
			checkLoadedConfig(t, cfg)
			return
		}
		if cfg != nil {
			t.Fatal("Load returned a config with an error")
		}
		var diagErr *DiagnosticsError
		if !errors.As(err, &diagErr) {
			t.Fatalf("error of type %T is not a *DiagnosticsError: %v", err, err)
		}
		if len(diagErr.Diagnostics) == 0 {
			t.Fatalf("DiagnosticsError without diagnostics: %v", err)
		}
		for _, diag := range diagErr.Diagnostics {
			if diag.Subject == nil && !namesSetting(diag.Summary+" "+diag.Detail, settings) {
				t.Fatalf("diagnostic %q: %q has no position and names no setting", diag.Summary, diag.Detail)
			}
		}
	})
}

// fuzzConfigPath returns the path of configs/worker.hcl in a temporary
// folder with executable plugin stand-ins under bin/, as validConfig names
// them.
func fuzzConfigPath(f *testing.F) string {
	dir := f.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		f.Fatal(err)
	}
	for _, name := range []string{"dtf-reconnection", "dtf-exec-command", "dtf-exec-gotest"} {
		if err := os.WriteFile(filepath.Join(dir, "bin", name), []byte("#!/bin/sh\n"), 0o755); err != nil {
			f.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "configs"), 0o755); err != nil {
		f.Fatal(err)
	}
	return filepath.Join(dir, "configs", "worker.hcl")
}

// checkLoadedConfig checks the rules that Load promises for a config it
// returns.
func checkLoadedConfig(t *testing.T, cfg *Config) {
	t.Helper()
	if cfg == nil {
		t.Fatal("Load returned neither a config nor an error")
	}
	if cfg.Connector().Name == "" {
		t.Fatal("a loaded config has no connector plugin")
	}
	if len(cfg.Executors()) == 0 {
		t.Fatal("a loaded config has no executor plugin")
	}
	if !filepath.IsAbs(cfg.DataDir) {
		t.Fatalf("data_dir %q is not absolute", cfg.DataDir)
	}
	if cfg.Slots < 1 || cfg.ShutdownTimeout <= 0 || cfg.DrainTimeout <= 0 {
		t.Fatalf("slots %d, shutdown_timeout %s, drain_timeout %s: expected positive values",
			cfg.Slots, cfg.ShutdownTimeout, cfg.DrainTimeout)
	}
	for _, p := range cfg.Plugins {
		if !filepath.IsAbs(p.Path) || p.StartTimeout <= 0 {
			t.Fatalf("plugin %q: path %q, start_timeout %s", p.Name, p.Path, p.StartTimeout)
		}
	}
}

func namesSetting(text string, settings []string) bool {
	for _, name := range settings {
		if strings.Contains(text, name) {
			return true
		}
	}
	return false
}

// settingNames returns the attribute and block names of the file schema,
// from the hcl tags of its structs.
func settingNames() []string {
	var names []string
	for _, v := range []any{fileSchema{}, coordinatorBlock{}, pluginBlock{}} {
		typ := reflect.TypeOf(v)
		for i := range typ.NumField() {
			name, _, _ := strings.Cut(typ.Field(i).Tag.Get("hcl"), ",")
			if name != "" {
				names = append(names, name)
			}
		}
	}
	return names
}

// fuzzSeeds are valid and broken worker files.
var fuzzSeeds = []string{
	"",
	validConfig,
	strings.Replace(validConfig, "slots     = 2", "slots = 0", 1),
	strings.Replace(validConfig, "slots     = 2", "slots = 9223372036854775807", 1),
	strings.Replace(validConfig, `"ws://127.0.0.1:7070"`, `"ftp://x"`, 1),
	strings.Replace(validConfig, `"../bin/dtf-exec-command"`, `"../bin/missing"`, 1),
	strings.Replace(validConfig, `kind = "executor"`, `kind = "connector"`, 1),
	strings.Replace(validConfig, `plugin "command"`, `plugin "reconnection"`, 1),
	strings.Replace(validConfig, `start_timeout = "10s"`, `start_timeout = "10"`, 1),
	strings.Replace(validConfig, `start_timeout = "10s"`, `start_timeout = "-1s"`, 1),
	strings.Replace(validConfig, `env  = ["PATH", "HOME"]`, `env = ["A=B", ""]`, 1),
	strings.Replace(validConfig, `log_level = "info"`, `log_level = "loud"`, 1),
	strings.Replace(validConfig, `log_level = "info"`, "shutdown_timeout = \"2h\"\ndrain_timeout = \"x\"", 1),
	strings.Replace(validConfig, `log_level = "info"`, "restart_backoff_base = \"1m\"\nrestart_backoff_cap = \"1s\"", 1),
	strings.Replace(validConfig, `env  = []`, "sha256 = \"abc\"", 1),
	strings.Replace(validConfig, "config {", "config {\n    block {}", 1),
	strings.Replace(validConfig, `worker_id = "worker-1"`, `worker_id = " "`, 1),
	"data_dir = \"d\"\n",
	"data_dir = \"d\"\ncoordinator {\n  url = \"ws://127.0.0.1:7070\"\n  worker_id = \"w\"\n}\n",
	"slot_count = 2\n",
	"plugin {}\n",
	"coordinator {\n",
	"labels = { a = [1] }\n",
	"\xff = 1\n",
}

// TestWriteFuzzCorpus writes the seed corpus of FuzzLoad when
// -update-fuzz-corpus is set.
func TestWriteFuzzCorpus(t *testing.T) {
	if !*updateFuzzCorpus {
		t.Skip("run with -update-fuzz-corpus to rewrite testdata/fuzz")
	}
	entries := make([][]any, len(fuzzSeeds))
	for i, seed := range fuzzSeeds {
		entries[i] = []any{[]byte(seed)}
	}
	fuzzcorpus.Write(t, "FuzzLoad", entries...)
}
