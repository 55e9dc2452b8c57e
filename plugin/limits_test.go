package plugin

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"

	"github.com/dtf-io/dtf/plugin/pb"
)

func TestOneLine(t *testing.T) {
	cases := []struct {
		name, in, want string
	}{
		{"plain", "all good", "all good"},
		{"line breaks", "first\r\nsecond\n\nthird\n", "first / second / third"},
		{"leading break", "\nonly", "only"},
		{"invalid utf-8", "a\xffb", "a\uFFFDb"},
		{"cut", strings.Repeat("x", 100), strings.Repeat("x", 40) + "… (cut from 100 bytes)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, OneLine(tc.in, 64))
		})
	}
}

func TestOneLineCutsAtRuneBoundary(t *testing.T) {
	line := OneLine(strings.Repeat("é", 100), 64)
	assert.True(t, utf8.ValidString(line))
	assert.LessOrEqual(t, len(line), 64)
}

func TestBoundMessageLargeInput(t *testing.T) {
	message := BoundMessage(strings.Repeat("m\n", 3_000_000), "output cut")
	assert.LessOrEqual(t, len(message), MaxResultMessageBytes)
	assert.NotContains(t, message, "\n")
	assert.True(t, strings.HasSuffix(message, "(cut from 6000000 bytes) [output cut]"), message[len(message)-60:])
}

func TestBoundResult(t *testing.T) {
	output := []byte(strings.Repeat("o", MaxResultOutputBytes) + "end")
	r := &pb.Result{Message: "failed", Output: output, ResultJson: make([]byte, MaxResultDataBytes+1)}
	notes := BoundResult(r)
	assert.Len(t, notes, 2)
	assert.Len(t, r.GetOutput(), MaxResultOutputBytes)
	assert.True(t, strings.HasSuffix(string(r.GetOutput()), "end"))
	assert.Nil(t, r.GetResultJson())
	assert.True(t, strings.HasPrefix(r.GetMessage(), "failed ["), r.GetMessage())

	small := &pb.Result{Message: "ok", Output: []byte("o"), ResultJson: []byte("{}")}
	assert.Empty(t, BoundResult(small))
	assert.Equal(t, "ok", small.GetMessage())
}
