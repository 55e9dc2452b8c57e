//go:build !linux

package plugin

import "syscall"

// sysProcAttr has no death signal outside Linux; the plugin's parent watch
// ends it after the host dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{}
}
