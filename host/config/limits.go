package config

import (
	"fmt"
	"math/big"
	"regexp"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"

	"github.com/dtf-io/dtf/internal/hclutil"
)

// maxSlots bounds slots. A host that runs more than 1024 tasks at once is
// better split into several workers, each with its own outbox and
// connection, and a typo such as 1000000000 would let the coordinator
// flood one worker with assignments.
const maxSlots = 1024

// Ceilings of the worker's durations. A stop that takes more than an hour
// is a hang, and a plugin binary prints its address within milliseconds,
// so ten minutes only runs out for a binary that will never start.
const (
	maxShutdownTimeout = time.Hour
	maxStartTimeout    = 10 * time.Minute
)

// Bounds of the drain and the plugin restart backoff. A drain may wait for
// a test that runs for hours, but one longer than a day is a typo. A
// restart delay under minRestartBackoffBase lets a plugin that crashes at
// start keep a core busy, and one over an hour leaves the worker without
// an executor for longer than a person would wait.
const (
	maxDrainTimeout       = 24 * time.Hour
	minRestartBackoffBase = 10 * time.Millisecond
	maxRestartBackoffBase = time.Minute
	maxRestartBackoffCap  = time.Hour
)

// durationSyntax matches the texts that time.ParseDuration accepts apart
// from "0", so a text that matches and still fails to parse is a duration
// too large for time.Duration, which ends near 292 years.
var durationSyntax = regexp.MustCompile(`^[-+]?(([0-9]+\.?[0-9]*|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+$`)

// formatDuration writes d the way a user writes it in a file: "1h" and
// "10m" instead of "1h0m0s" and "10m0s".
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// decodeSlots parses the slots attribute into dst, leaving dst alone when
// the attribute is absent. The value is compared with the range as
// written, so a number too large for an int gets the same message as any
// other number over maxSlots.
func decodeSlots(expr hcl.Expression, dst *int) hcl.Diagnostics {
	if expr == nil {
		return nil
	}
	value, diags := expr.Value(hclutil.EvalContext())
	if diags.HasErrors() || value.IsNull() {
		return diags
	}
	number, err := convert.Convert(value, cty.Number)
	if err != nil || !number.IsKnown() || number.IsNull() || !number.AsBigFloat().IsInt() {
		return hcl.Diagnostics{errorAt(expr.Range(), "Invalid slots",
			fmt.Sprintf("slots must be a whole number from 1 to %d, such as %d.", maxSlots, DefaultSlots))}
	}
	exact := number.AsBigFloat()
	switch {
	case exact.Sign() <= 0:
		return hcl.Diagnostics{errorAt(expr.Range(), "Invalid slots",
			fmt.Sprintf("slots %s is too small; use 1 to %d.", exact.Text('f', -1), maxSlots))}
	case exact.Cmp(big.NewFloat(maxSlots)) > 0:
		return hcl.Diagnostics{errorAt(expr.Range(), "Invalid slots",
			fmt.Sprintf("slots %s is too large; use 1 to %d, or run several workers on the host.",
				exact.Text('f', -1), maxSlots))}
	}
	n, _ := exact.Int64()
	*dst = int(n)
	return nil
}

// decodeSupervision parses drain_timeout, restart_backoff_base and
// restart_backoff_cap into cfg and checks that the base is at least
// minRestartBackoffBase and not above the cap.
func decodeSupervision(raw *fileSchema, cfg *Config) hcl.Diagnostics {
	var diags, more hcl.Diagnostics
	cfg.DrainTimeout, more = parseDuration(raw.DrainTimeout, raw.DrainTimeoutRange,
		"drain_timeout", DefaultDrainTimeout, maxDrainTimeout)
	diags = append(diags, more...)
	cfg.RestartBackoffBase, more = parseDuration(raw.RestartBase, raw.RestartBaseRange,
		"restart_backoff_base", DefaultRestartBackoffBase, maxRestartBackoffBase)
	diags = append(diags, more...)
	cfg.RestartBackoffCap, more = parseDuration(raw.RestartCap, raw.RestartCapRange,
		"restart_backoff_cap", DefaultRestartBackoffCap, maxRestartBackoffCap)
	diags = append(diags, more...)
	if diags.HasErrors() {
		return diags
	}
	if cfg.RestartBackoffBase < minRestartBackoffBase {
		diags = append(diags, errorAt(raw.RestartBaseRange, "Invalid duration",
			fmt.Sprintf("restart_backoff_base %q is too short; use at least %q, default %q.",
				*raw.RestartBase, formatDuration(minRestartBackoffBase), formatDuration(DefaultRestartBackoffBase))))
	}
	if cfg.RestartBackoffCap < cfg.RestartBackoffBase {
		rng := raw.RestartCapRange
		if raw.RestartCap == nil {
			rng = raw.RestartBaseRange
		}
		diags = append(diags, errorAt(rng, "Invalid duration",
			fmt.Sprintf("restart_backoff_cap %s is below restart_backoff_base %s; "+
				"raise the cap or lower the base.",
				formatDuration(cfg.RestartBackoffCap), formatDuration(cfg.RestartBackoffBase))))
	}
	return diags
}
