package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseTaskFileHCL(t *testing.T) {
	t.Setenv("DTF_TEST_MODULE", "/src/app")
	src := `batch = "nightly"

task "unit" {
  type         = "gotest"
  payload      = { dir = env("DTF_TEST_MODULE"), packages = ["./..."], args = ["-count=1"] }
  timeout      = "5m"
  max_attempts = 3
}

task "lint" {
  type    = "command"
  payload = {
    argv = ["make", "lint"]
    env  = { CI = "1" }
    max_output_bytes = 65536
  }
}
`
	req, err := ParseTaskFile("tasks.hcl", []byte(src))
	require.NoError(t, err)
	assert.Equal(t, "nightly", req.Batch)
	require.Len(t, req.Tasks, 2)

	unit := req.Tasks[0]
	assert.Equal(t, "unit", unit.Name)
	assert.Equal(t, "gotest", unit.Type)
	assert.Equal(t, "5m", unit.Timeout)
	assert.Equal(t, 3, unit.MaxAttempts)
	assert.JSONEq(t, `{"dir":"/src/app","packages":["./..."],"args":["-count=1"]}`, string(unit.Payload))

	lint := req.Tasks[1]
	assert.Equal(t, "lint", lint.Name)
	assert.Empty(t, lint.Timeout)
	assert.Zero(t, lint.MaxAttempts)
	assert.JSONEq(t, `{"argv":["make","lint"],"env":{"CI":"1"},"max_output_bytes":65536}`,
		string(lint.Payload))
}

func TestParseTaskFileJSON(t *testing.T) {
	src := `{
  "batch": "b1",
  "tasks": [
    {"name": "hi", "type": "command", "payload": {"argv": ["echo", "hi"]}, "timeout": "30s"}
  ]
}`
	for _, name := range []string{"tasks.json", "tasks.txt"} {
		t.Run(name, func(t *testing.T) {
			req, err := ParseTaskFile(name, []byte(src))
			require.NoError(t, err)
			assert.Equal(t, "b1", req.Batch)
			require.Len(t, req.Tasks, 1)
			assert.Equal(t, "command", req.Tasks[0].Type)
			assert.Equal(t, "30s", req.Tasks[0].Timeout)
			assert.JSONEq(t, `{"argv":["echo","hi"]}`, string(req.Tasks[0].Payload))
		})
	}
}

func TestParseTaskFileHCLErrors(t *testing.T) {
	cases := []struct {
		name string
		src  string
		want []string
	}{
		{
			name: "missing type",
			src:  "task \"a\" {\n  payload = { argv = [\"true\"] }\n}\n",
			want: []string{"tasks.hcl:1:10: Missing required argument", `The argument "type" is required`},
		},
		{
			name: "unknown field",
			src:  "task \"a\" {\n  type = \"command\"\n  payload = {}\n  image = \"alpine\"\n}\n",
			want: []string{"tasks.hcl:4:3: Unsupported argument", `image = "alpine"`},
		},
		{
			name: "unknown block",
			src:  "job \"a\" {\n}\n",
			want: []string{"tasks.hcl:1:1: Unsupported block type"},
		},
		{
			name: "timeout without unit",
			src:  "task \"a\" {\n  type = \"command\"\n  payload = {}\n  timeout = \"5\"\n}\n",
			want: []string{"tasks.hcl:4:13: Invalid timeout", `missing unit in duration`, `timeout = "5"`},
		},
		{
			name: "payload not an object",
			src:  "task \"a\" {\n  type = \"command\"\n  payload = [\"true\"]\n}\n",
			want: []string{"tasks.hcl:3:13: Invalid payload", "payload must be an object"},
		},
		{
			name: "max attempts fraction",
			src:  "task \"a\" {\n  type = \"command\"\n  payload = {}\n  max_attempts = 1.5\n}\n",
			want: []string{"tasks.hcl:4:18: Invalid max_attempts"},
		},
		{
			name: "duplicate name",
			src: "task \"a\" {\n  type = \"command\"\n  payload = {}\n}\n" +
				"task \"a\" {\n  type = \"command\"\n  payload = {}\n}\n",
			want: []string{"tasks.hcl:5:6: Duplicate task name", "already defined at tasks.hcl:1:1"},
		},
		{
			name: "no tasks",
			src:  "batch = \"b\"\n",
			want: []string{"No tasks"},
		},
		{
			name: "syntax error",
			src:  "task \"a\" {\n  type = \n}\n",
			want: []string{"tasks.hcl:2:10: Invalid expression", "   2:   type = "},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseTaskFile("tasks.hcl", []byte(tc.src))
			require.Error(t, err)
			var fileErr *TaskFileError
			require.ErrorAs(t, err, &fileErr)
			for _, want := range tc.want {
				assert.Contains(t, err.Error(), want)
			}
		})
	}
}

func TestParseTaskFileJSONErrors(t *testing.T) {
	cases := []struct {
		name string
		src  string
		want string
	}{
		{"missing type", `{"tasks": [{"payload": {}}]}`, "tasks.json: tasks[0].type: missing"},
		{"missing payload", `{"tasks": [{"type": "command"}]}`, "tasks[0].payload: missing"},
		{"payload not object", `{"tasks": [{"type": "command", "payload": [1]}]}`,
			"tasks[0].payload: must be a JSON object, got [1]"},
		{"unknown field", `{"tasks": [{"type": "command", "payload": {}, "image": "x"}]}`,
			`unknown field "image"`},
		{"no tasks", `{"batch": "b"}`, "tasks is missing or empty"},
		{"syntax error", "{\n  \"tasks\": [\n    {\"type\": \"command\",}\n  ]\n}", "tasks.json:3:24: invalid character"},
		{"wrong type", "{\n  \"tasks\": [{\"type\": 7}]\n}", "tasks.json:2:22: cannot unmarshal number"},
		{"bad timeout", `{"tasks": [{"type": "command", "payload": {}, "timeout": "10"}]}`,
			`tasks[0].timeout: timeout "10" is not a duration`},
		{"trailing data", `{"tasks": [{"type": "command", "payload": {}}]} {}`, "extra data"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseTaskFile("tasks.json", []byte(tc.src))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestReadTaskFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tasks.hcl")
	require.NoError(t, os.WriteFile(path,
		[]byte("task \"a\" {\n  type = \"command\"\n  payload = { argv = [\"true\"] }\n}\n"), 0o644))
	req, err := ReadTaskFile(path, nil)
	require.NoError(t, err)
	require.Len(t, req.Tasks, 1)

	req, err = ReadTaskFile("-", strings.NewReader(`{"tasks":[{"type":"command","payload":{"argv":["x"]}}]}`))
	require.NoError(t, err)
	require.Len(t, req.Tasks, 1)

	_, err = ReadTaskFile(filepath.Join(t.TempDir(), "missing.hcl"), nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "missing.hcl")
}
