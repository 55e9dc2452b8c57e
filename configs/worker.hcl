# Worker host configuration for `dtf-worker -config configs/worker.hcl`
# (or `dtf worker -config configs/worker.hcl`).
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

# Free-form labels sent to the coordinator with the worker's hello. The
# worker adds os and arch from its own build unless they are set here.
labels    = { pool = "default" }

# How long the host waits on shutdown for running tasks to stop, and at the
# end of a drain for released tasks and then for the coordinator's
# acknowledgements. Default "10s".
# shutdown_timeout = "10s"

# After SIGTERM the worker drains: it takes no new tasks and lets running
# ones finish for this long, then releases the rest to the coordinator,
# which queues them again without counting the attempt. A second SIGTERM or
# a SIGINT stops it at once. Default "20s", at most "24h".
# drain_timeout = "20s"

# A crashed plugin is launched again after a random delay of up to
# restart_backoff_base, doubled per further crash up to restart_backoff_cap.
# By default the worker never gives up on a plugin. Defaults "500ms" and
# "30s".
# restart_backoff_base = "500ms"
# restart_backoff_cap  = "30s"
# A plugin block may override both, and set policy = "never" to leave a
# crashed plugin down, in its own restart block (see plugin "command").

# Folder of the plugin binaries of blocks without path: an executor NAME
# runs dtf-exec-NAME, and other kinds run dtf-NAME. Default: the folder of
# the running dtf-worker or dtf binary (symbolic links resolved), which is
# bin/ after make build.
# plugin_dir = "../bin"

# `dtf-worker validate -config configs/worker.hcl` checks this file, and each
# plugin's config block, without starting the worker.

coordinator {
  # Base URL of the coordinator; ws:// and http:// are equivalent, wss:// and
  # https:// use TLS. The host appends the /v1/connect endpoint itself.
  url       = "ws://127.0.0.1:7070"
  worker_id = "worker-1"
  # Shared token of the insecure token mode: empty when the coordinator
  # checks no token (loopback only). Read from the environment so that the
  # secret stays out of this file.
  token     = env("DTF_WORKER_TOKEN")
  # With a credential of its own from `dtf credentials create`, the worker
  # logs in with SCRAM and every message is tagged. Set one of these
  # instead of token; secret_file is read again before every handshake.
  # secret      = env("DTF_WORKER_SECRET")
  # secret_file = "worker-1.secret"
  # PEM file of the CA that signed a wss:// coordinator's certificate;
  # without it the system roots are used.
  # ca_file = "ca.pem"
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
  # How the host handles a crash of this plugin. policy "always" (the
  # default) launches it again with the backoff below; "never" leaves it
  # down, its tasks fail as retryable, and for the connector the worker
  # stops. Unset backoff settings take restart_backoff_base and _cap.
  # restart {
  #   policy       = "always"
  #   backoff_base = "500ms"
  #   backoff_cap  = "30s"
  # }
}

plugin "gotest" {
  kind = "executor"
  path = "../bin/dtf-exec-gotest"
  # The go tool needs its own settings to find the module and build cache.
  env  = ["PATH", "HOME", "GOPATH", "GOCACHE", "GOMODCACHE", "GOFLAGS", "GOTOOLCHAIN", "GOPROXY"]
}

# An example executor that counts to payload.steps and saves a checkpoint
# after each step, so a retried attempt resumes where the last one stopped.
plugin "checkpoint" {
  kind = "executor"
  path = "../bin/dtf-exec-checkpoint"
}

# Metrics plugins receive the host's events: connection states, reconnects
# and outages, round-trip times, queue depths, frames and bytes, task
# outcomes and plugin restarts. Any number may be loaded; a slow or crashed
# one only loses events and never slows the worker. The first one in this
# file also provides the summary that the worker sends to the coordinator.
# plugin "metrics" {
#   kind = "metrics"
#   path = "../bin/dtf-metrics"
#   config {
#     # Address of the Prometheus endpoint, GET /metrics. Default
#     # "127.0.0.1:9464". A non-loopback address also needs insecure = true,
#     # because the endpoint has neither TLS nor authentication.
#     listen           = "127.0.0.1:9464"
#     # insecure       = false
#     # How often the worker sends its summary to the coordinator. Default
#     # "15s", 100ms to 1h.
#     summary_interval = "15s"
#   }
# }
