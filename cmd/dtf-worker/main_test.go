package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// dtf-worker exists to keep the coordinator's code out of a worker host's
// memory: every linked package adds program text that the kernel maps, and
// package initialisers that run in the worker. A new import path from the
// worker command to any of these packages would quietly undo that.
func TestWorkerLinksNoCoordinatorCode(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	require.NoError(t, err, "go list -deps")
	linked := strings.Fields(string(out))
	require.Contains(t, linked, "github.com/dtf-io/dtf/host", "go list output:\n%s", out)

	// Each entry excludes the package and the packages below it, except
	// that cli/worker, the command line of the worker, sits below cli.
	excluded := []string{
		"github.com/dtf-io/dtf/cli",
		"github.com/dtf-io/dtf/coordinator",
		"modernc.org/sqlite",
		"github.com/jackc/pgx/v5",
		"github.com/prometheus/client_golang/prometheus",
		"github.com/chromedp/chromedp",
	}
	for _, path := range linked {
		if path == "github.com/dtf-io/dtf/cli/worker" {
			continue
		}
		for _, prefix := range excluded {
			assert.False(t, path == prefix || strings.HasPrefix(path, prefix+"/"),
				"dtf-worker links %s; keep the worker command free of the coordinator and the API client", path)
		}
	}
}
