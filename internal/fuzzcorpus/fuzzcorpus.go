// Package fuzzcorpus writes the seed corpora of dtf's fuzz targets in the
// file format of go test's fuzzing, so each package can regenerate its
// testdata/fuzz folders from the seeds in its code.
package fuzzcorpus

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// Write replaces the seed files testdata/fuzz/<target>/seed-NN with one
// file per entry. Each entry contains the fuzz function's arguments in order,
// of the types []byte, string, uint8 or uint16. Inputs that the fuzzer
// found are kept, because only files named seed-* are removed.
func Write(t testing.TB, target string, entries ...[]any) {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", target)
	old, err := filepath.Glob(filepath.Join(dir, "seed-*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range old {
		if err := os.Remove(name); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, entry := range entries {
		var buf bytes.Buffer
		buf.WriteString("go test fuzz v1\n")
		for _, value := range entry {
			switch v := value.(type) {
			case []byte:
				fmt.Fprintf(&buf, "[]byte(%q)\n", v)
			case string:
				fmt.Fprintf(&buf, "string(%q)\n", v)
			case uint8:
				fmt.Fprintf(&buf, "uint8(%d)\n", v)
			case uint16:
				fmt.Fprintf(&buf, "uint16(%d)\n", v)
			default:
				t.Fatalf("corpus value of type %T", value)
			}
		}
		name := filepath.Join(dir, fmt.Sprintf("seed-%02d", i))
		if err := os.WriteFile(name, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
