package plugin

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/dtf-io/dtf/plugin/pb"
)

// Bounds of a task result. The worker host applies them to every result
// before it builds the task outcome, so that an outcome with a checkpoint
// (protocol.MaxCheckpointBytes, 1 MiB) fits the wire protocol's default
// frame limit of 4 MiB with room to spare. The sdktest harness applies the
// same bounds, so a plugin's own tests show what the worker sends.
const (
	// MaxResultOutputBytes bounds Output. A longer output keeps its tail,
	// because the end of a log usually names the failure.
	MaxResultOutputBytes = 1 << 20
	// MaxResultMessageBytes bounds Message, which is one line: line breaks
	// are replaced before the bound is applied.
	MaxResultMessageBytes = 4 << 10
	// MaxResultDataBytes bounds the result's JSON data. Larger data is
	// dropped whole, because cut JSON does not parse.
	MaxResultDataBytes = 1 << 20
)

// BoundResult applies the result bounds to r in place and returns what it
// changed, one note per field, or nil when r was within bounds. The notes
// are appended to the message, which stays within MaxResultMessageBytes.
func BoundResult(r *pb.Result) []string {
	var notes []string
	if size := len(r.GetOutput()); size > MaxResultOutputBytes {
		r.Output = r.Output[size-MaxResultOutputBytes:]
		notes = append(notes, fmt.Sprintf("output cut to its last %d of %d bytes", MaxResultOutputBytes, size))
	}
	if size := len(r.GetResultJson()); size > MaxResultDataBytes {
		r.ResultJson = nil
		notes = append(notes, fmt.Sprintf("result data of %d bytes dropped, over the %d-byte limit",
			size, MaxResultDataBytes))
	}
	r.Message = BoundMessage(r.GetMessage(), notes...)
	return notes
}

// BoundMessage returns message as one line of at most MaxResultMessageBytes
// of valid UTF-8, with notes appended in brackets. Each run of line breaks
// becomes " / ", and a message cut short ends with the count of bytes cut.
// The notes always fit, because they are short and written by dtf.
func BoundMessage(message string, notes ...string) string {
	suffix := ""
	if len(notes) > 0 {
		suffix = " [" + strings.Join(notes, "; ") + "]"
	}
	if !needsBound(message, MaxResultMessageBytes-len(suffix)) {
		return message + suffix
	}
	line := OneLine(message, MaxResultMessageBytes-len(suffix))
	return line + suffix
}

// needsBound reports whether s is longer than limit bytes, is invalid
// UTF-8 or has a line break.
func needsBound(s string, limit int) bool {
	return len(s) > limit || !utf8.ValidString(s) || strings.ContainsAny(s, "\r\n")
}

// OneLine returns s as one line of at most limit bytes of valid UTF-8.
// Each run of line breaks becomes " / ", invalid bytes become U+FFFD, and
// a cut line ends with "… (cut from N bytes)". It reads no more of s than the
// limit needs, so a message of many megabytes costs little.
func OneLine(s string, limit int) string {
	const cutNote = "… (cut from %d bytes)"
	var b strings.Builder
	// Room for the note of the largest possible count.
	room := max(limit-len(fmt.Sprintf(cutNote, len(s))), 0)
	i := 0
	for i < len(s) && b.Len() <= room {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == '\r' || r == '\n':
			for i < len(s) && (s[i] == '\r' || s[i] == '\n') {
				i++
			}
			if b.Len() > 0 && i < len(s) {
				b.WriteString(" / ")
			}
			continue
		case r == utf8.RuneError && size == 1:
			b.WriteRune(utf8.RuneError)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	if i >= len(s) && b.Len() <= limit {
		return b.String()
	}
	out := b.String()
	for len(out) > room {
		_, size := utf8.DecodeLastRuneInString(out)
		out = out[:len(out)-size]
	}
	return out + fmt.Sprintf(cutNote, len(s))
}
