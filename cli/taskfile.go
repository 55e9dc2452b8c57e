package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/gocty"
	ctyjson "github.com/zclconf/go-cty/cty/json"

	"github.com/dtf-io/dtf/coordinator/api"
	"github.com/dtf-io/dtf/internal/hclutil"
)

// maxTaskFileBytes is the largest max_body_bytes a coordinator accepts
// (64 MiB); a larger task file could not be submitted to any coordinator.
// A coordinator with a smaller limit responds with HTTP 413.
const maxTaskFileBytes = 64 << 20

// TaskFileError is an invalid task file. Its message lists each problem with
// file:line:col and, for HCL files, the source line.
type TaskFileError struct {
	File string
	text string
}

func (e *TaskFileError) Error() string { return e.text }

// ReadTaskFile reads and parses a task file; "-" reads standard input.
func ReadTaskFile(path string, stdin io.Reader) (api.SubmitRequest, error) {
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(io.LimitReader(stdin, maxTaskFileBytes+1))
		path = "<stdin>"
	} else {
		var f *os.File
		if f, err = os.Open(path); err == nil {
			data, err = io.ReadAll(io.LimitReader(f, maxTaskFileBytes+1))
			_ = f.Close()
		}
	}
	if err != nil {
		return api.SubmitRequest{}, fmt.Errorf("read task file: %w", err)
	}
	if len(data) > maxTaskFileBytes {
		return api.SubmitRequest{}, fmt.Errorf("task file %s is larger than %d bytes, "+
			"the largest request a coordinator accepts; split its tasks over several files, "+
			"or make large payloads smaller", path, maxTaskFileBytes)
	}
	return ParseTaskFile(path, data)
}

// ParseTaskFile parses a task file in HCL or JSON. A file whose name ends in
// .json, or whose first character is "{", is a JSON api.SubmitRequest. Any
// other file is HCL with an optional batch attribute and task blocks:
//
//	batch = "nightly"
//	task "unit" {
//	  type         = "gotest"
//	  payload      = { dir = "/src/app", packages = ["./..."] }
//	  timeout      = "5m"
//	  max_attempts = 3
//	  labels       = { gpu = "true" }
//	}
//
// Unknown attributes and fields are errors.
func ParseTaskFile(name string, data []byte) (api.SubmitRequest, error) {
	trimmed := bytes.TrimSpace(data)
	if strings.EqualFold(filepath.Ext(name), ".json") || bytes.HasPrefix(trimmed, []byte("{")) {
		return parseJSONTaskFile(name, data)
	}
	return parseHCLTaskFile(name, data)
}

var taskFileSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "batch"}},
	Blocks:     []hcl.BlockHeaderSchema{{Type: "task", LabelNames: []string{"name"}}},
}

var taskBlockSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "type", Required: true},
		{Name: "payload", Required: true},
		{Name: "timeout"},
		{Name: "max_attempts"},
		{Name: "labels"},
	},
}

func parseHCLTaskFile(name string, data []byte) (api.SubmitRequest, error) {
	var req api.SubmitRequest
	file, diags := hclsyntax.ParseConfig(data, name, hcl.InitialPos)
	if !diags.HasErrors() {
		req, diags = decodeTaskFile(file.Body)
	}
	if diags.HasErrors() {
		return api.SubmitRequest{}, diagnosticsError(name, file, diags)
	}
	return req, nil
}

func decodeTaskFile(body hcl.Body) (api.SubmitRequest, hcl.Diagnostics) {
	var req api.SubmitRequest
	ctx := hclutil.EvalContext()
	content, diags := body.Content(taskFileSchema)

	if attr, ok := content.Attributes["batch"]; ok {
		diags = append(diags, decodeString(attr, ctx, &req.Batch)...)
	}

	seen := map[string]hcl.Range{}
	for _, block := range content.Blocks {
		label := block.Labels[0]
		if first, dup := seen[label]; dup {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Duplicate task name",
				Detail: fmt.Sprintf("A task named %q is already defined at %s; give each task "+
					"a unique name.", label, rangeStart(first)),
				Subject: &block.LabelRanges[0],
			})
			continue
		}
		seen[label] = block.DefRange

		spec, specDiags := decodeTaskBlock(block, ctx)
		diags = append(diags, specDiags...)
		req.Tasks = append(req.Tasks, spec)
	}
	if len(content.Blocks) == 0 && !diags.HasErrors() {
		rng := body.MissingItemRange()
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "No tasks",
			Detail:   `The file defines no task blocks; add one such as task "unit" { type = "command" payload = { argv = ["make", "test"] } }.`,
			Subject:  &rng,
		})
	}
	return req, diags
}

