package sdk_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dtf-io/dtf/plugin/pb"
	"github.com/dtf-io/dtf/sdk"
	"github.com/dtf-io/dtf/sdk/sdktest"
)

type limits struct {
	Timeout string `json:"timeout"`
	Retries int    `json:"retries"`
	Hidden  string `json:"-"`
}

func TestDecodeConfigProblems(t *testing.T) {
	cfg := limits{Timeout: "1m"}
	problems := sdk.DecodeConfig(json.RawMessage(`{"retries": "3", "colour": "red", "Hidden": "x"}`), &cfg)
	require.Len(t, problems, 3, "problems: %v", problems)
	assert.Equal(t, "Hidden", problems[0].Path)
	assert.Equal(t, "Unsupported argument", problems[0].Summary)
	assert.Equal(t, "colour", problems[1].Path)
	assert.Contains(t, problems[1].Detail, "valid settings: retries, timeout")
	assert.Equal(t, "retries", problems[2].Path)
	assert.Equal(t, `"3" is not a valid int`, problems[2].Detail)
	assert.Equal(t, "1m", cfg.Timeout, "a missing key keeps its default")
}

func TestDecodeConfigEmpty(t *testing.T) {
	for _, raw := range []string{"", "null", " {} "} {
		var cfg limits
		assert.Empty(t, sdk.DecodeConfig(json.RawMessage(raw), &cfg), "config %q", raw)
	}
	problems := sdk.DecodeConfig(json.RawMessage(`[1]`), &limits{})
	require.Len(t, problems, 1)
	assert.Empty(t, problems[0].Path)
}

// configExecutor rejects any config with two problems.
type configExecutor struct {
	validated, configured bool
}

func (e *configExecutor) Info() sdk.Info {
	return sdk.Info{Name: "config", Version: "1", TaskTypes: []string{"config"}}
}

func (e *configExecutor) Configure(json.RawMessage) error {
	e.configured = true
	return &sdk.ConfigError{Problems: []sdk.ConfigProblem{
		{Path: "a", Summary: "Invalid a", Detail: "a is wrong"},
		{Path: "b[1]", Summary: "Invalid b", Detail: "b is wrong"},
	}}
}

func (e *configExecutor) ValidateConfig(json.RawMessage) error {
	e.validated = true
	return nil
}

func (e *configExecutor) Execute(context.Context, sdk.Task, sdk.Reporter) (sdk.Result, error) {
	return sdk.Result{Status: sdk.StatusSucceeded}, nil
}

func TestConfigErrorCrossesGRPC(t *testing.T) {
	executor := &configExecutor{}
	h := sdktest.New(t, executor)
	err := h.Configure(context.Background(), json.RawMessage(`{}`))
	var configErr *sdk.ConfigError
	require.True(t, errors.As(err, &configErr), "got %v", err)
	assert.Equal(t, []sdk.ConfigProblem{
		{Path: "a", Summary: "Invalid a", Detail: "a is wrong"},
		{Path: "b[1]", Summary: "Invalid b", Detail: "b is wrong"},
	}, configErr.Problems)
	assert.Equal(t, "invalid plugin config: a: a is wrong; b[1]: b is wrong", err.Error())
	assert.True(t, executor.configured)
	assert.False(t, executor.validated, "a plain Configure does not validate only")
}

func TestValidateOnlyCallsValidateConfig(t *testing.T) {
	executor := &configExecutor{}
	server := sdk.NewExecutorServer(executor)
	resp, err := server.Configure(context.Background(), &pb.ConfigureRequest{ValidateOnly: true})
	require.NoError(t, err)
	assert.Empty(t, resp.GetProblems())
	assert.True(t, executor.validated)
	assert.False(t, executor.configured, "a check does not apply the config")
}

func TestDecodeConfigUntaggedField(t *testing.T) {
	cfg := struct{ Greeting string }{Greeting: "Hello"}
	assert.Empty(t, sdk.DecodeConfig(json.RawMessage(`{"greeting": "Hi"}`), &cfg))
	assert.Equal(t, "Hi", cfg.Greeting)

	problems := sdk.DecodeConfig(json.RawMessage(`{"greting": "Hi"}`), &cfg)
	require.Len(t, problems, 1)
	assert.Equal(t, "greting", problems[0].Path)
	assert.Contains(t, problems[0].Detail, "valid settings: greeting")
}

// decodingExecutor returns DecodeConfig's problems as a ConfigError even
// when there are none.
type decodingExecutor struct{ configExecutor }

func (e *decodingExecutor) Configure(raw json.RawMessage) error {
	var cfg struct{ Greeting string }
	return &sdk.ConfigError{Problems: sdk.DecodeConfig(raw, &cfg)}
}

func TestEmptyConfigErrorAccepts(t *testing.T) {
	h := sdktest.New(t, &decodingExecutor{})
	assert.NoError(t, h.Configure(context.Background(), json.RawMessage(`{}`)))
	assert.NoError(t, h.Configure(context.Background(), json.RawMessage(`{"greeting":"Hi"}`)))

	err := h.Configure(context.Background(), json.RawMessage(`{"greting":"Hi"}`))
	var configErr *sdk.ConfigError
	require.ErrorAs(t, err, &configErr)
	assert.Equal(t, "greting", configErr.Problems[0].Path)
}
