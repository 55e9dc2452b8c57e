package plugin

import "syscall"

// sysProcAttr keeps a plugin in the host's process group, so a terminal's
// Ctrl-C reaches it too, and has the kernel send it SIGTERM when the host
// dies without calling Kill.
//
// NOTE: Linux sends the death signal when the OS thread that forked the
// plugin exits, not only the whole host. The Go runtime ends threads only
// when a goroutine that locked its thread exits, so the plugin's own parent
// watch (see serve.go) backs this up.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: false, Pdeathsig: syscall.SIGTERM}
}
