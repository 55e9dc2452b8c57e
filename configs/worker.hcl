# Worker host configuration for `dtf worker -config configs/worker.hcl`.
# Relative paths are resolved against this file's folder. Durations are
# strings with a unit ("2s", "500ms"); a bare number is an error.
# The flags -worker-id, -data-dir and -url override the matching settings,
# so several workers can start from this one file.

# Folder of the worker's outbox: task outcomes stay here until the
# coordinator acknowledges them, so none is lost when the worker restarts.
data_dir  = "../data/worker-1"

# Tasks run at once. Default 1. The coordinator assigns no more than this.
slots     = 2

# One of trace, debug, info, warn, error. Default "info". Plugins log at the
# same level.
log_level = "info"

# Free-form labels sent to the coordinator with the worker's hello.
labels    = { os = "linux" }

# How long the host waits on shutdown for the connector to close its session
# and for running tasks to stop. Default "10s".
# shutdown_timeout = "10s"

coordinator {
  # Base URL of the coordinator; ws:// and http:// are equivalent, wss:// and
  # https:// use TLS. The host appends the /v1/connect endpoint itself.
  url       = "ws://127.0.0.1:7070"
  worker_id = "worker-1"
  # Empty when the coordinator checks no token (loopback only). Read from the
  # environment so that the secret stays out of this file.
  token     = env("DTF_WORKER_TOKEN")
}

# The connector plugin owns the connection to the coordinator. Exactly one
# plugin has kind "connector".
plugin "reconnection" {
  kind = "connector"
  path = "../bin/dtf-reconnection"
  # Time until the plugin reports its address to the host. Default "10s".
  start_timeout = "10s"
  # Names of host environment variables the plugin gets; it gets no others.
  env  = []
  # Optional hex SHA-256 of the binary; the host refuses to start a binary
  # with another checksum.
  # sha256 = "..."
  config {                  # passed to the plugin as JSON
    # Time between heartbeats the plugin sends.
    heartbeat_interval = "2s"
    # A connection with no frame received for this long is dead; three
    # intervals tolerate two lost heartbeats.
    heartbeat_timeout  = "6s"
    # First delay before a redial; it grows by backoff_multiplier per failed
    # attempt up to backoff_cap, with full jitter.
    backoff_base       = "200ms"
    backoff_multiplier = 2
    backoff_cap        = "5s"
    # A connection that stays up this long resets the backoff, so a flapping
    # link does not redial in a tight loop.
    healthy_after      = "10s"
  }
}

# Executor plugins run tasks; each serves the task types it declares, and two
# executors must not declare the same type.
plugin "command" {
  kind = "executor"
  path = "../bin/dtf-exec-command"
  env  = ["PATH", "HOME"]
}

plugin "gotest" {
  kind = "executor"
  path = "../bin/dtf-exec-gotest"
  # The go tool needs its own settings to find the module and build cache.
  env  = ["PATH", "HOME", "GOPATH", "GOCACHE", "GOMODCACHE", "GOFLAGS", "GOTOOLCHAIN", "GOPROXY"]
}
