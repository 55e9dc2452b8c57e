// Package logs builds the root logger of a dtf server process, the
// coordinator or a worker host.
package logs

import (
	"io"

	"github.com/hashicorp/go-hclog"
)

// New returns a logger named name that writes to w at level, one of
// trace, debug, info, warn and error. Colors apply only to the header of
// each line, and only when w is a terminal.
func New(name, level string, w io.Writer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:            name,
		Level:           hclog.LevelFromString(level),
		Output:          w,
		Color:           hclog.AutoColor,
		ColorHeaderOnly: true,
	})
}