func decodeTaskBlock(block *hcl.Block, ctx *hcl.EvalContext) (api.TaskSpec, hcl.Diagnostics) {
	spec := api.TaskSpec{Name: block.Labels[0]}
	content, diags := block.Body.Content(taskBlockSchema)
	if diags.HasErrors() {
		return spec, diags
	}

	diags = append(diags, decodeString(content.Attributes["type"], ctx, &spec.Type)...)
	if spec.Type == "" && !diags.HasErrors() {
		diags = append(diags, attrError(content.Attributes["type"], "Empty task type",
			"Set type to one of the coordinator's task_types, such as \"command\" or \"gotest\"."))
	}

	payload, payloadDiags := decodePayload(content.Attributes["payload"], ctx)
	diags = append(diags, payloadDiags...)
	spec.Payload = payload

	if attr, ok := content.Attributes["timeout"]; ok {
		var timeout string
		timeoutDiags := decodeString(attr, ctx, &timeout)
		diags = append(diags, timeoutDiags...)
		if !timeoutDiags.HasErrors() {
			if err := checkTimeout(timeout); err != nil {
				diags = append(diags, attrError(attr, "Invalid timeout", err.Error()))
			}
			spec.Timeout = timeout
		}
	}

	if attr, ok := content.Attributes["max_attempts"]; ok {
		value, valDiags := attr.Expr.Value(ctx)
		diags = append(diags, valDiags...)
		if !valDiags.HasErrors() {
			err := gocty.FromCtyValue(value, &spec.MaxAttempts)
			if err != nil || spec.MaxAttempts < 0 {
				diags = append(diags, attrError(attr, "Invalid max_attempts",
					"max_attempts must be a whole number of 1 or more; 0 or leaving it out "+
						"takes the coordinator's default."))
			}
		}
	}

	if attr, ok := content.Attributes["labels"]; ok {
		labels, labelDiags := decodeLabels(attr, ctx)
		diags = append(diags, labelDiags...)
		spec.Labels = labels
	}
	return spec, diags
}

// decodeLabels evaluates the labels attribute, an object of strings such as
// { gpu = "true", os = "linux" }.
func decodeLabels(attr *hcl.Attribute, ctx *hcl.EvalContext) (map[string]string, hcl.Diagnostics) {
	value, diags := attr.Expr.Value(ctx)
	if diags.HasErrors() {
		return nil, diags
	}
	// An HCL object literal has an object type, which gocty decodes into a
	// map only after conversion to a map of strings.
	var labels map[string]string
	asMap, err := convert.Convert(value, cty.Map(cty.String))
	if err != nil || value.IsNull() || gocty.FromCtyValue(asMap, &labels) != nil {
		return nil, hcl.Diagnostics{attrError(attr, "Invalid labels",
			"labels must be an object of strings, such as { gpu = \"true\" }; got "+
				value.Type().FriendlyName()+".")}
	}
	if err := checkLabelNames(labels); err != nil {
		return nil, hcl.Diagnostics{attrError(attr, "Invalid labels", err.Error()+".")}
	}
	return labels, nil
}

// checkLabelNames reports an empty label name or one with '=' or ',',
// which the coordinator rejects too.
func checkLabelNames(labels map[string]string) error {
	for name := range labels {
		if name == "" || strings.ContainsAny(name, "=,") {
			return fmt.Errorf("label name %q is invalid; use a non-empty name without '=' or ','", name)
		}
	}
	return nil
}

// decodePayload evaluates the payload attribute, which must be an object,
// into JSON.
func decodePayload(attr *hcl.Attribute, ctx *hcl.EvalContext) (json.RawMessage, hcl.Diagnostics) {
	value, diags := attr.Expr.Value(ctx)
	if diags.HasErrors() {
		return nil, diags
	}
	ty := value.Type()
	if value.IsNull() || !(ty.IsObjectType() || ty.IsMapType()) {
		return nil, hcl.Diagnostics{attrError(attr, "Invalid payload",
			"payload must be an object, such as { argv = [\"make\", \"test\"] }; got "+
				ty.FriendlyName()+".")}
	}
	data, err := ctyjson.Marshal(value, ty)
	if err != nil {
		return nil, hcl.Diagnostics{attrError(attr, "Invalid payload",
			"payload cannot be encoded as JSON: "+err.Error()+".")}
	}
	return data, nil
}

func decodeString(attr *hcl.Attribute, ctx *hcl.EvalContext, out *string) hcl.Diagnostics {
	value, diags := attr.Expr.Value(ctx)
	if diags.HasErrors() {
		return diags
	}
	if err := gocty.FromCtyValue(value, out); err != nil || value.IsNull() {
		return hcl.Diagnostics{attrError(attr, "Invalid "+attr.Name,
			attr.Name+" must be a string.")}
	}
	return nil
}

func attrError(attr *hcl.Attribute, summary, detail string) *hcl.Diagnostic {
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  summary,
		Detail:   detail,
		Subject:  attr.Expr.Range().Ptr(),
		Context:  attr.Range.Ptr(),
	}
}

