package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"sync"

	"github.com/dtf-io/dtf/examples/internal/procgroup"
)

// event is one line of `go test -json` output, as cmd/test2json defines it.
type event struct {
	Action  string
	Package string
	Test    string
	Elapsed float64
	Output  string
	// ImportPath is set on build-output and build-fail events (Go 1.24+).
	ImportPath string
	// FailedBuild is set on a package's fail event when its build failed.
	FailedBuild string
}

// PackageResult is one package in the result JSON.
type PackageResult struct {
	Package string  `json:"package"`
	Action  string  `json:"action"`
	Elapsed float64 `json:"elapsed"`
	// Output is kept only for failed packages, for example a panic outside
	// any test or a build failure.
	Output string `json:"output,omitempty"`
}

// TestResult is one test or subtest in the result JSON.
type TestResult struct {
	Package string  `json:"package"`
	Test    string  `json:"test"`
	Action  string  `json:"action"`
	Elapsed float64 `json:"elapsed"`
	// Output is kept only for failed tests.
	Output string `json:"output,omitempty"`
}

// Counts sums the tests by result.
type Counts struct {
	Pass int `json:"pass"`
	Fail int `json:"fail"`
	Skip int `json:"skip"`
}

// Report is the result JSON of a "gotest" task.
type Report struct {
	Packages []PackageResult `json:"packages"`
	Tests    []TestResult    `json:"tests"`
	Counts   Counts          `json:"counts"`
}

// progressFunc receives the number of finished and started packages.
type progressFunc func(done, started int, failed int)

// collector builds a Report from test2json events as they arrive. It keeps
// output only for tests and packages that are still running or failed. Each
// running test keeps a tail of at most perTest bytes, and the failure output
// kept over the whole run is at most total bytes.
type collector struct {
	mu       sync.Mutex
	perTest  int
	total    int
	kept     int // bytes of failure output kept so far
	progress progressFunc

	report   Report
	running  map[string]*procgroup.Tail // output of running tests and packages
	testRow  map[string]int             // key to index in report.Tests
	started  int
	done     int
	failed   int
	build    *procgroup.Tail
	badLines int
}

func newCollector(perTest, total int, progress progressFunc) *collector {
	return &collector{
		perTest:  perTest,
		total:    total,
		progress: progress,
		running:  map[string]*procgroup.Tail{},
		testRow:  map[string]int{},
		build:    procgroup.NewTail(perTest),
	}
}

func testKey(pkg, test string) string { return pkg + "\x00" + test }

// line handles one line of go test's stdout.
func (c *collector) line(data []byte) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return
	}
	var ev event
	if data[0] != '{' || json.Unmarshal(data, &ev) != nil {
		// go test prints some errors as plain text even with -json.
		c.mu.Lock()
		c.badLines++
		_, _ = c.build.Write(append(data, '\n'))
		c.mu.Unlock()
		return
	}
	c.handle(ev)
}

func (c *collector) handle(ev event) {
	c.mu.Lock()
	defer c.mu.Unlock()

	switch ev.Action {
	case "start":
		if ev.Test == "" {
			c.started++
		}
	case "run":
		c.outputTail(ev.Package, ev.Test)
	case "output":
		_, _ = c.outputTail(ev.Package, ev.Test).Write([]byte(ev.Output))
	case "build-output":
		_, _ = c.build.Write([]byte(ev.Output))
	case "pass", "fail", "skip":
		if ev.Test == "" {
			c.finishPackage(ev)
		} else {
			c.finishTest(ev)
		}
	}
}

// outputTail returns the output buffer of a running test, or of the package
// itself when test is empty, creating it on first use.
func (c *collector) outputTail(pkg, test string) *procgroup.Tail {
	key := testKey(pkg, test)
	tail, ok := c.running[key]
	if !ok {
		tail = procgroup.NewTail(c.perTest)
		c.running[key] = tail
	}
	return tail
}

// takeOutput removes a finished test's buffer and returns what of it fits in
// the total budget, or "" unless keep is set.
func (c *collector) takeOutput(pkg, test string, keep bool) string {
	key := testKey(pkg, test)
	tail := c.running[key]
	delete(c.running, key)
	if !keep || tail == nil {
		return ""
	}
	return c.budget(tail.Bytes(), tail.Dropped())
}

