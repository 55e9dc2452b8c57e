// Package dirlock holds an exclusive lock on a process's data directory,
// so that two processes never share one.
package dirlock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
