package config

import (
	"fmt"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"

	"github.com/dtf-io/dtf/plugin/pb"
)

// Parts of a plugin block that a diagnostic about a launched plugin can
// point at, for Plugin.Diagnostic.
const (
	FieldBlock        = ""
	FieldPath         = "path"
	FieldSHA256       = "sha256"
	FieldStartTimeout = "start_timeout"
	FieldConfig       = "config"
)

// pluginLocation keeps where the parts of a plugin block are in the file,
// so that a problem found after Load, when the host launches or configures
// the plugin, is reported at its line. A Plugin built without Load has
// none, and its diagnostics have no location.
type pluginLocation struct {
	// file and files are the config file the block came from and its
	// parsed source, for the source lines of diagnostics: a block read
	// again on a reload carries the new file's lines.
	file         string
	files        map[string]*hcl.File
	block        hcl.Range
	path         hcl.Range
	sha256       hcl.Range
	startTimeout hcl.Range
	config       hcl.Range
	// conventional is set when path was left out and the binary's path
	// came from plugin_dir.
	conventional bool
	// configValues maps each setting path in the config block, in the
	// syntax of pb.ConfigProblem.path, to the range of its value.
	configValues map[string]hcl.Range
	// coordinatorValues maps "coordinator.NAME" to the range of that
	// attribute of the coordinator block, for the connector, which gets
	// those settings from the host and may report problems with them.
	coordinatorValues map[string]hcl.Range
}

// Diagnostic returns an error diagnostic about the plugin, located at the
// part of its block that field names (one of the Field constants). A part
// that the block does not contain falls back to the block's header.
func (p Plugin) Diagnostic(field, summary, detail string) *hcl.Diagnostic {
	loc := p.location
	rng := loc.block
	switch field {
	case FieldPath:
		if !loc.conventional {
			rng = loc.path
		}
	case FieldSHA256:
		rng = loc.sha256
	case FieldStartTimeout:
		rng = loc.startTimeout
	case FieldConfig:
		rng = loc.config
	}
	if rng.Filename == "" {
		rng = loc.block
	}
	return located(rng, summary, detail)
}

// ConfigDiagnostics turns the problems that the plugin reported about its
// config block into diagnostics. Each points at the value of the longest
// prefix of its path found in the block, or at the block itself.
func (p Plugin) ConfigDiagnostics(problems []*pb.ConfigProblem) hcl.Diagnostics {
	diags := make(hcl.Diagnostics, 0, len(problems))
	for _, problem := range problems {
		summary := problem.GetSummary()
		if summary == "" {
			summary = "Invalid plugin config"
		}
		detail := problem.GetDetail()
		rng, found := p.location.configValue(problem.GetPath())
		if !found && problem.GetPath() != "" {
			detail = fmt.Sprintf("%s: %s", problem.GetPath(), detail)
		}
		if rng.Filename == "" {
			// The block has no config block, or the Plugin was built
			// without Load.
			diag := p.Diagnostic(FieldConfig, summary, detail)
			diag.Detail = fmt.Sprintf("In the config of plugin %q: %s", p.Name, diag.Detail)
			diags = append(diags, diag)
			continue
		}
		diags = append(diags, located(rng, summary, detail))
	}
	return diags
}

// configValue returns the range of path's value, or of its longest
// prefix that has one, and whether path itself was found. Without any
// match it returns the config block's range.
func (loc pluginLocation) configValue(path string) (hcl.Range, bool) {
	if rng, ok := loc.coordinatorValues[path]; ok {
		return rng, true
	}
	for prefix := path; prefix != ""; prefix = parentPath(prefix) {
		if rng, ok := loc.configValues[prefix]; ok {
			return rng, prefix == path
		}
	}
	return loc.config, path == ""
}

// parentPath removes the last ".key" or "[index]" from path.
func parentPath(path string) string {
	cut := strings.LastIndexAny(path, ".[")
	if cut < 0 {
		return ""
	}
	return path[:cut]
}

// locateValues records in out the range of expr's value under path and,
// for object and tuple constructors, of each of their elements, so that
// a problem about a nested value points at it.
func locateValues(path string, expr hcl.Expression, ctx *hcl.EvalContext, out map[string]hcl.Range) {
	out[path] = expr.Range()
	switch e := expr.(type) {
	case *hclsyntax.ObjectConsExpr:
		for _, item := range e.Items {
			key, diags := item.KeyExpr.Value(ctx)
			if diags.HasErrors() || !key.IsKnown() || key.IsNull() || key.Type() != cty.String {
				continue
			}
			locateValues(path+"."+key.AsString(), item.ValueExpr, ctx, out)
		}
	case *hclsyntax.TupleConsExpr:
		for i, element := range e.Exprs {
			locateValues(fmt.Sprintf("%s[%d]", path, i), element, ctx, out)
		}
	}
}

// coordinatorValues returns the ranges of the coordinator block's
// attributes that the file sets.
func coordinatorValues(block coordinatorBlock) map[string]hcl.Range {
	out := make(map[string]hcl.Range)
	for name, rng := range map[string]hcl.Range{
		"coordinator.url":         block.URLRange,
		"coordinator.worker_id":   block.WorkerIDRange,
		"coordinator.secret":      block.SecretRange,
		"coordinator.secret_file": block.SecretFileRng,
		"coordinator.ca_file":     block.CAFileRange,
	} {
		if rng.Filename != "" {
			out[name] = rng
		}
	}
	return out
}

// Diagnostics wraps diags in the error that Load returns for a file with
// problems, with the source lines of c's file. The host uses it for
// problems that it finds when it launches and configures the plugins.
func (c *Config) Diagnostics(diags hcl.Diagnostics) *DiagnosticsError {
	return &DiagnosticsError{Diagnostics: diags, text: formatDiagnostics(c.File, diags, c.files)}
}

// Diagnostics renders diags with the source lines of the file that p was
// read from, or reports false for a block that Load did not make.
func (p Plugin) Diagnostics(diags hcl.Diagnostics) (*DiagnosticsError, bool) {
	if p.location.files == nil {
		return nil, false
	}
	return &DiagnosticsError{Diagnostics: diags, text: formatDiagnostics(p.location.file, diags,
		p.location.files)}, true
}

func located(rng hcl.Range, summary, detail string) *hcl.Diagnostic {
	diag := &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: detail}
	if rng.Filename != "" {
		diag.Subject = rng.Ptr()
	}
	return diag
}
