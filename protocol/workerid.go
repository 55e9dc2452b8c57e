package protocol

import (
	"fmt"
	"strings"
)

// MaxWorkerIDBytes bounds a worker_id. The coordinator writes the id into
// its store, its logs and the label of a worker's metrics, so it stays
// short.
const MaxWorkerIDBytes = 128

// workerIDPunctuation lists the characters other than ASCII letters and
// digits that a worker_id may contain: enough for host names, FQDNs and
// user@host forms, nothing that breaks a log line or a table.
const workerIDPunctuation = ".-_:@"

// CheckWorkerID returns why a worker_id is invalid, or nil. The
// coordinator rejects a hello with such an id, and the worker's config
// loader and `dtf credentials create` check with this same function.
func CheckWorkerID(id string) error {
	if id == "" {
		return fmt.Errorf("worker_id is empty; set it to a name that is unique in the fleet, such as the host name")
	}
	if len(id) > MaxWorkerIDBytes {
		return fmt.Errorf("worker_id %.20q... has %d bytes, over the limit of %d", id, len(id), MaxWorkerIDBytes)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			strings.IndexByte(workerIDPunctuation, c) >= 0 {
			continue
		}
		character := fmt.Sprintf("the character %q", rune(c))
		if c >= 0x80 {
			character = "a non-ASCII character"
		}
		return fmt.Errorf("worker_id %q has %s at byte %d; use only ASCII letters, digits and %q",
			id, character, i, workerIDPunctuation)
	}
	return nil
}
