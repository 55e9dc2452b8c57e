package sdk

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
)

// ConfigProblem is one invalid setting of a plugin's config block. The
// worker host reports it at the line of that setting in worker.hcl.
type ConfigProblem struct {
	// Path names the setting: an attribute such as "default_timeout", a key
	// of an object attribute after a dot ("limits.cpu"), or an element of a
	// list attribute in brackets ("args[2]"). Empty means the block as a
	// whole.
	Path string
	// Summary is a short title such as "Invalid duration".
	Summary string
	// Detail names the value and the fix.
	Detail string
}

// ConfigError is the error that Configure returns for a config with
// problems, so that the host can show each one at its line. Any other
// error from Configure is shown at the config block as a whole.
type ConfigError struct {
	Problems []ConfigProblem
}

func (e *ConfigError) Error() string {
	parts := make([]string, 0, len(e.Problems))
	for _, problem := range e.Problems {
		text := problem.Detail
		if problem.Path != "" {
			text = problem.Path + ": " + text
		}
		parts = append(parts, text)
	}
	return "invalid plugin config: " + strings.Join(parts, "; ")
}

// ConfigValidator is implemented by an executor whose Configure does setup
// that a check should not do, such as opening a connection. When the host
// only checks the config, as `dtf validate` does, the plugin calls
// ValidateConfig instead of Configure. An executor without it gets
// Configure, and its process is stopped right after.
type ConfigValidator interface {
	ValidateConfig(config json.RawMessage) error
}

// DecodeConfig decodes a JSON config object into dst, a pointer to a
// struct with json tags, and returns a problem for each key that dst has
// no field for and for each value of the wrong type. A field's key is its
// json tag, or, without one, its name in any case, as encoding/json
// matches it: field Greeting takes the setting greeting. Fields without a
// key in raw keep their values, so dst may hold the defaults. An empty or
// null config decodes to nothing.
//
// Configure returns the problems as a *ConfigError, so that the host
// reports each one at its line in worker.hcl:
//
//	cfg := struct{ Greeting string }{Greeting: "Hello"}
//	if problems := sdk.DecodeConfig(raw, &cfg); len(problems) > 0 {
//		return &sdk.ConfigError{Problems: problems}
//	}
func DecodeConfig(raw json.RawMessage, dst any) []ConfigProblem {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || string(trimmed) == "null" {
		return nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(trimmed, &fields); err != nil {
		return []ConfigProblem{{Summary: "Invalid plugin config",
			Detail: fmt.Sprintf("the config is not a JSON object: %v", err)}}
	}
	known := jsonFieldNames(dst)
	keys := make([]string, 0, len(fields))
	for key := range fields {
		keys = append(keys, key)
	}
	sort.Strings(keys)

	var problems []ConfigProblem
	for _, key := range keys {
		if !known[strings.ToLower(key)] && !known[key] {
			problems = append(problems, ConfigProblem{Path: key, Summary: "Unsupported argument",
				Detail: fmt.Sprintf("the plugin has no setting %q; valid settings: %s", key, sortedNames(known))})
			continue
		}
		// One key at a time, so that each type error names its key.
		single, _ := json.Marshal(map[string]json.RawMessage{key: fields[key]})
		if err := json.Unmarshal(single, dst); err != nil {
			detail := err.Error()
			var typeErr *json.UnmarshalTypeError
			if errors.As(err, &typeErr) {
				detail = fmt.Sprintf("%s is not a valid %s", fields[key], typeErr.Type)
			}
			problems = append(problems, ConfigProblem{Path: key, Summary: "Invalid value", Detail: detail})
		}
	}
	return problems
}

// jsonFieldNames returns the JSON keys of the struct that dst points to:
// the tag's name, or the lowercase field name for a field without one.
func jsonFieldNames(dst any) map[string]bool {
	names := map[string]bool{}
	t := reflect.TypeOf(dst)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct {
		return names
	}
	for i := range t.NumField() {
		field := t.Field(i)
		if !field.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(field.Tag.Get("json"), ",")
		switch name {
		case "-":
			continue
		case "":
			name = strings.ToLower(field.Name)
		}
		names[name] = true
	}
	return names
}

func sortedNames(names map[string]bool) string {
	list := make([]string, 0, len(names))
	for name := range names {
		list = append(list, name)
	}
	sort.Strings(list)
	return strings.Join(list, ", ")
}
