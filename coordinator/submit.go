package coordinator

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/dtf-io/dtf/coordinator/api"
)

// Bounds on submission fields that end up in logs, the store and every API
// response.
const (
	maxBatchBytes       = 128
	maxNameBytes        = 1024
	maxTasksPerSubmit   = 10000
	maxTaskMaxAttempts  = 100
	submitFieldTasks    = "tasks"
	submitFieldBatch    = "batch"
	jsonObjectFirstByte = '{'
)

// requestError is a rejected request with its HTTP status and the field it
// names.
type requestError struct {
	status  int
	field   string
	message string
}

func (e *requestError) Error() string {
	if e.field == "" {
		return e.message
	}
	return e.field + ": " + e.message
}

func badField(field, format string, args ...any) *requestError {
	return &requestError{status: http.StatusBadRequest, field: field, message: fmt.Sprintf(format, args...)}
}

// decodeSubmit decodes and validates a submission. It walks the JSON by hand
// so that an unknown or mistyped field is reported with its path, such as
// "tasks[2].payload".
func decodeSubmit(body io.Reader, taskTypes []string) (*api.SubmitRequest, *requestError) {
	data, err := io.ReadAll(body)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, &requestError{status: http.StatusRequestEntityTooLarge,
				message: bodyTooLargeMessage(-1, tooLarge.Limit)}
		}
		return nil, &requestError{status: http.StatusBadRequest, message: "read request body: " + err.Error()}
	}

	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil || top == nil {
		return nil, &requestError{status: http.StatusBadRequest,
			message: "request body must be a JSON object such as {\"tasks\": [...]}"}
	}
	if field := unknownKey(top, submitFieldBatch, submitFieldTasks); field != "" {
		return nil, badField(field, "unknown field; a submission has only batch and tasks")
	}

	req := &api.SubmitRequest{}
	if raw, ok := top[submitFieldBatch]; ok {
		if err := json.Unmarshal(raw, &req.Batch); err != nil {
			return nil, badField(submitFieldBatch, "must be a string")
		}
		if err := checkLabel(req.Batch, maxBatchBytes); err != "" {
			return nil, badField(submitFieldBatch, "%s", err)
		}
	}

	var rawTasks []json.RawMessage
	if raw, ok := top[submitFieldTasks]; !ok || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return nil, badField(submitFieldTasks, "missing; submit at least one task")
	} else if err := json.Unmarshal(raw, &rawTasks); err != nil {
		return nil, badField(submitFieldTasks, "must be an array of tasks")
	}
	if len(rawTasks) == 0 {
		return nil, badField(submitFieldTasks, "empty; submit at least one task")
	}
	if len(rawTasks) > maxTasksPerSubmit {
		return nil, badField(submitFieldTasks, "%d tasks is over the limit of %d per submission",
			len(rawTasks), maxTasksPerSubmit)
	}
	for i, raw := range rawTasks {
		spec, rerr := decodeTaskSpec(fmt.Sprintf("tasks[%d]", i), raw, taskTypes)
		if rerr != nil {
			return nil, rerr
		}
		req.Tasks = append(req.Tasks, spec)
	}
	return req, nil
}

func decodeTaskSpec(path string, raw json.RawMessage, taskTypes []string) (api.TaskSpec, *requestError) {
	var spec api.TaskSpec
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		return spec, badField(path, "must be a JSON object with type and payload")
	}
	if field := unknownKey(fields, "name", "type", "payload", "timeout", "max_attempts", "labels"); field != "" {
		return spec, badField(path+"."+field, "unknown field; a task has name, type, payload, timeout, "+
			"max_attempts and labels")
	}

	stringField := func(name string, dst *string) *requestError {
		if value, ok := fields[name]; ok {
			if err := json.Unmarshal(value, dst); err != nil {
				return badField(path+"."+name, "must be a string")
			}
		}
		return nil
	}
	for name, dst := range map[string]*string{"name": &spec.Name, "type": &spec.Type, "timeout": &spec.Timeout} {
		if rerr := stringField(name, dst); rerr != nil {
			return spec, rerr
		}
	}

	if spec.Type == "" {
		return spec, badField(path+".type", "missing task type; known types: %s", strings.Join(taskTypes, ", "))
	}
	if !slices.Contains(taskTypes, spec.Type) {
		return spec, badField(path+".type", "unknown task type %q; known types: %s",
			spec.Type, strings.Join(taskTypes, ", "))
	}
	if err := checkLabel(spec.Name, maxNameBytes); err != "" {
		return spec, badField(path+".name", "%s", err)
	}

	payload := bytes.TrimSpace(fields["payload"])
	if len(payload) == 0 || bytes.Equal(payload, []byte("null")) {
		return spec, badField(path+".payload", "missing; the payload must be a JSON object such as {}")
	}
	if payload[0] != jsonObjectFirstByte {
		return spec, badField(path+".payload", "must be a JSON object, got %s", jsonKind(payload[0]))
	}
	spec.Payload = json.RawMessage(payload)

	if spec.Timeout != "" {
		timeout, err := time.ParseDuration(spec.Timeout)
		if err != nil || timeout < 0 {
			return spec, badField(path+".timeout", "invalid duration %q; use a Go duration such as \"5m\"",
				spec.Timeout)
		}
	}
	if value, ok := fields["max_attempts"]; ok {
		if err := json.Unmarshal(value, &spec.MaxAttempts); err != nil {
			return spec, badField(path+".max_attempts", "must be an integer")
		}
		if spec.MaxAttempts < 0 || spec.MaxAttempts > maxTaskMaxAttempts {
			return spec, badField(path+".max_attempts", "%d is out of range; use 1 to %d, or 0 for the default",
				spec.MaxAttempts, maxTaskMaxAttempts)
		}
	}
	if value, ok := fields["labels"]; ok {
		if err := json.Unmarshal(value, &spec.Labels); err != nil {
			return spec, badField(path+".labels", "must be an object of strings, such as {\"gpu\": \"true\"}")
		}
		if problem := checkLabels(spec.Labels); problem != "" {
			return spec, badField(path+".labels", "%s", problem)
		}
	}
	return spec, nil
}

// unknownKey returns the first key of fields, in sorted order, that is not
// in known, or "".
func unknownKey(fields map[string]json.RawMessage, known ...string) string {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !slices.Contains(known, k) {
			return k
		}
	}
	return ""
}

// checkLabel returns why a batch or task name is invalid, or "".
func checkLabel(s string, maxBytes int) string {
	if len(s) > maxBytes {
		return fmt.Sprintf("%d bytes is over the limit of %d", len(s), maxBytes)
	}
	if strings.IndexFunc(s, unicode.IsControl) >= 0 {
		return "contains a control character"
	}
	return ""
}

func jsonKind(first byte) string {
	switch first {
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	default:
		return "a number"
	}
}
