// Package dirlock holds an exclusive lock on a process's data directory,
// so that two processes never share one, and finds the process that holds
// it, for commands that signal a running worker.
package dirlock

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ErrInUse is returned by Lock when another process holds the lock.
var ErrInUse = errors.New("in use by another process")

// Lock creates dir/name if needed and takes an exclusive lock on it
// without waiting. The kernel releases the lock when the process exits,
// even after SIGKILL; Close on the returned file releases it earlier.
func Lock(dir, name string) (*os.File, error) {
	path := filepath.Join(dir, name)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open lock file %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: %w", path, ErrInUse)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}

// ErrNotHeld is returned by Holder when no process holds the lock.
var ErrNotHeld = errors.New("not locked by any process")

// WritePID replaces the content of a lock file that Lock returned with the
// calling process's id, so that Holder can find the process.
func WritePID(f *os.File) error {
	if err := f.Truncate(0); err != nil {
		return fmt.Errorf("write pid to lock file %s: %w", f.Name(), err)
	}
	if _, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		return fmt.Errorf("write pid to lock file %s: %w", f.Name(), err)
	}
	return nil
}

// Holder returns the id of the process that holds the lock on dir/name, as
// written by WritePID. It returns ErrNotHeld when no process holds the
// lock, which also covers a pid left in the file by a process that exited,
// because the kernel released that process's lock.
func Holder(dir, name string) (int, error) {
	path := filepath.Join(dir, name)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("%s: %w", path, ErrNotHeld)
	}
	if err != nil {
		return 0, fmt.Errorf("open lock file %s: %w", path, err)
	}
	defer f.Close()
	// A shared lock succeeds only while no process holds the exclusive one.
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
	if err == nil {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		return 0, fmt.Errorf("%s: %w", path, ErrNotHeld)
	}
	if !errors.Is(err, syscall.EWOULDBLOCK) {
		return 0, fmt.Errorf("test lock %s: %w", path, err)
	}
	data, err := io.ReadAll(io.LimitReader(f, 32))
	if err != nil {
		return 0, fmt.Errorf("read lock file %s: %w", path, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("lock file %s is held but contains no process id (%q); "+
			"the process that holds it predates pid files", path, strings.TrimSpace(string(data)))
	}
	return pid, nil
}
