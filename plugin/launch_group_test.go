//go:build linux

package plugin

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A script whose background child keeps stdout open must not hold the
// launch past its start timeout, and the child must die with the script.
func TestLaunchTimeoutKillsProcessGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	script := filepath.Join(dir, "hangbg.sh")
	// The sleeps end by themselves, so a failed test leaves nothing for long.
	body := "#!/bin/sh\nsleep 30 &\necho $! > " + pidFile + "\nsleep 30\n"
	require.NoError(t, os.WriteFile(script, []byte(body), 0o755))

	start := time.Now()
	_, err := Launch(context.Background(), LaunchConfig{
		Name: "hangbg", Kind: KindExecutor, Path: script, StartTimeout: time.Second,
	})
	elapsed := time.Since(start)
	require.ErrorIs(t, err, ErrStartTimeout)
	assert.Less(t, elapsed, 8*time.Second, "the launch waited for the child's stdout")

	data, err := os.ReadFile(pidFile)
	require.NoError(t, err)
	child, err := strconv.Atoi(strings.TrimSpace(string(data)))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		return errors.Is(syscall.Kill(child, 0), syscall.ESRCH)
	}, 10*time.Second, 20*time.Millisecond, "background child %d still runs", child)
}

// A script that prints before it would serve gets a message that names the
// print as the fault.
func TestLaunchPrintBeforeServe(t *testing.T) {
	script := filepath.Join(t.TempDir(), "chatty.sh")
	require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\necho starting dtf-exec-bad\nsleep 5\n"), 0o755))
	_, err := Launch(context.Background(), LaunchConfig{
		Name: "bad", Kind: KindExecutor, Path: script, StartTimeout: 5 * time.Second,
	})
	require.ErrorIs(t, err, ErrNotPlugin)
	assert.Contains(t, err.Error(), `wrote "starting dtf-exec-bad" to stdout before the go-plugin handshake`)
	assert.Contains(t, err.Error(), "must not write to stdout before it serves")
}
