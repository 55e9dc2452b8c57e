package plugin

import (
	"errors"
	"syscall"
)

// sysProcAttr starts a plugin as the leader of its own process group, so
// that killProcessGroup also ends the processes it started, and has the
// kernel send it SIGTERM when the host dies without calling Kill. A
// terminal's Ctrl-C therefore reaches only the host, which stops its
// plugins itself.
//
// NOTE: Linux sends the death signal when the OS thread that forked the
// plugin exits, not only the whole host. The Go runtime ends threads only
// when a goroutine that locked its thread exits, so the plugin's own parent
// watch (see serve.go) backs this up.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}

// killProcessGroup sends SIGKILL to the process group that the plugin
// process pid leads. A group that no longer exists is not an error.
func killProcessGroup(pid int) error {
	if pid <= 1 {
		return nil
	}
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	return nil
}
