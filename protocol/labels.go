package protocol

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode"
)

// Bounds on the labels a worker declares in its hello and on the labels a
// task requires. The coordinator matches them in a store query with two
// parameters per worker label, so their count must stay far below SQLite's
// limit of 32766 parameters; 64 labels leave room for os, arch, hardware
// and many free-form ones.
const (
	MaxLabels          = 64
	MaxLabelNameBytes  = 128
	MaxLabelValueBytes = 256
)

// CheckLabels returns why a set of labels is invalid, or nil. A name must
// be non-empty and free of '=', ',' and control characters, because the
// CLI writes labels as name=value,name=value. The coordinator rejects a
// worker whose hello carries invalid labels, and the worker's config
// loader checks them first with this same function.
func CheckLabels(labels map[string]string) error {
	if len(labels) > MaxLabels {
		return fmt.Errorf("%d labels is over the limit of %d", len(labels), MaxLabels)
	}
	for _, name := range slices.Sorted(maps.Keys(labels)) {
		value := labels[name]
		switch {
		case name == "":
			return fmt.Errorf("a label name is empty")
		case len(name) > MaxLabelNameBytes:
			return fmt.Errorf("label name %.20q... has %d bytes, over the limit of %d", name, len(name),
				MaxLabelNameBytes)
		case strings.ContainsAny(name, "=,") || strings.IndexFunc(name, unicode.IsControl) >= 0:
			return fmt.Errorf("label name %q contains '=', ',' or a control character", name)
		case len(value) > MaxLabelValueBytes:
			return fmt.Errorf("value of label %q has %d bytes, over the limit of %d", name, len(value),
				MaxLabelValueBytes)
		case strings.IndexFunc(value, unicode.IsControl) >= 0:
			return fmt.Errorf("value of label %q contains a control character", name)
		}
	}
	return nil
}
