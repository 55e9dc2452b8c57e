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
