package host

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"

	wirepb "github.com/dtf-io/dtf/protocol/pb"
)

// Outbox keeps each task outcome in its own file until the coordinator
// acknowledges it, so that an outcome survives a crash or restart of the
// host. Files are written atomically: a temporary file is synced, renamed
// over the final name and the folder is synced, so after a crash a file is
// either complete or absent.
type Outbox struct {
	dir string
}

const (
	outboxSuffix  = ".json"
	tempPrefix    = ".tmp-"
	corruptSuffix = ".corrupt"
)

// OpenOutbox creates dir if needed and returns the outbox in it.
func OpenOutbox(dir string) (*Outbox, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create outbox %s: %w; check data_dir in the worker config", dir, err)
	}
	return &Outbox{dir: dir}, nil
}

// Dir returns the outbox folder.
func (o *Outbox) Dir() string { return o.dir }

var safeTaskID = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,128}$`)

// fileName returns <task>-<attempt>.json. A task id with characters that
// are unsafe in a file name is hex-encoded behind an "x" prefix; Load reads
// the ref from the file's content, so the name only has to be unique.
func fileName(ref taskRef) string {
	id := ref.TaskID
	if !safeTaskID.MatchString(id) || strings.HasPrefix(id, ".") {
		id = "x" + hex.EncodeToString([]byte(id))
	}
	return fmt.Sprintf("%s-%d%s", id, ref.Attempt, outboxSuffix)
}

// Put stores outcome, replacing an earlier outcome of the same attempt.
func (o *Outbox) Put(outcome *wirepb.TaskOutcome) error {
	ref := refOf(outcome.GetRef())
	data, err := protojson.Marshal(outcome)
	if err != nil {
		return fmt.Errorf("encode outcome of %s: %w", ref, err)
	}
	tmp, err := os.CreateTemp(o.dir, tempPrefix+"*")
	if err != nil {
		return fmt.Errorf("write outcome of %s: %w", ref, err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly after the rename

	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if closeErr := tmp.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		return fmt.Errorf("write outcome of %s to %s: %w", ref, tmp.Name(), err)
	}
	final := filepath.Join(o.dir, fileName(ref))
	if err := os.Rename(tmp.Name(), final); err != nil {
		return fmt.Errorf("write outcome of %s: %w", ref, err)
	}
	return o.syncDir()
}

// Delete removes the outcome of ref. A missing file is not an error, so a
// repeated acknowledgement is harmless.
func (o *Outbox) Delete(ref taskRef) error {
	err := os.Remove(filepath.Join(o.dir, fileName(ref)))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete outcome of %s: %w", ref, err)
	}
	return o.syncDir()
}

// Load returns every stored outcome. A file that cannot be decoded is
// renamed with a ".corrupt" suffix, so it stays for inspection but is not
// sent, and its error is returned in problems. Load also removes temporary
// files left by an interrupted Put.
func (o *Outbox) Load() (outcomes []*wirepb.TaskOutcome, problems []error, err error) {
	problems, err = o.Walk(func(_ string, outcome *wirepb.TaskOutcome) {
		outcomes = append(outcomes, outcome)
	})
	return outcomes, problems, err
}

// Walk calls fn with the file name and content of each stored outcome, one
// file at a time, so the caller need not keep every outcome in memory. It
// sets corrupt files aside and removes temporary files as Load does.
func (o *Outbox) Walk(fn func(name string, outcome *wirepb.TaskOutcome)) (problems []error, err error) {
	entries, err := os.ReadDir(o.dir)
	if err != nil {
		return nil, fmt.Errorf("read outbox %s: %w", o.dir, err)
	}
	for _, entry := range entries {
		name := entry.Name()
		path := filepath.Join(o.dir, name)
		switch {
		case entry.IsDir():
			continue
		case strings.HasPrefix(name, tempPrefix):
			_ = os.Remove(path)
			continue
		case !strings.HasSuffix(name, outboxSuffix):
			continue
		}
		outcome, err := readOutcome(path)
		if err != nil {
			problems = append(problems, err)
			_ = os.Rename(path, path+corruptSuffix)
			continue
		}
		fn(name, outcome)
	}
	return problems, nil
}

// errCorruptOutcome marks an outbox file that was read but does not
// contain the expected outcome.
var errCorruptOutcome = errors.New("corrupt outcome file")

// Get reads the stored outcome of ref. The error wraps os.ErrNotExist when
// the outbox has no file for ref, and errCorruptOutcome when the file does
// not decode to an outcome of ref.
func (o *Outbox) Get(ref taskRef) (*wirepb.TaskOutcome, error) {
	path := filepath.Join(o.dir, fileName(ref))
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read outcome %s: %w", path, err)
	}
	outcome, err := decodeOutcome(path, data)
	if err == nil && refOf(outcome.GetRef()) != ref {
		err = fmt.Errorf("decode outcome %s: it contains %s, expected %s", path, refOf(outcome.GetRef()), ref)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errCorruptOutcome, err)
	}
	return outcome, nil
}

// SetAside renames the file of ref with a ".corrupt" suffix, as Load does
// with a file that does not decode, so it stays for inspection.
func (o *Outbox) SetAside(ref taskRef) error {
	path := filepath.Join(o.dir, fileName(ref))
	if err := os.Rename(path, path+corruptSuffix); err != nil {
		return fmt.Errorf("set aside outcome of %s: %w", ref, err)
	}
	return nil
}

func readOutcome(path string) (*wirepb.TaskOutcome, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read outcome %s: %w", path, err)
	}
	return decodeOutcome(path, data)
}

func decodeOutcome(path string, data []byte) (*wirepb.TaskOutcome, error) {
	outcome := &wirepb.TaskOutcome{}
	if err := protojson.Unmarshal(data, outcome); err != nil {
		return nil, fmt.Errorf("decode outcome %s: %w", path, err)
	}
	if outcome.GetRef().GetTaskId() == "" || outcome.GetRef().GetAttempt() == 0 {
		return nil, fmt.Errorf("decode outcome %s: missing task id or attempt", path)
	}
	return outcome, nil
}

// syncDir makes a rename or removal in the folder durable.
func (o *Outbox) syncDir() error {
	dir, err := os.Open(o.dir)
	if err != nil {
		return fmt.Errorf("sync outbox %s: %w", o.dir, err)
	}
	defer dir.Close()
	if err := dir.Sync(); err != nil {
		return fmt.Errorf("sync outbox %s: %w", o.dir, err)
	}
	return nil
}

// taskRef names one attempt of a task; the attempt is the fencing token.
type taskRef struct {
	TaskID  string
	Attempt uint32
}

func refOf(ref *wirepb.TaskRef) taskRef {
	return taskRef{TaskID: ref.GetTaskId(), Attempt: ref.GetAttempt()}
}

func (r taskRef) proto() *wirepb.TaskRef {
	return &wirepb.TaskRef{TaskId: r.TaskID, Attempt: r.Attempt}
}

func (r taskRef) String() string {
	return fmt.Sprintf("task %s attempt %d", r.TaskID, r.Attempt)
}
