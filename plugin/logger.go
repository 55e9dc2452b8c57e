package plugin

import (
	"time"

	"github.com/hashicorp/go-hclog"
)

// durationLogger writes time.Duration values as strings such as "1.5s".
// hclog's JSON format writes a Duration as its integer nanoseconds, and the
// host, which parses a plugin's JSON lines and writes them again in its own
// format, would print that number as "1.5e+09".
type durationLogger struct {
	hclog.Logger
}

func newDurationLogger(l hclog.Logger) hclog.Logger {
	return durationLogger{l}
}

// durationsAsStrings returns args with every Duration value replaced by
// its string. Keys sit at even positions and are left alone.
func durationsAsStrings(args []interface{}) []interface{} {
	var out []interface{}
	for i := 1; i < len(args); i += 2 {
		d, ok := args[i].(time.Duration)
		if !ok {
			continue
		}
		if out == nil {
			out = append([]interface{}(nil), args...)
		}
		out[i] = d.String()
	}
	if out == nil {
		return args
	}
	return out
}

func (l durationLogger) Log(level hclog.Level, msg string, args ...interface{}) {
	l.Logger.Log(level, msg, durationsAsStrings(args)...)
}

func (l durationLogger) Trace(msg string, args ...interface{}) {
	l.Logger.Trace(msg, durationsAsStrings(args)...)
}

func (l durationLogger) Debug(msg string, args ...interface{}) {
	l.Logger.Debug(msg, durationsAsStrings(args)...)
}

func (l durationLogger) Info(msg string, args ...interface{}) {
	l.Logger.Info(msg, durationsAsStrings(args)...)
}

func (l durationLogger) Warn(msg string, args ...interface{}) {
	l.Logger.Warn(msg, durationsAsStrings(args)...)
}

func (l durationLogger) Error(msg string, args ...interface{}) {
	l.Logger.Error(msg, durationsAsStrings(args)...)
}

func (l durationLogger) With(args ...interface{}) hclog.Logger {
	return durationLogger{l.Logger.With(durationsAsStrings(args)...)}
}

func (l durationLogger) Named(name string) hclog.Logger {
	return durationLogger{l.Logger.Named(name)}
}

func (l durationLogger) ResetNamed(name string) hclog.Logger {
	return durationLogger{l.Logger.ResetNamed(name)}
}
