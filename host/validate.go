package host

import (
	"context"
	"fmt"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"

	"github.com/dtf-io/dtf/host/config"
	"github.com/dtf-io/dtf/plugin/pb"
)

// ValidatePlugins launches each plugin of cfg once, in file order, asks it
// to check its config block without applying it (validate_only), and
// stops it. It also checks that no two executors declare one task type.
// It returns the number of plugins checked and, when any check failed, a
// *config.DiagnosticsError with the problems at their lines, in the
// format that the worker uses at start. It starts no task and opens no
// connection to the coordinator.
//
// NOTE: a plugin built before validate_only applies its config as usual,
// so a metrics plugin of that kind binds its listener for a moment.
func ValidatePlugins(ctx context.Context, cfg *config.Config, logger hclog.Logger) (int, error) {
	h, err := New(cfg, logger)
	if err != nil {
		return 0, err
	}
	var diags hcl.Diagnostics
	checked := 0
	for _, p := range h.cfg.Plugins {
		if ctx.Err() != nil {
			return checked, ctx.Err()
		}
		more, err := h.validatePlugin(ctx, p)
		if err != nil {
			return checked, err
		}
		diags = append(diags, more...)
		checked++
	}
	if diags.HasErrors() {
		return checked, h.cfg.Diagnostics(diags)
	}
	return checked, nil
}

// validatePlugin checks one plugin and returns its problems. The error is
// set only for a failure that has nothing to do with the config, such as
// a cancelled context.
func (h *Host) validatePlugin(ctx context.Context, p config.Plugin) (hcl.Diagnostics, error) {
	proc, err := h.launch(ctx, h.launchConfig(p))
	if err != nil {
		return startDiagnostics(ctx, p, err)
	}
	defer proc.Kill()

	var problems []*pb.ConfigProblem
	request := &pb.ConfigureRequest{ConfigJson: p.ConfigJSON, ValidateOnly: true}
	switch {
	case proc.Executor() != nil:
		ex := &executorPlugin{cfg: p, host: h}
		if err := h.route(ex, proc.Info()); err != nil {
			return hcl.Diagnostics{routeDiagnostic(p, err)}, nil
		}
		var resp *pb.ConfigureResponse
		resp, err = proc.Executor().Configure(ctx, request)
		problems = resp.GetProblems()
	case proc.Connector() != nil:
		var resp *pb.ConfigureResponse
		resp, err = proc.Connector().Configure(ctx, &pb.ConnectorConfig{
			Url:          h.cfg.Coordinator.URL,
			WorkerId:     h.cfg.Coordinator.WorkerID,
			Token:        h.cfg.Coordinator.Token,
			Secret:       h.cfg.Coordinator.Secret,
			SecretFile:   h.cfg.Coordinator.SecretFile,
			CaFile:       h.cfg.Coordinator.CAFile,
			Slots:        uint32(h.cfg.Slots),
			Labels:       h.cfg.Labels,
			HostVersion:  Version,
			ConfigJson:   p.ConfigJSON,
			ValidateOnly: true,
		})
		problems = resp.GetProblems()
	case proc.Metrics() != nil:
		var resp *pb.MetricsConfigureResponse
		resp, err = proc.Metrics().Configure(ctx, request)
		problems = resp.GetProblems()
	default:
		return nil, fmt.Errorf("plugin %s serves no known service", p.Name)
	}
	if err := configureResult(p, problems, err); err != nil {
		return startDiagnostics(ctx, p, err)
	}
	return nil, nil
}

// startDiagnostics returns the diagnostics of a plugin that failed to
// start or rejected its config, or the error itself when it is not about
// the config, such as a cancelled context.
func startDiagnostics(ctx context.Context, p config.Plugin, err error) (hcl.Diagnostics, error) {
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if diags := pluginDiagnostics(p, err); diags != nil {
		return diags, nil
	}
	return hcl.Diagnostics{p.Diagnostic(config.FieldBlock, "Plugin failed to start", err.Error()+".")}, nil
}
