package coordinator

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode"
)

// Bounds on worker labels, from a Hello, and on the labels a task
// requires. The scheduler matches them in a store query with two
// parameters per worker label, so their count must stay far below
// SQLite's limit of 32766 parameters; 64 labels leave room for os, arch,
// hardware and many free-form ones.
const (
	maxLabels          = 64
	maxLabelNameBytes  = 128
	maxLabelValueBytes = 256
)

// checkLabels returns why a set of labels is invalid, or "". A name must be
// non-empty and free of '=', ',' and control characters, because the CLI
// writes labels as name=value,name=value.
func checkLabels(labels map[string]string) string {
	if len(labels) > maxLabels {
		return fmt.Sprintf("%d labels is over the limit of %d", len(labels), maxLabels)
	}
	for _, name := range slices.Sorted(maps.Keys(labels)) {
		value := labels[name]
		switch {
		case name == "":
			return "a label name is empty"
		case len(name) > maxLabelNameBytes:
			return fmt.Sprintf("label name %.20q... has %d bytes, over the limit of %d", name, len(name),
				maxLabelNameBytes)
		case strings.ContainsAny(name, "=,") || strings.IndexFunc(name, unicode.IsControl) >= 0:
			return fmt.Sprintf("label name %q contains '=', ',' or a control character", name)
		case len(value) > maxLabelValueBytes:
			return fmt.Sprintf("value of label %q has %d bytes, over the limit of %d", name, len(value),
				maxLabelValueBytes)
		case strings.IndexFunc(value, unicode.IsControl) >= 0:
			return fmt.Sprintf("value of label %q contains a control character", name)
		}
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
