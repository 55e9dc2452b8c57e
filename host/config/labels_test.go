package config

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/protocol"
)

// labelsConfig returns validConfig with its labels line replaced by line;
// an empty line removes the labels attribute.
func labelsConfig(t *testing.T, line string) string {
	t.Helper()
	const configured = `labels    = { os = "linux" }`
	require.Contains(t, validConfig, configured)
	return strings.Replace(validConfig, configured, line, 1)
}

// manyLabels returns an HCL labels attribute with n labels named l0, l1, ...
func manyLabels(n int) string {
	pairs := make([]string, n)
	for i := range pairs {
		pairs[i] = fmt.Sprintf("l%d = \"v\"", i)
	}
	return "labels = { " + strings.Join(pairs, ", ") + " }"
}

func TestLoadAddsPlatformLabels(t *testing.T) {
	t.Setenv("DTF_TEST_WORKER_TOKEN", "s3cret")
	tests := []struct {
		name string
		line string
		want map[string]string
	}{
		{"no labels attribute", "",
			map[string]string{"os": runtime.GOOS, "arch": runtime.GOARCH}},
		{"empty labels", "labels = {}",
			map[string]string{"os": runtime.GOOS, "arch": runtime.GOARCH}},
		{"free-form labels kept", `labels = { gpu = "a100" }`,
			map[string]string{"os": runtime.GOOS, "arch": runtime.GOARCH, "gpu": "a100"}},
		{"configured os wins", `labels = { os = "plan9" }`,
			map[string]string{"os": "plan9", "arch": runtime.GOARCH}},
		{"configured arch wins", `labels = { arch = "riscv64" }`,
			map[string]string{"os": runtime.GOOS, "arch": "riscv64"}},
		{"empty configured value wins", `labels = { os = "", arch = "" }`,
			map[string]string{"os": "", "arch": ""}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Load(writeWorkerConfig(t, labelsConfig(t, tc.line)))
			require.NoError(t, err)
			assert.Equal(t, tc.want, cfg.Labels)
		})
	}
}

func TestLoadPlatformLabelsWithinLimit(t *testing.T) {
	t.Setenv("DTF_TEST_WORKER_TOKEN", "s3cret")

	// 62 labels plus os and arch reach the limit exactly.
	cfg, err := Load(writeWorkerConfig(t, labelsConfig(t, manyLabels(protocol.MaxLabels-2))))
	require.NoError(t, err)
	assert.Len(t, cfg.Labels, protocol.MaxLabels)

	// One more would make the coordinator turn the worker away, so the
	// config is rejected, and the message names the added labels.
	_, err = Load(writeWorkerConfig(t, labelsConfig(t, manyLabels(protocol.MaxLabels-1))))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "Invalid labels")
	assert.Contains(t, err.Error(), "labels sets 63 labels")
	assert.Contains(t, err.Error(), "would declare 65, over the limit of 64")
	assert.Contains(t, err.Error(), "the worker adds os and arch")
}

func TestPlatformLabelsKeepsInput(t *testing.T) {
	configured := map[string]string{"gpu": "a100"}
	labels := platformLabels(configured)
	assert.Equal(t, map[string]string{"gpu": "a100"}, configured, "the config's map is not changed")
	assert.Equal(t, runtime.GOOS, labels[LabelOS])
	assert.Equal(t, runtime.GOARCH, labels[LabelArch])
}
