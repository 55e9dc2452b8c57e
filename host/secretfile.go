package host

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"
)

// defaultSecretFileInterval is how often the host looks at secret_file for
// a new version. The connector reads the file again within seconds of a
// rotation that replaces it. A check every few seconds warns about the new
// file's mode at about that time, for the cost of one stat.
const defaultSecretFileInterval = 5 * time.Second

// secretFileCheck warns when secret_file can be read or written by group or
// others. It warns once per version of the file: at the first check, and
// again only after the file's identity, mode, size or modification time
// changed.
type secretFileCheck struct {
	path string
	// last is the version seen at the previous check, or nil when the file
	// did not exist then.
	last os.FileInfo
}

// check stats the file and reports whether it logged a warning. A file
// that cannot be stat'ed is left to the connector, which fails its
// handshake with the error.
func (c *secretFileCheck) check(logger hclog.Logger) bool {
	info, err := os.Stat(c.path)
	if err != nil {
		c.last = nil
		return false
	}
	if c.last != nil && os.SameFile(c.last, info) && c.last.Mode() == info.Mode() &&
		c.last.Size() == info.Size() && c.last.ModTime().Equal(info.ModTime()) {
		return false
	}
	c.last = info
	perm := info.Mode().Perm()
	if perm&0o077 == 0 {
		return false
	}
	logger.Warn("secret_file can be read or written by group or others; restrict it to the worker's user",
		"secret_file", c.path, "mode", fmt.Sprintf("%04o", perm), "fix", "chmod 600 "+c.path)
	return true
}

// watchSecretFile checks secret_file once and then every
// h.secretFileInterval until the returned function is called, which waits
// for the watcher to end. Without secret_file it does nothing.
func (h *Host) watchSecretFile() (stop func()) {
	path := h.cfg.Coordinator.SecretFile
	if path == "" {
		return func() {}
	}
	check := &secretFileCheck{path: path}
	check.check(h.logger)

	interval := h.secretFileInterval
	if interval <= 0 {
		interval = defaultSecretFileInterval
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		ticker := time.NewTicker(interval)
		defer ticker.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
				check.check(h.logger)
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}
