package config

import (
	"github.com/hashicorp/hcl/v2"

	"github.com/dtf-io/dtf/internal/hclutil"
)

// DiagnosticsError is the error of Load for a file that does not parse or
// decode. Its message lists each problem as "file:line:col: summary",
// followed by the source line and the detail.
type DiagnosticsError struct {
	// Diagnostics are the problems hcl and the decoder found.
	Diagnostics hcl.Diagnostics
	text        string
}

func (e *DiagnosticsError) Error() string { return e.text }

func newDiagnosticsError(path string, diags hcl.Diagnostics, files map[string]*hcl.File) *DiagnosticsError {
	return &DiagnosticsError{Diagnostics: diags, text: formatDiagnostics(path, diags, files)}
}

// formatDiagnostics renders diags in the format the worker config uses too.
func formatDiagnostics(path string, diags hcl.Diagnostics, files map[string]*hcl.File) string {
	return hclutil.FormatDiagnostics("invalid coordinator config "+path, path, diags, files)
}
