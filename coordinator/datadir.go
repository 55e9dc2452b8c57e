package coordinator

import (
	"errors"
	"fmt"
	"os"

	"github.com/dtf-io/dtf/internal/dirlock"
)

// lockFile is the file in data_dir that the running coordinator holds an
// exclusive lock on. Two coordinators on one SQLite store would each
// requeue the other's tasks as abandoned and run them twice.
const lockFile = "coordinator.lock"

// lockDataDir takes the data_dir lock without waiting.
func lockDataDir(dir string) (*os.File, error) {
	f, err := dirlock.Lock(dir, lockFile)
	if errors.Is(err, dirlock.ErrInUse) {
		return nil, fmt.Errorf("data_dir %s is in use by another coordinator; stop that coordinator or "+
			"give this one its own data_dir, because each coordinator needs its own SQLite store and "+
			"dtf has no store yet that several coordinators can share", dir)
	}
	return f, err
}
