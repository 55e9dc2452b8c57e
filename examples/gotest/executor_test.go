package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/dtf-io/dtf/sdk"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type progressRecorder struct {
	mu       sync.Mutex
	messages []string
}

func (r *progressRecorder) Progress(_ float64, message string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.messages = append(r.messages, message)
}

func (r *progressRecorder) Checkpoint([]byte, float64, string) error { return nil }

// writeModule creates a Go module in a temporary folder from file contents
// keyed by relative path.
func writeModule(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	files["go.mod"] = "module example.com/m\n\ngo 1.21\n"
	for name, content := range files {
		path := filepath.Join(dir, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
	}
	return dir
}

const mixedTests = `package m

import "testing"

func TestPass(t *testing.T) {}

func TestFail(t *testing.T) {
	t.Log("checking the answer")
	t.Fatal("wrong answer: got 41, want 42")
}

func TestSkip(t *testing.T) { t.Skip("not on this machine") }
`

func execute(t *testing.T, e *Executor, payload map[string]any, reporter sdk.Reporter) (sdk.Result, Report) {
	t.Helper()
	raw, err := json.Marshal(payload)
	require.NoError(t, err)
	res, err := e.Execute(context.Background(),
		sdk.Task{ID: "t1", Attempt: 1, Type: TaskType, Payload: raw}, reporter)
	require.NoError(t, err)

	var report Report
	require.NoError(t, json.Unmarshal(res.Data, &report), "data: %s", res.Data)
	return res, report
}

func TestExecuteMixedResults(t *testing.T) {
	dir := writeModule(t, map[string]string{
		"m_test.go":     mixedTests,
		"ok/ok_test.go": "package ok\n\nimport \"testing\"\n\nfunc TestFine(t *testing.T) {}\n",
	})
	progress := &progressRecorder{}
	res, report := execute(t, NewExecutor(),
		map[string]any{"dir": dir, "args": []string{"-count=1"}}, progress)

	assert.Equal(t, sdk.StatusFailed, res.Status)
	assert.Equal(t, 1, res.ExitCode)
	assert.Contains(t, res.Message, "2 passed, 1 failed, 1 skipped; 1 of 2 packages failed")
	assert.Equal(t, Counts{Pass: 2, Fail: 1, Skip: 1}, report.Counts)

	byName := map[string]TestResult{}
	for _, tr := range report.Tests {
		byName[tr.Test] = tr
	}
	require.Contains(t, byName, "TestFail")
	assert.Equal(t, "fail", byName["TestFail"].Action)
	assert.Contains(t, byName["TestFail"].Output, "wrong answer: got 41, want 42")
	assert.Contains(t, byName["TestFail"].Output, "checking the answer")
	assert.Equal(t, "pass", byName["TestPass"].Action)
	assert.Empty(t, byName["TestPass"].Output)
	assert.Equal(t, "skip", byName["TestSkip"].Action)
	assert.Empty(t, byName["TestSkip"].Output)
	assert.Equal(t, "example.com/m", byName["TestFail"].Package)

	actions := map[string]string{}
	for _, p := range report.Packages {
		actions[p.Package] = p.Action
	}
	assert.Equal(t, map[string]string{"example.com/m": "fail", "example.com/m/ok": "pass"}, actions)
	assert.Contains(t, string(res.Output), "wrong answer")

	progress.mu.Lock()
	defer progress.mu.Unlock()
	require.Len(t, progress.messages, 2)
	assert.Contains(t, progress.messages[1], "2 of 2 packages done, 1 failed")
}

func TestExecuteAllPass(t *testing.T) {
	dir := writeModule(t, map[string]string{
		"m_test.go": "package m\n\nimport \"testing\"\n\nfunc TestA(t *testing.T) {\n\tt.Log(\"noise\")\n}\n",
	})
	res, report := execute(t, NewExecutor(),
		map[string]any{"dir": dir, "packages": []string{"."}, "args": []string{"-count=1", "-v"}}, nil)

	assert.Equal(t, sdk.StatusSucceeded, res.Status)
	assert.Equal(t, 0, res.ExitCode)
	assert.Equal(t, "ok: 1 passed, 0 failed, 0 skipped; 0 of 1 packages failed", res.Message)
	assert.Empty(t, res.Output)
	require.Len(t, report.Tests, 1)
	assert.Empty(t, report.Tests[0].Output)
}

func TestExecuteBuildFailure(t *testing.T) {
	dir := writeModule(t, map[string]string{
		"m_test.go": "package m\n\nimport \"testing\"\n\nfunc TestA(t *testing.T) { undefinedName() }\n",
	})
	res, report := execute(t, NewExecutor(), map[string]any{"dir": dir}, nil)

	assert.Equal(t, sdk.StatusFailed, res.Status)
	assert.NotZero(t, res.ExitCode)
	assert.Contains(t, string(res.Output), "undefinedName")
	require.Len(t, report.Packages, 1)
	assert.Equal(t, "fail", report.Packages[0].Action)
	assert.Contains(t, report.Packages[0].Output, "build failed")
}

func TestExecuteOutputBounds(t *testing.T) {
	// Each failing test writes about 20 KB; the limits keep 1 KB per test
	// and 1.5 KB in total.
	dir := writeModule(t, map[string]string{
		"m_test.go": `package m

import (
	"strings"
	"testing"
)

func TestNoisyA(t *testing.T) { t.Log(strings.Repeat("a", 20000)); t.Fatal("end of A") }
func TestNoisyB(t *testing.T) { t.Log(strings.Repeat("b", 20000)); t.Fatal("end of B") }
`,
	})
	e := NewExecutor()
	require.NoError(t, e.Configure(json.RawMessage(
		`{"max_test_output_bytes": 1024, "max_output_bytes": 1536}`)))
	res, report := execute(t, e, map[string]any{"dir": dir, "args": []string{"-count=1"}}, nil)

	require.Len(t, report.Tests, 2)
	kept := 0
	for _, tr := range report.Tests {
		kept += strings.Count(tr.Output, "a") + strings.Count(tr.Output, "b")
	}
	assert.LessOrEqual(t, kept, 1536)
	assert.Contains(t, report.Tests[0].Output, "end of A")
	assert.Contains(t, report.Tests[0].Output, "earlier bytes of output dropped")
	assert.Contains(t, report.Tests[1].Output, "limit on failure output is reached")
	assert.LessOrEqual(t, len(res.Output), 1536)
}

func TestExecuteCancelStopsTests(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "started")
	dir := writeModule(t, map[string]string{
		"m_test.go": "package m\n\nimport (\n\t\"os\"\n\t\"testing\"\n\t\"time\"\n)\n\n" +
			"func TestSlow(t *testing.T) {\n" +
			"\t_ = os.WriteFile(" + strconv.Quote(marker) + ", nil, 0o644)\n" +
			"\ttime.Sleep(100 * time.Second)\n}\n",
	})
	e := NewExecutor()
	require.NoError(t, e.Configure(json.RawMessage(`{"kill_grace": "200ms"}`)))
	raw, err := json.Marshal(map[string]any{"dir": dir, "args": []string{"-count=1"}})
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan sdk.Result, 1)
	go func() {
		res, err := e.Execute(ctx, sdk.Task{Type: TaskType, Payload: raw}, nil)
		assert.NoError(t, err)
		done <- res
	}()
	require.Eventually(t, func() bool {
		_, err := os.Stat(marker)
		return err == nil
	}, 60*time.Second, 20*time.Millisecond, "the test binary did not start")
	cancel()

	select {
	case res := <-done:
		assert.Equal(t, sdk.StatusCancelled, res.Status)
		var report Report
		require.NoError(t, json.Unmarshal(res.Data, &report))
		require.Len(t, report.Tests, 1)
		assert.Equal(t, "fail", report.Tests[0].Action)
		assert.Contains(t, report.Tests[0].Output, "no result")
	case <-time.After(10 * time.Second):
		t.Fatal("Execute did not return after cancel")
	}
}

