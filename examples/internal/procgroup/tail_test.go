package procgroup

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestTailKeepsLastBytes(t *testing.T) {
	cases := []struct {
		name    string
		max     int
		writes  []string
		want    string
		dropped int64
	}{
		{"under limit", 10, []string{"abc", "def"}, "abcdef", 0},
		{"exact limit", 6, []string{"abc", "def"}, "abcdef", 0},
		{"wraps", 5, []string{"abc", "def", "gh"}, "defgh", 3},
		{"wraps twice", 4, []string{"ab", "cd", "ef", "gh", "ij"}, "ghij", 6},
		{"large write", 3, []string{"a", "bcdefg"}, "efg", 4},
		{"large then small", 4, []string{"abcdefgh", "ij"}, "ghij", 6},
		{"zero limit", 0, []string{"abc"}, "", 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tail := NewTail(tc.max)
			for _, w := range tc.writes {
				n, err := tail.Write([]byte(w))
				assert.NoError(t, err)
				assert.Equal(t, len(w), n)
			}
			assert.Equal(t, tc.want, string(tail.Bytes()))
			assert.Equal(t, tc.dropped, tail.Dropped())
			assert.Equal(t, int64(len(strings.Join(tc.writes, ""))), tail.Total())
		})
	}
}

func TestTailManySmallWrites(t *testing.T) {
	tail := NewTail(7)
	var all strings.Builder
	for i := range 1000 {
		s := string(rune('a' + i%26))
		all.WriteString(s)
		_, _ = tail.Write([]byte(s))
	}
	full := all.String()
	assert.Equal(t, full[len(full)-7:], string(tail.Bytes()))
	assert.Equal(t, 7, tail.Len())
}
