//go:build !linux

package plugin

import "syscall"

// sysProcAttr has no death signal outside Linux; the plugin's parent watch
// ends it after the host dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{}
}

// killProcessGroup does nothing outside Linux, where the plugin shares the
// host's process group.
//
// NOTE: a plugin's child process that keeps its stdout open can therefore
// delay a failed launch or Kill there until the child exits.
func killProcessGroup(int) error { return nil }