func TestExecuteTimeoutStatus(t *testing.T) {
	dir := writeModule(t, map[string]string{"m_test.go": mixedTests})
	raw, err := json.Marshal(map[string]any{"dir": dir, "args": []string{"-count=1"}})
	require.NoError(t, err)

	// The limit ends the run while go still builds the test binary.
	res, err := NewExecutor().Execute(context.Background(),
		sdk.Task{Type: TaskType, Payload: raw, Timeout: time.Millisecond}, nil)
	require.NoError(t, err)
	assert.Equal(t, sdk.StatusTimedOut, res.Status)
	assert.Contains(t, res.Message, "timed out after 1ms")
}

func TestExecuteInvalidPayload(t *testing.T) {
	noModule := t.TempDir()
	cases := []struct {
		name    string
		payload string
		want    string
	}{
		{"missing dir", `{"packages": ["./..."]}`, "dir is missing"},
		{"no go.mod", `{"dir": "` + noModule + `"}`, `dir "` + noModule + `" contains no go.mod`},
		{"flag as package", `{"dir": "` + writeModule(t, map[string]string{}) + `", "packages": ["-v"]}`,
			`packages[0] is "-v"`},
		{"unknown field", `{"dir": "/", "pkgs": []}`, `unknown field "pkgs"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewExecutor().Execute(context.Background(),
				sdk.Task{Type: TaskType, Payload: json.RawMessage(tc.payload)}, nil)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestLineWriterSplitsAndBounds(t *testing.T) {
	var lines []string
	w := &lineWriter{max: 5, onLine: func(b []byte) { lines = append(lines, string(b)) }}
	for _, chunk := range []string{"ab", "c\nde", "fghijk\n", "\nxy"} {
		_, err := w.Write([]byte(chunk))
		require.NoError(t, err)
	}
	w.flush()
	assert.Equal(t, []string{"abc", "defgh", "", "xy"}, lines)
}
