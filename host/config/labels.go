package config

import (
	"fmt"
	"maps"
	"runtime"

	"github.com/hashicorp/hcl/v2"

	"github.com/dtf-io/dtf/protocol"
)

// Names of the labels that every worker declares from the platform its
// host binary was built for, so that a task can require an operating
// system or CPU architecture without a matching entry in each worker.hcl.
const (
	// LabelOS is set to runtime.GOOS, such as "linux" or "darwin".
	LabelOS = "os"
	// LabelArch is set to runtime.GOARCH, such as "amd64" or "arm64".
	LabelArch = "arch"
)

// platformLabels returns a copy of configured with os and arch added from
// runtime.GOOS and runtime.GOARCH. A label that the config sets keeps its
// value, so an operator can override either one.
func platformLabels(configured map[string]string) map[string]string {
	labels := make(map[string]string, len(configured)+2)
	maps.Copy(labels, configured)
	if _, ok := labels[LabelOS]; !ok {
		labels[LabelOS] = runtime.GOOS
	}
	if _, ok := labels[LabelArch]; !ok {
		labels[LabelArch] = runtime.GOARCH
	}
	return labels
}

// checkLabels validates the labels of the config and then the labels the
// worker declares, which include os and arch. Only the count can differ
// between the two checks, because the added names and values are valid.
func checkLabels(configured, declared map[string]string, rng hcl.Range) hcl.Diagnostics {
	if err := protocol.CheckLabels(configured); err != nil {
		return hcl.Diagnostics{errorAt(rng, "Invalid labels",
			err.Error()+"; the coordinator turns away a worker with such labels.")}
	}
	if len(declared) > protocol.MaxLabels {
		return hcl.Diagnostics{errorAt(rng, "Invalid labels", fmt.Sprintf(
			"labels sets %d labels, and the worker adds os and arch unless labels sets them, so it "+
				"would declare %d, over the limit of %d. Remove labels, or set os and arch in labels.",
			len(configured), len(declared), protocol.MaxLabels))}
	}
	return nil
}
