package config

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/hashicorp/hcl/v2"
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

// formatDiagnostics writes a "file:line:col: summary" line per diagnostic,
// which editors and grep understand, followed by hcl's rendering with the
// source line and the detail. It matches the worker config's messages.
func formatDiagnostics(path string, diags hcl.Diagnostics, files map[string]*hcl.File) string {
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "invalid coordinator config %s:\n", path)
	// Width 0 turns off wrapping, so a path in a detail stays on one line.
	writer := hcl.NewDiagnosticTextWriter(&buf, files, 0, false)
	for _, diag := range diags {
		if diag.Subject != nil {
			fmt.Fprintf(&buf, "%s:%d:%d: %s\n", diag.Subject.Filename,
				diag.Subject.Start.Line, diag.Subject.Start.Column, diag.Summary)
		} else {
			fmt.Fprintf(&buf, "%s: %s\n", path, diag.Summary)
		}
		_ = writer.WriteDiagnostic(diag)
	}
	return strings.TrimRight(buf.String(), "\n")
}
