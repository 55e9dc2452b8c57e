package host

import (
	"errors"
	"fmt"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dtf-io/dtf/host/config"
	dtfplugin "github.com/dtf-io/dtf/plugin"
	"github.com/dtf-io/dtf/plugin/pb"
)

// configureError is a plugin's rejection of its config: the problems that
// it reported in its ConfigureResponse or, from a plugin built before
// that field, the INVALID_ARGUMENT error that it returned.
type configureError struct {
	plugin   config.Plugin
	problems []*pb.ConfigProblem
	// err is the gRPC error of a plugin that reported no problems.
	err error
}

func (e *configureError) Error() string {
	if len(e.problems) == 0 {
		return fmt.Sprintf("invalid config for %s plugin %s: %s; fix its config block",
			e.plugin.Kind, e.plugin.Name, status.Convert(e.err).Message())
	}
	parts := make([]string, 0, len(e.problems))
	for _, problem := range e.problems {
		text := problem.GetSummary() + ": " + problem.GetDetail()
		if problem.GetPath() != "" {
			text = problem.GetPath() + ": " + text
		}
		parts = append(parts, text)
	}
	return fmt.Sprintf("invalid config for %s plugin %s: %s; fix its config block",
		e.plugin.Kind, e.plugin.Name, strings.Join(parts, "; "))
}

// configureResult returns a *configureError when a Configure call of
// plugin p rejected its config, the call's error wrapped when it failed
// for another reason, and nil when the plugin took the config.
func configureResult(p config.Plugin, problems []*pb.ConfigProblem, err error) error {
	switch {
	case err == nil && len(problems) == 0:
		return nil
	case err == nil:
		return &configureError{plugin: p, problems: problems}
	case status.Code(err) == codes.InvalidArgument:
		return &configureError{plugin: p, err: err}
	default:
		return fmt.Errorf("configure %s plugin %s: %w", p.Kind, p.Name, err)
	}
}

// pluginDiagnostics turns the failure to launch or configure plugin p into
// diagnostics located in the worker config: a rejected config at the
// settings that the plugin named, a binary that is not a plugin at path,
// a checksum mismatch at sha256 and a start timeout at start_timeout. It
// returns nil for any other error, such as a cancelled start.
func pluginDiagnostics(p config.Plugin, err error) hcl.Diagnostics {
	var rejected *configureError
	if errors.As(err, &rejected) {
		if len(rejected.problems) > 0 {
			return p.ConfigDiagnostics(rejected.problems)
		}
		return hcl.Diagnostics{p.Diagnostic(config.FieldConfig, "Invalid plugin config", rejected.Error()+".")}
	}
	detail := err.Error() + "."
	switch {
	case errors.Is(err, dtfplugin.ErrChecksumMismatch):
		return hcl.Diagnostics{p.Diagnostic(config.FieldSHA256, "Plugin checksum mismatch", detail)}
	case errors.Is(err, dtfplugin.ErrStartTimeout):
		return hcl.Diagnostics{p.Diagnostic(config.FieldStartTimeout, "Plugin start timed out", detail)}
	case errors.Is(err, dtfplugin.ErrNotPlugin),
		errors.Is(err, dtfplugin.ErrPluginNotFound),
		errors.Is(err, dtfplugin.ErrPluginNotExecutable):
		return hcl.Diagnostics{p.Diagnostic(config.FieldPath, "Invalid plugin path", detail)}
	}
	return nil
}

// locate returns the failure to start plugin p as a *config.DiagnosticsError
// in the format of config.Load, so the worker reports it with its file
// position, as `dtf validate` does. Other errors return unchanged.
func (h *Host) locate(p config.Plugin, err error) error {
	if err == nil || h.cfg.File == "" {
		return err
	}
	diags := pluginDiagnostics(p, err)
	if diags == nil {
		return err
	}
	rendered, ok := p.Diagnostics(diags)
	if !ok {
		rendered = h.cfg.Diagnostics(diags)
	}
	return &locatedError{DiagnosticsError: rendered, cause: err}
}

// locatedError shows a plugin's start failure as diagnostics and keeps the
// cause for errors.Is, such as dtfplugin.ErrNotPlugin.
type locatedError struct {
	*config.DiagnosticsError
	cause error
}

func (e *locatedError) Unwrap() []error { return []error{e.DiagnosticsError, e.cause} }

// fatalConfigError is a connector's rejection of its config. It stops the
// worker as ErrConnectorFatal does, and its message is only the rejection,
// because the connector never opened a session.
type fatalConfigError struct{ err error }

func (e fatalConfigError) Error() string   { return e.err.Error() }
func (e fatalConfigError) Unwrap() []error { return []error{ErrConnectorFatal, e.err} }

// routeDiagnostic locates the error of route, such as two executors that
// declare one task type, at the block of the plugin that route rejected.
func routeDiagnostic(p config.Plugin, err error) *hcl.Diagnostic {
	return p.Diagnostic(config.FieldBlock, "Invalid executor plugin", err.Error()+".")
}

// locateRoute returns the error of route as a located one, as locate
// does for other start failures.
func (h *Host) locateRoute(p config.Plugin, err error) error {
	if h.cfg.File == "" {
		return err
	}
	return &locatedError{DiagnosticsError: h.cfg.Diagnostics(hcl.Diagnostics{routeDiagnostic(p, err)}), cause: err}
}
