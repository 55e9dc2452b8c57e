package main

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/sdk"
	"github.com/dtf-io/dtf/sdk/sdktest"
)

func newHarness(t *testing.T, config string) *sdktest.Harness {
	t.Helper()
	h := sdktest.New(t, &hello{log: hclog.NewNullLogger()})
	require.NoError(t, h.Configure(context.Background(), json.RawMessage(config)))
	return h
}

func helloTask(payload string) sdk.Task {
	return sdk.Task{ID: "t-1", Attempt: 1, Type: "hello", Payload: json.RawMessage(payload)}
}

func TestHelloGreets(t *testing.T) {
	h := newHarness(t, `{"greeting":"Hi"}`)
	run, err := h.Execute(context.Background(), helloTask(`{"name":"world","times":3}`))
	require.NoError(t, err)

	assert.Equal(t, sdk.StatusSucceeded, run.Result.Status)
	assert.Equal(t, "greeted world", run.Result.Message)
	assert.Equal(t, "Hi, world!\nHi, world!\nHi, world!\n", string(run.Result.Output))
	require.Len(t, run.Progress, 3)
	assert.Equal(t, sdktest.Progress{Fraction: 1, Message: "greeting 3 of 3"}, run.Progress[2])
	assert.Empty(t, run.Checkpoints)
}

func TestHelloDefaultGreeting(t *testing.T) {
	h := newHarness(t, `{}`)
	run, err := h.Execute(context.Background(), helloTask(`{"name":"dtf","times":1}`))
	require.NoError(t, err)
	assert.Equal(t, "Hello, dtf!\n", string(run.Result.Output))
}

func TestHelloInvalidConfig(t *testing.T) {
	h := sdktest.New(t, &hello{log: hclog.NewNullLogger()})
	cases := []struct{ config, path, detail string }{
		{`{"greeting":3}`, "greeting", "3 is not a valid string"},
		{`{"greting":"Hi"}`, "greting", "valid settings: greeting"},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			err := h.Configure(context.Background(), json.RawMessage(tc.config))
			var configErr *sdk.ConfigError
			require.ErrorAs(t, err, &configErr)
			require.Len(t, configErr.Problems, 1)
			assert.Equal(t, tc.path, configErr.Problems[0].Path)
			assert.Contains(t, configErr.Problems[0].Detail, tc.detail)
		})
	}
}

func TestHelloInvalidPayload(t *testing.T) {
	h := newHarness(t, `{}`)
	for _, payload := range []string{
		`{"times":1}`,
		`{"name":"world"}`,
		`{"name":"world","times":101}`,
		`{"name":"world","times":-1}`,
		`[]`,
	} {
		t.Run(payload, func(t *testing.T) {
			run, err := h.Execute(context.Background(), helloTask(payload))
			require.NoError(t, err)
			assert.Equal(t, sdk.StatusFailed, run.Result.Status)
			assert.Contains(t, run.Result.Message, "invalid hello payload "+payload)
			assert.Contains(t, run.Result.Message, "with times from 1 to 100")
			assert.Empty(t, run.Progress)
		})
	}
}

func TestHelloStopsWhenCancelled(t *testing.T) {
	h := newHarness(t, `{}`)
	task := helloTask(`{"name":"world","times":100}`)
	done := make(chan sdktest.Report, 1)
	go func() {
		run, _ := h.Execute(context.Background(), task)
		done <- run
	}()
	require.NoError(t, h.Cancel(context.Background(), task, "user cancelled"))

	run := <-done
	assert.Equal(t, sdk.StatusCancelled, run.Result.Status)
	assert.Contains(t, run.Result.Message, "user cancelled")
	assert.Less(t, len(run.Progress), 100, "the executor stopped before it greeted 100 times")
}

// TestTutorialMatchesExample keeps the program in docs/plugins.md and this
// folder's main.go equal, so that the tutorial's code is the code these
// tests and the end-to-end test run.
func TestTutorialMatchesExample(t *testing.T) {
	source, err := os.ReadFile("main.go")
	require.NoError(t, err)
	docs, err := os.ReadFile("../../docs/plugins.md")
	require.NoError(t, err)

	const start = "<!-- examples/hello/main.go -->\n```go\n"
	_, rest, found := strings.Cut(string(docs), start)
	require.True(t, found, "docs/plugins.md has no %q marker before the tutorial's code", start)
	code, _, found := strings.Cut(rest, "```\n")
	require.True(t, found, "the tutorial's code block in docs/plugins.md is not closed")
	assert.Equal(t, string(source), code, "docs/plugins.md and examples/hello/main.go differ; change both")
	assert.Less(t, strings.Count(code, "\n"), 60, "the tutorial promises an executor in under 60 lines")
}
