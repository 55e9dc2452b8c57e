// Package hclutil holds what every dtf HCL file shares: the env()
// function and the format of diagnostics.
package hclutil

import (
	"bytes"
	"fmt"
	"os"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
)

// EvalContext returns a context with env("NAME"), which returns the
// variable's value, or "" when it is not set.
func EvalContext() *hcl.EvalContext {
	env := function.New(&function.Spec{
		Params: []function.Parameter{{Name: "name", Type: cty.String}},
		Type:   function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			return cty.StringVal(os.Getenv(args[0].AsString())), nil
		},
	})
	return &hcl.EvalContext{Functions: map[string]function.Function{"env": env}}
}

// FormatDiagnostics writes the heading, then a "file:line:col: summary"
// line per diagnostic, which editors and grep understand, followed by hcl's
// rendering with the source line and the detail. A diagnostic without a
// location is attributed to path.
func FormatDiagnostics(heading, path string, diags hcl.Diagnostics, files map[string]*hcl.File) string {
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "%s:\n", heading)
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