// budget cuts out to the remaining total budget and notes what was dropped.
func (c *collector) budget(out []byte, dropped int64) string {
	var b strings.Builder
	if dropped > 0 {
		fmt.Fprintf(&b, "[%d earlier bytes of output dropped]\n", dropped)
	}
	room := c.total - c.kept
	if room <= 0 {
		return "[output dropped: the task's limit on failure output is reached]\n"
	}
	if len(out) > room {
		b.Write(out[len(out)-room:])
		fmt.Fprintf(&b, "\n[output cut: the task's limit on failure output is reached]\n")
	} else {
		b.Write(out)
	}
	c.kept += min(len(out), room)
	return b.String()
}

func (c *collector) finishTest(ev event) {
	row := TestResult{
		Package: ev.Package,
		Test:    ev.Test,
		Action:  ev.Action,
		Elapsed: ev.Elapsed,
		Output:  c.takeOutput(ev.Package, ev.Test, ev.Action == "fail"),
	}
	key := testKey(ev.Package, ev.Test)
	if i, ok := c.testRow[key]; ok {
		// A test reported twice, for example with -count=2, keeps its
		// latest result.
		c.uncount(c.report.Tests[i].Action)
		c.report.Tests[i] = row
	} else {
		c.testRow[key] = len(c.report.Tests)
		c.report.Tests = append(c.report.Tests, row)
	}
	c.count(ev.Action)
}

func (c *collector) count(action string) {
	switch action {
	case "pass":
		c.report.Counts.Pass++
	case "fail":
		c.report.Counts.Fail++
	case "skip":
		c.report.Counts.Skip++
	}
}

func (c *collector) uncount(action string) {
	switch action {
	case "pass":
		c.report.Counts.Pass--
	case "fail":
		c.report.Counts.Fail--
	case "skip":
		c.report.Counts.Skip--
	}
}

func (c *collector) finishPackage(ev event) {
	failed := ev.Action == "fail"
	output := c.takeOutput(ev.Package, "", failed)
	if ev.FailedBuild != "" {
		output = "build failed: " + ev.FailedBuild + "\n" + output
	}
	c.report.Packages = append(c.report.Packages, PackageResult{
		Package: ev.Package,
		Action:  ev.Action,
		Elapsed: ev.Elapsed,
		Output:  output,
	})

	c.done++
	if failed {
		c.failed++
	}
	// A package that failed to build may end without a start event.
	c.started = max(c.started, c.done)
	if c.progress != nil {
		c.progress(c.done, c.started, c.failed)
	}
}

// finish closes the report after go test ended: tests that started but never
// reported a result, because the test binary crashed or was killed, count as
// failed and keep their output.
func (c *collector) finish() Report {
	c.mu.Lock()
	defer c.mu.Unlock()

	for key, tail := range c.running {
		pkg, test, _ := strings.Cut(key, "\x00")
		if test == "" || tail == nil {
			continue
		}
		if _, reported := c.testRow[key]; reported {
			continue
		}
		c.testRow[key] = len(c.report.Tests)
		output := c.budget(tail.Bytes(), tail.Dropped())
		c.report.Tests = append(c.report.Tests, TestResult{
			Package: pkg,
			Test:    test,
			Action:  "fail",
			Output:  output + "[no result: the test binary exited or was stopped]\n",
		})
		c.report.Counts.Fail++
	}
	clear(c.running)

	report := c.report
	if report.Packages == nil {
		report.Packages = []PackageResult{}
	}
	if report.Tests == nil {
		report.Tests = []TestResult{}
	}
	return report
}

// buildOutput returns the build output and any plain-text lines go test
// printed on stdout.
func (c *collector) buildOutput() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.build.Bytes()
}

// lineWriter splits a byte stream into lines for a callback. A line longer
// than max is cut to its first max bytes so that memory stays bounded.
type lineWriter struct {
	max     int
	partial []byte
	skip    bool // dropping the rest of an over-long line
	onLine  func([]byte)
}

func (w *lineWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk = p[:i]
			p = p[i+1:]
		} else {
			p = nil
		}

		if !w.skip {
			room := w.max - len(w.partial)
			if len(chunk) > room {
				chunk = chunk[:room]
				w.skip = true
			}
			w.partial = append(w.partial, chunk...)
		}
		if i >= 0 {
			w.onLine(w.partial)
			w.partial = w.partial[:0]
			w.skip = false
		}
	}
	return n, nil
}

// flush passes on a last line that had no newline.
func (w *lineWriter) flush() {
	if len(w.partial) > 0 {
		w.onLine(w.partial)
		w.partial = w.partial[:0]
	}
}
