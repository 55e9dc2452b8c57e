package config

import (
	"sort"

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

// newDiagnosticsError lists diags in file order, so that a reader meets
// them as in the file whatever order the decoder checked the settings in.
// Diagnostics without a location come last.
func newDiagnosticsError(path string, diags hcl.Diagnostics, files map[string]*hcl.File) *DiagnosticsError {
	sorted := append(hcl.Diagnostics(nil), diags...)
	sort.SliceStable(sorted, func(i, j int) bool {
		a, b := sorted[i].Subject, sorted[j].Subject
		if a == nil || b == nil {
			return a != nil
		}
		return a.Start.Byte < b.Start.Byte
	})
	return &DiagnosticsError{Diagnostics: sorted, text: formatDiagnostics(path, sorted, files)}
}

// formatDiagnostics renders diags in the format the worker config uses too.
func formatDiagnostics(path string, diags hcl.Diagnostics, files map[string]*hcl.File) string {
	return hclutil.FormatDiagnostics("invalid coordinator config "+path, path, diags, files)
}
