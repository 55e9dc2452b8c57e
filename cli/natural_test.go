package cli

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestNaturalCompareOrder(t *testing.T) {
	ids := []string{"w10", "w2", "w1", "gpu-3", "w01", "w", "w2b", "w2a", "gpu-12", "w100"}
	slices.SortFunc(ids, naturalCompare)
	assert.Equal(t, []string{"gpu-3", "gpu-12", "w", "w1", "w01", "w2", "w2a", "w2b", "w10", "w100"}, ids)
}

func TestNaturalCompareEqual(t *testing.T) {
	assert.Zero(t, naturalCompare("w7", "w7"))
	assert.Equal(t, -1, naturalCompare("w7", "w7x"))
	assert.Equal(t, 1, naturalCompare("w7x", "w7"))
}
