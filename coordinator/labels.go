package coordinator

import (
	"github.com/dtf-io/dtf/protocol"
)

// Bounds on worker and task labels; see protocol.CheckLabels.
const (
	maxLabels          = protocol.MaxLabels
	maxLabelNameBytes  = protocol.MaxLabelNameBytes
	maxLabelValueBytes = protocol.MaxLabelValueBytes
)

// checkLabels returns why a set of labels is invalid, or "".
func checkLabels(labels map[string]string) string {
	if err := protocol.CheckLabels(labels); err != nil {
		return err.Error()
	}
	return ""
}

// hasLabels reports whether a worker's labels include every required label
// with the same value.
func hasLabels(worker, required map[string]string) bool {
	for name, value := range required {
		if got, ok := worker[name]; !ok || got != value {
			return false
		}
	}
	return true
}

// formatLabel writes one label as name=value.
func formatLabel(name, value string) string {
	return name + "=" + value
}
