// Package plugins holds no code. Its subfolders are plugin binaries that
// only tests build: the real reconnection connector served with other
// plugin API versions, and a binary that crashes at start. The end-to-end
// and plugin tests use them to check version negotiation and failed live
// upgrades.
package plugins
