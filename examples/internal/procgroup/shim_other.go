//go:build unix && !linux

package procgroup

import (
	"os"
	"os/exec"
	"syscall"
	"time"
)

// shimStatus is empty where there is no child subreaper: the task runs
// directly, and a process that leaves its group escapes the kill.
type shimStatus struct{}

func wrap(*exec.Cmd, time.Duration) (*shimStatus, error) { return nil, nil }

func (s *shimStatus) started() {}

func (s *shimStatus) abandon() {}

func (s *shimStatus) result(state *os.ProcessState) (syscall.WaitStatus, error) {
	return waitStatus(state), nil
}

func (s *shimStatus) graceLimit(grace time.Duration) time.Duration { return grace }
