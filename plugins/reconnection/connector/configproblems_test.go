package connector

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dtf-io/dtf/plugin/pb"
)

func TestParseConfigListsEveryProblem(t *testing.T) {
	in := connectorConfig("ws://127.0.0.1:7070",
		`{"heartbeat_interval": "2", "heartbeat": "2s", "fatal_after": 0, "compression": "yes"}`)
	in.CaFile = "/nonexistent/ca.pem"
	_, err := ParseConfig(in)
	var configErr *ConfigError
	require.True(t, errors.As(err, &configErr), "got %v", err)

	byPath := map[string]*pb.ConfigProblem{}
	for _, problem := range configErr.Problems {
		byPath[problem.GetPath()] = problem
	}
	require.Len(t, byPath, 5, "problems: %v", configErr.Problems)
	assert.Equal(t, "Unsupported argument", byPath["heartbeat"].GetSummary())
	assert.Contains(t, byPath["heartbeat"].GetDetail(), "valid fields")
	assert.Equal(t, "Invalid heartbeat_interval", byPath["heartbeat_interval"].GetSummary())
	assert.Contains(t, byPath["heartbeat_interval"].GetDetail(), `"2s"`)
	assert.Contains(t, byPath["fatal_after"].GetDetail(), "0 is too small")
	assert.Contains(t, byPath["compression"].GetDetail(), "use true or false")
	assert.Contains(t, byPath["coordinator.ca_file"].GetDetail(), "ca.pem")
}

func TestParseConfigRelationProblemNamesField(t *testing.T) {
	_, err := ParseConfig(connectorConfig("ws://127.0.0.1:7070",
		`{"backoff_base": "2s", "backoff_cap": "1s"}`))
	var configErr *ConfigError
	require.True(t, errors.As(err, &configErr), "got %v", err)
	require.Len(t, configErr.Problems, 1)
	assert.Equal(t, "backoff_cap", configErr.Problems[0].GetPath())
	assert.Contains(t, configErr.Problems[0].GetDetail(), "less than backoff_base")
}

func TestConfigureReturnsProblems(t *testing.T) {
	c := New(Options{Logger: testLogger(), Version: "test"})
	resp, err := c.Configure(context.Background(), connectorConfig("ws://127.0.0.1:7070",
		`{"heartbeat_timeout": "soon"}`))
	require.NoError(t, err)
	require.Len(t, resp.GetProblems(), 1)
	assert.Equal(t, "heartbeat_timeout", resp.GetProblems()[0].GetPath())

	// A config with problems is not stored.
	err = c.Events(&pb.Empty{}, &eventStream{ctx: context.Background()})
	assert.Equal(t, codes.FailedPrecondition, status.Code(err), "got %v", err)
}

func TestConfigureValidateOnlyStoresNothing(t *testing.T) {
	c := New(Options{Logger: testLogger(), Version: "test"})
	in := connectorConfig("ws://127.0.0.1:7070", `{"heartbeat_interval": "1s", "heartbeat_timeout": "3s"}`)
	in.ValidateOnly = true
	resp, err := c.Configure(context.Background(), in)
	require.NoError(t, err)
	assert.Empty(t, resp.GetProblems())

	err = c.Events(&pb.Empty{}, &eventStream{ctx: context.Background()})
	assert.Equal(t, codes.FailedPrecondition, status.Code(err), "got %v", err)
}
