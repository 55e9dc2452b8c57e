//go:build !linux

package host

import "fmt"

// NOTE: only Linux has child subreapers. Elsewhere the processes of a task
// whose executor plugin crashed are re-parented to init and run until they
// end on their own, so a retried attempt may overlap with them.

// becomeSubreaper fails outside Linux.
func becomeSubreaper() error {
	return fmt.Errorf("%w on this system", errSubreaperUnsupported)
}

// killOrphans does nothing outside Linux, where the host never becomes a
// subreaper and has no orphans.
func (h *Host) killOrphans(string) {}

// reapExitedOrphans does nothing outside Linux.
func (h *Host) reapExitedOrphans() {}
