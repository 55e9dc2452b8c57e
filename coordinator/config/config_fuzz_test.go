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
// go test ./coordinator/config -run TestWriteFuzzCorpus -update-fuzz-corpus
var updateFuzzCorpus = flag.Bool("update-fuzz-corpus", false, "rewrite the seed corpus under testdata/fuzz")

// FuzzLoad loads arbitrary file contents as a coordinator config. Load
// must return either a config that passes Validate or an error, and every
// problem in the error must carry a position in the file or name the
// setting it is about.
func FuzzLoad(f *testing.F) {
	dir := f.TempDir()
	path := filepath.Join(dir, "coordinator.hcl")
	settings := settingNames()
	f.Fuzz(func(t *testing.T, src []byte) {
		if err := os.WriteFile(path, src, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := Load(path)
		if err == nil {
			if cfg == nil {
				t.Fatal("Load returned neither a config nor an error")
			}
			if verr := cfg.Validate(); verr != nil {
				t.Fatalf("Load returned a config that fails Validate: %v", verr)
			}
			return
		}
		if cfg != nil {
			t.Fatal("Load returned a config with an error")
		}
		checkLoadError(t, err, settings)
	})
}

// checkLoadError checks that each problem in err has a position or names
// a setting.
func checkLoadError(t *testing.T, err error, settings []string) {
	t.Helper()
	var diagErr *DiagnosticsError
	if errors.As(err, &diagErr) {
		if len(diagErr.Diagnostics) == 0 {
			t.Fatalf("DiagnosticsError without diagnostics: %v", err)
		}
		for _, diag := range diagErr.Diagnostics {
			if diag.Subject == nil && !namesSetting(diag.Summary+" "+diag.Detail, settings) {
				t.Fatalf("diagnostic %q: %q has no position and names no setting", diag.Summary, diag.Detail)
			}
		}
		return
	}
	// Validate errors, joined one per line after the file's path.
	for _, line := range strings.Split(err.Error(), "\n") {
		if !namesSetting(line, settings) {
			t.Fatalf("error line %q names no setting", line)
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
// from the hcl tags of fileConfig and fileWorkers.
func settingNames() []string {
	var names []string
	for _, v := range []any{fileConfig{}, fileWorkers{}} {
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

// fuzzSeeds are valid and broken coordinator files.
var fuzzSeeds = []string{
	"",
	`listen = "127.0.0.1:7070"
data_dir = "data"
log_level = "debug"
task_types = ["command", "gotest"]
max_attempts = 3
max_body_bytes = 1048576
retry_backoff_base = "1s"
retry_backoff_max = "5m"
task_timeout_grace = "30s"
shutdown_timeout = "10s"
schedule_interval = "1s"
workers {
  token = env("DTF_WORKER_TOKEN")
  heartbeat_interval = "2s"
  heartbeat_timeout = "6s"
  reassign_after = "30s"
  handshake_timeout = "10s"
  max_frame_bytes = 4194304
  send_queue = 256
  replay_frames = 4096
  replay_bytes = 16777216
  session_ttl = "60s"
  max_heartbeat_timeout = "24s"
  max_sessions_per_second = 500
  session_burst = 1000
  max_pending_handshakes = 1024
  compression = true
}
`,
	"listen = \"0.0.0.0:7070\"\ninsecure = true\nworkers {\n  token = \"t\"\n}\n",
	"listen = \"0.0.0.0:7070\"\n",
	"listen = \"127.0.0.1:99999\"\n",
	"max_attempts = 3000\n",
	"max_body_bytes = 9223372036854775807\n",
	"max_body_bytes = 1.5\n",
	"shutdown_timeout = \"30\"\n",
	"shutdown_timeout = 30\n",
	"shutdown_timeout = \"9999999999h\"\n",
	"retry_backoff_base = \"1h\"\nretry_backoff_max = \"1m\"\n",
	"task_types = []\n",
	"task_types = [\"Command\", \"command\", \"command\"]\n",
	"log_level = \"loud\"\n",
	"workers {\n  heartbeat_interval = \"10s\"\n  heartbeat_timeout = \"5s\"\n}\n",
	"workers {\n  replay_bytes = 2048\n  max_frame_bytes = 4096\n}\n",
	"workers {\n  send_queue = -1\n}\n",
	"workers {}\nworkers {}\n",
	"slot_count = 2\n",
	"listen = \n",
	"listen = \"127.0.0.1:7070\"\nlisten = \"127.0.0.1:7071\"\n",
	"workers {\n  token = env(\"A\", \"B\")\n}\n",
	"workers {\n  token = unknown_function()\n}\n",
	"data_dir = \"${\"\n",
	"task_types = [for t in [\"a\", \"b\"] : t]\n",
	"max_attempts = \"three\"\n",
	"\xff\xfe = 1\n",
	"workers {\n",
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
