package connector

import (
	"slices"
	"strings"

	"github.com/dtf-io/dtf/plugin/pb"
)

// ConfigError is the error of ParseConfig for a config with problems. Each
// problem names its setting: a field of the plugin's config block, such as
// "heartbeat_timeout", or a setting of the worker's coordinator block that
// the host passed on, such as "coordinator.ca_file".
type ConfigError struct {
	Problems []*pb.ConfigProblem
}

func (e *ConfigError) Error() string {
	parts := make([]string, 0, len(e.Problems))
	for _, problem := range e.Problems {
		text := problem.GetDetail()
		if path := problem.GetPath(); path != "" && !strings.HasPrefix(text, path) {
			text = path + ": " + text
		}
		parts = append(parts, text)
	}
	return strings.Join(parts, "; ")
}

// problemOf turns a validation error whose message starts with the name
// of its setting, as "backoff_cap: ..." or "coordinator.ca_file ...",
// into a problem about that setting.
func problemOf(err error) *pb.ConfigProblem {
	message := err.Error()
	name, rest, found := strings.Cut(message, ": ")
	if found && isFieldName(name) {
		return &pb.ConfigProblem{Path: name, Summary: "Invalid " + name, Detail: rest}
	}
	if strings.HasPrefix(message, "coordinator.") {
		end := strings.IndexAny(message, " :")
		if end < 0 {
			end = len(message)
		}
		path := message[:end]
		return &pb.ConfigProblem{Path: path, Summary: "Invalid " + path, Detail: message}
	}
	return &pb.ConfigProblem{Summary: "Invalid plugin config", Detail: message}
}

// isFieldName reports whether name is a setting of the config block or of
// the coordinator block.
func isFieldName(name string) bool {
	if strings.HasPrefix(name, "coordinator.") && !strings.ContainsAny(name, " \t") {
		return true
	}
	return slices.Contains(strings.Split(validFields, ", "), name)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for key := range m {
		keys = append(keys, key)
	}
	slices.Sort(keys)
	return keys
}