// checkTimeout reports an error for a timeout that is not a positive Go
// duration with a unit.
func checkTimeout(value string) error {
	d, err := time.ParseDuration(value)
	if err != nil {
		return fmt.Errorf("timeout %q is not a duration (%v); use a Go duration with a unit, "+
			"such as \"90s\" or \"5m\"", value, err)
	}
	if d <= 0 {
		return fmt.Errorf("timeout %q must be positive; leave it out for no timeout", value)
	}
	return nil
}

// diagnosticsError renders diags as a "file:line:col: summary" line each,
// which editors and grep understand, followed by hcl's rendering with the
// source line and the detail.
func diagnosticsError(name string, file *hcl.File, diags hcl.Diagnostics) error {
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "invalid task file %s:\n", name)
	files := map[string]*hcl.File{}
	if file != nil {
		files[name] = file
	}
	// Width 0 turns off wrapping, so a value in a detail stays on one line.
	writer := hcl.NewDiagnosticTextWriter(&buf, files, 0, false)
	for _, diag := range diags {
		if diag.Subject != nil {
			fmt.Fprintf(&buf, "%s: %s\n", rangeStart(*diag.Subject), diag.Summary)
		} else {
			fmt.Fprintf(&buf, "%s: %s\n", name, diag.Summary)
		}
		_ = writer.WriteDiagnostic(diag)
	}
	return &TaskFileError{File: name, text: strings.TrimRight(buf.String(), "\n")}
}

// rangeStart formats where rng starts as file:line:col.
func rangeStart(rng hcl.Range) string {
	return fmt.Sprintf("%s:%d:%d", rng.Filename, rng.Start.Line, rng.Start.Column)
}

func parseJSONTaskFile(name string, data []byte) (api.SubmitRequest, error) {
	var req api.SubmitRequest
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, jsonError(name, data, err)
	}
	if dec.More() {
		return req, &TaskFileError{File: name, text: fmt.Sprintf(
			"invalid task file %s: %s: extra data after the JSON object",
			name, position(data, dec.InputOffset()))}
	}
	if len(req.Tasks) == 0 {
		return req, &TaskFileError{File: name, text: fmt.Sprintf(
			"invalid task file %s: tasks is missing or empty; add at least one task", name)}
	}
	for i, spec := range req.Tasks {
		if err := checkSpec(spec); err != nil {
			return req, &TaskFileError{File: name, text: fmt.Sprintf(
				"invalid task file %s: tasks[%d].%v", name, i, err)}
		}
	}
	return req, nil
}

// checkSpec checks the fields of a task that the CLI can check without the
// coordinator. Errors start with the field name.
func checkSpec(spec api.TaskSpec) error {
	if spec.Type == "" {
		return errors.New("type: missing; set it to one of the coordinator's task_types, such as \"command\"")
	}
	payload := bytes.TrimSpace(spec.Payload)
	if len(payload) == 0 || bytes.Equal(payload, []byte("null")) {
		return errors.New("payload: missing; set it to the executor's JSON object")
	}
	if payload[0] != '{' {
		return fmt.Errorf("payload: must be a JSON object, got %s", firstBytes(payload, 40))
	}
	if spec.Timeout != "" {
		if err := checkTimeout(spec.Timeout); err != nil {
			return fmt.Errorf("timeout: %w", err)
		}
	}
	if spec.MaxAttempts < 0 {
		return fmt.Errorf("max_attempts: %d is negative; use 1 or more, or 0 for the coordinator's default",
			spec.MaxAttempts)
	}
	if err := checkLabelNames(spec.Labels); err != nil {
		return fmt.Errorf("labels: %w", err)
	}
	return nil
}

func firstBytes(data []byte, n int) string {
	if len(data) > n {
		return string(data[:n]) + "..."
	}
	return string(data)
}

// jsonError adds the file name and, where encoding/json gives an offset, the
// line and column to a decoding error.
func jsonError(name string, data []byte, err error) error {
	var syntaxErr *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	where := name
	switch {
	case errors.As(err, &syntaxErr):
		// Offset counts the bytes read, including the invalid one.
		where = name + ":" + position(data, syntaxErr.Offset-1)
	case errors.As(err, &typeErr):
		where = name + ":" + position(data, typeErr.Offset-1)
	}
	msg := strings.TrimPrefix(err.Error(), "json: ")
	if strings.HasPrefix(msg, "unknown field") {
		msg += "; known fields: batch, tasks[].name, type, payload, timeout, max_attempts, labels"
	}
	return &TaskFileError{File: name, text: fmt.Sprintf("invalid task file %s: %s", where, msg)}
}

// position converts a byte offset into "line:col", both counted from 1.
func position(data []byte, offset int64) string {
	offset = min(max(offset, 0), int64(len(data)))
	before := data[:offset]
	line := bytes.Count(before, []byte("\n")) + 1
	col := int(offset) - bytes.LastIndexByte(before, '\n')
	return fmt.Sprintf("%d:%d", line, col)
}
