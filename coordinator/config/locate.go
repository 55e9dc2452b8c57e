package config

import (
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// validationDiagnostics turns the errors of Validate into diagnostics at
// the setting that each one names, so that Load reports them with the
// decoding problems in one pass and in file order. An error at a setting
// that already has a decoding diagnostic is left out, because that
// diagnostic reports the same value. A setting missing from the file is
// located at the start of the file, and a block setting such as
// workers.send_queue in its block.
func validationDiagnostics(err error, body hcl.Body, decoded hcl.Diagnostics) hcl.Diagnostics {
	syntaxBody, _ := body.(*hclsyntax.Body)
	reported := make(map[int]bool)
	for _, diag := range decoded {
		if diag.Subject != nil {
			reported[diag.Subject.Start.Byte] = true
		}
	}
	var diags hcl.Diagnostics
	for _, single := range splitErrors(err) {
		message := single.Error()
		name := settingName(message)
		subject := locateSetting(syntaxBody, name)
		if reported[subject.Start.Byte] && subject.Start.Byte != 0 {
			continue
		}
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Invalid " + name,
			Detail:   sentence(message),
			Subject:  &subject,
		})
	}
	return diags
}

// splitErrors returns the single errors that errors.Join combined in err.
func splitErrors(err error) []error {
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{err}
	}
	var out []error
	for _, e := range joined.Unwrap() {
		out = append(out, splitErrors(e)...)
	}
	return out
}

// settingName returns the setting that a Validate message starts with,
// such as "listen", "workers.send_queue" or "tls", without a list index
// or a trailing colon.
func settingName(message string) string {
	name, _, _ := strings.Cut(message, " ")
	name = strings.TrimSuffix(name, ":")
	if i := strings.IndexByte(name, '['); i > 0 {
		name = name[:i]
	}
	return name
}

// locateSetting returns the range of the value of setting name in body:
// an attribute's value, or a block's header when name is a block. It
// returns the start of the file when the setting is not in the file.
func locateSetting(body *hclsyntax.Body, name string) hcl.Range {
	if body == nil {
		return hcl.Range{}
	}
	start := hcl.Range{
		Filename: body.SrcRange.Filename,
		Start:    hcl.InitialPos,
		End:      hcl.InitialPos,
	}
	blockType, attrName, nested := strings.Cut(name, ".")
	if !nested {
		if attr, ok := body.Attributes[name]; ok {
			return attr.Expr.Range()
		}
	}
	for _, block := range body.Blocks {
		if block.Type != blockType {
			continue
		}
		if attr, ok := block.Body.Attributes[attrName]; ok && nested {
			return attr.Expr.Range()
		}
		return block.DefRange()
	}
	return start
}

// sentence returns message with a final period, as the details of hcl's
// own diagnostics end. The message keeps its case, because it starts with
// the setting's name.
func sentence(message string) string {
	if message != "" && !strings.HasSuffix(message, ".") {
		message += "."
	}
	return message
}
