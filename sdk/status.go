package sdk

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dtf-io/dtf/plugin/pb"
)

// ErrUnavailable marks an error of a metrics plugin's or a connector's
// method as a condition that may pass by itself, such as a listen port
// that the plugin's previous process still holds, or a Send while no
// session is open. Wrap it with fmt.Errorf("...: %w", sdk.ErrUnavailable).
// The plugin returns it to the host as the gRPC code UNAVAILABLE: a
// Configure error with it fails the launch, which the host retries with
// backoff, instead of rejecting the config.
var ErrUnavailable = errors.New("unavailable")

// configProblemsToProto returns the problems of a *ConfigError in err, or
// nil when err is nil or has no problems.
func configProblemsToProto(err error) []*pb.ConfigProblem {
	var configErr *ConfigError
	if !errors.As(err, &configErr) || len(configErr.Problems) == 0 {
		return nil
	}
	problems := make([]*pb.ConfigProblem, 0, len(configErr.Problems))
	for _, p := range configErr.Problems {
		problems = append(problems, &pb.ConfigProblem{Path: p.Path, Summary: p.Summary, Detail: p.Detail})
	}
	return problems
}

// toStatus converts an error of a plugin's method to the gRPC status that
// the host reads. An error that already carries a status keeps it, a
// context error becomes CANCELED or DEADLINE_EXCEEDED, one that wraps
// ErrUnavailable becomes UNAVAILABLE, and any other gets code.
func toStatus(err error, code codes.Code) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
		return status.Error(status.FromContextError(err).Code(), err.Error())
	case errors.Is(err, ErrUnavailable):
		return status.Error(codes.Unavailable, err.Error())
	}
	return status.Error(code, err.Error())
}
