package exporter

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// A new exporter has a zero series for every known outcome status and none
// for "unspecified", which only an outcome of an unknown status creates.
func TestOutcomeSeriesAtStart(t *testing.T) {
	families := scrape(t, New(Options{}))
	statuses := map[string]bool{}
	for _, s := range families["dtf_worker_task_outcomes_total"] {
		statuses[s.labels["status"]] = true
	}
	for _, status := range []string{"succeeded", "failed", "cancelled", "timed_out"} {
		assert.True(t, statuses[status], "no series for status %s", status)
	}
	assert.False(t, statuses["unspecified"], "the unspecified series exists before any such outcome")
}
