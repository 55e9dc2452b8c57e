// Command crashing is a plugin binary that crashes before it serves the
// go-plugin handshake, as a broken build of a plugin would. Tests use it
// to check that a failed live upgrade keeps the running plugin.
package main

func main() {
	panic("crashing test plugin: crashed at start on purpose")
}
