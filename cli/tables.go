package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dtf-io/dtf/coordinator/api"
)

// newTable returns a writer that aligns tab-separated columns with two spaces
// between them; call Flush after the last row.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// cell makes a value safe for one table cell: empty becomes "-", and tabs,
// newlines and other control characters become spaces so that a task name
// cannot break the columns.
func cell(s string) string {
	if s == "" {
		return "-"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

func row(w io.Writer, cells ...string) {
	for i, c := range cells {
		cells[i] = cell(c)
	}
	fmt.Fprintln(w, strings.Join(cells, "\t"))
}

// writeTaskTable prints tasks as an aligned table in the given order.
func writeTaskTable(w io.Writer, tasks []api.Task) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tNAME\tTYPE\tSTATE\tATTEMPT\tWORKER\tCHECKPOINT\tQUEUED_REASON")
	for _, t := range tasks {
		row(tw, t.ID, t.Name, t.Type, t.State, strconv.Itoa(t.Attempt), t.WorkerID, formatCheckpoint(t.Checkpoint),
			t.QueuedReason)
	}
	return tw.Flush()
}

// formatCheckpoint shows a task's newest checkpoint as attempt/sequence,
// progress and data size, such as "1/37 62% 12B"; "" when there is none.
func formatCheckpoint(cp *api.Checkpoint) string {
	if cp == nil {
		return ""
	}
	return fmt.Sprintf("%d/%d %.0f%% %dB", cp.Attempt, cp.Sequence, cp.Fraction*100, cp.SizeBytes)
}

// writeWorkerTable prints workers as an aligned table; now is used for the
// ages in SINCE and LAST_SEEN.
func writeWorkerTable(w io.Writer, workers []api.Worker, now time.Time) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tSTATE\tSINCE\tRESUMABLE\tRTT\tRECONNECTS\tDOWNTIME\tSLOTS\tRUNNING\tTASK_TYPES\t"+
		"LABELS\tLAST_SEEN\tVERSION\tPLUGINS")
	for _, wk := range workers {
		state := wk.State
		switch {
		case state != "":
		case wk.Connected:
			// A coordinator without worker states sends only Connected.
			state = api.WorkerConnected
		default:
			state = api.WorkerDisconnected
		}
		since := ""
		if !wk.StateSince.IsZero() {
			since = formatAge(wk.StateSince, now)
		}
		row(tw, wk.ID, state, since, formatResumable(wk.ResumableUntil, now), formatRTT(wk.RTTMs), strconv.Itoa(wk.Reconnects),
			formatDowntime(wk.DowntimeMs), strconv.Itoa(wk.Slots), strconv.Itoa(wk.Running),
			strings.Join(wk.TaskTypes, ","), formatLabels(wk.Labels), formatAge(wk.LastSeen, now),
			formatVersions(wk.HostVersion, wk.PluginVersion), formatPlugins(wk.Plugins))
	}
	return tw.Flush()
}

// formatResumable shows how long a disconnected worker can still resume
// its session, such as "for 4m12s"; "" when it cannot.
func formatResumable(until, now time.Time) string {
	if until.IsZero() || !until.After(now) {
		return ""
	}
	return "for " + until.Sub(now).Round(time.Second).String()
}

// formatRTT shows a round-trip time in milliseconds, such as "1.4ms"; ""
// before the first measurement.
func formatRTT(ms float64) string {
	if ms <= 0 {
		return ""
	}
	return strconv.FormatFloat(ms, 'f', 1, 64) + "ms"
}

// formatDowntime shows a downtime in milliseconds to a tenth of a second
// below a minute, such as "2.5s", and to a second above, such as "3m12s".
func formatDowntime(ms int64) string {
	d := time.Duration(ms) * time.Millisecond
	if d < time.Minute {
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

func formatLabels(labels map[string]string) string {
	parts := make([]string, 0, len(labels))
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		parts = append(parts, k+"="+labels[k])
	}
	return strings.Join(parts, ",")
}

func formatVersions(host, plugin string) string {
	switch {
	case host == "" && plugin == "":
		return ""
	case plugin == "":
		return "host " + host
	case host == "":
		return "plugin " + plugin
	}
	return "host " + host + ", plugin " + plugin
}

// formatAge prints how long ago t was, rounded to a unit that fits a table
// cell, such as "4s ago" or "3h12m ago".
func formatAge(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	age := now.Sub(t)
	switch {
	case age < time.Second:
		return "just now"
	case age < time.Minute:
		return age.Round(time.Second).String() + " ago"
	case age < 48*time.Hour:
		return strings.TrimSuffix(age.Round(time.Minute).String(), "0s") + " ago"
	}
	return t.UTC().Format("2006-01-02 15:04 UTC")
}

// writeJSON prints v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
