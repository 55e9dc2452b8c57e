package coordinator

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockFile is the file in data_dir that the running coordinator holds an
// exclusive lock on. Two coordinators on one SQLite store would each
// requeue the other's tasks as abandoned and run them twice.
const lockFile = "coordinator.lock"

// lockDataDir takes the data_dir lock without waiting. The kernel releases
// it when the process exits, even after SIGKILL.
func lockDataDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open lock file %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("data_dir %s is in use by another coordinator; stop that coordinator or "+
				"give this one its own data_dir, because each coordinator needs its own SQLite store and "+
				"dtf has no store yet that several coordinators can share", dir)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}
