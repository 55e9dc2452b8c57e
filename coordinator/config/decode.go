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

// durationSyntax matches the texts that time.ParseDuration accepts apart
// from "0", so a text that matches and still fails to parse is a duration
// too large for time.Duration, which ends near 292 years.
var durationSyntax = regexp.MustCompile(`^[-+]?(([0-9]+\.?[0-9]*|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+$`)

// decodeDuration parses the duration attribute name into dst, leaving dst
// alone when the attribute is absent. The value must lie within
// durationRanges[name].
func decodeDuration(expr hcl.Expression, name string, dst *time.Duration) hcl.Diagnostics {
	if expr == nil {
		return nil
	}
	value, diags := expr.Value(hclutil.EvalContext())
	if diags.HasErrors() || value.IsNull() {
		return diags
	}
	rng := expr.Range()

	// A duration is a string with a unit.
	if value.Type() == cty.Number {
		return hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Duration without unit",
			Detail:   fmt.Sprintf("A duration is a string with a unit; add a unit such as \"%s\".", value.AsBigFloat().String()+"s"),
			Subject:  &rng,
		}}
	}
	if value.Type() != cty.String || !value.IsKnown() {
		return hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Invalid duration",
			Detail:   "A duration is a string with a unit, such as \"30s\" or \"500ms\".",
			Subject:  &rng,
		}}
	}

	// Parse it, telling a missing unit and an overflow from other errors.
	limits := durationRanges[name]
	text := strings.TrimSpace(value.AsString())
	d, err := time.ParseDuration(text)
	if err != nil {
		detail := fmt.Sprintf("Invalid duration %q: %s. Use a number with a unit, such as \"30s\" or \"500ms\".", text, err)
		switch {
		case isNumber(text):
			detail = fmt.Sprintf("Duration %q has no unit; add a unit such as \"%ss\".", text, text)
		case durationSyntax.MatchString(text):
			detail = fmt.Sprintf("%s %q is too large; use at most %q.", name, text, formatDuration(limits.max))
		}
		return hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Invalid duration",
			Detail:   detail,
			Subject:  &rng,
		}}
	}

	if d < limits.min || d > limits.max {
		problem := "too long"
		if d < limits.min {
			problem = "too short"
		}
		return hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Duration out of range",
			Detail: fmt.Sprintf("%s %q is %s; use %q to %q.", name, text, problem,
				formatDuration(limits.min), formatDuration(limits.max)),
			Subject: &rng,
		}}
	}
	*dst = d
	return nil
}

// decodeCount parses the whole-number attribute name into dst, leaving dst
// alone when the attribute is absent. The value must lie within
// countRanges[name]. It is compared as written, so a value too large for
// an int gets the same message as any other value over the cap.
func decodeCount(expr hcl.Expression, name string, dst *int) hcl.Diagnostics {
	if expr == nil {
		return nil
	}
	value, diags := expr.Value(hclutil.EvalContext())
	if diags.HasErrors() || value.IsNull() {
		return diags
	}
	rng := expr.Range()
	limits := countRanges[name]

	number, err := convert.Convert(value, cty.Number)
	if err != nil || !number.IsKnown() || number.IsNull() || !number.AsBigFloat().IsInt() {
		return hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Invalid " + name,
			Detail: fmt.Sprintf("%s must be a whole number from %d to %d, such as %d.",
				name, limits.min, limits.max, limits.def),
			Subject: &rng,
		}}
	}

	exact := number.AsBigFloat()
	tooSmall := exact.Cmp(big.NewFloat(float64(limits.min))) < 0
	if tooSmall || exact.Cmp(big.NewFloat(float64(limits.max))) > 0 {
		return hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Invalid " + name,
			Detail:   countError(name, exact.Text('f', -1), tooSmall) + ".",
			Subject:  &rng,
		}}
	}
	n, _ := exact.Int64()
	*dst = int(n)
	return nil
}

func isNumber(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if (r < '0' || r > '9') && r != '.' {
			return false
		}
	}
	return true
}
