# Coordinator configuration for `dtf coordinator -config configs/coordinator.hcl`.
# Relative paths are resolved against this file's folder. Durations are
# strings with a unit ("2s", "500ms"); a bare number is an error. env("NAME")
# reads an environment variable and returns "" when it is unset.

# Address of the one listener that serves the worker endpoint /v1/connect,
# the HTTP API and /healthz. Default "127.0.0.1:7070", so a fresh install
# is not reachable from the network. A non-loopback address requires a tls
# block or insecure = true.
listen     = "127.0.0.1:7070"

# With a tls block the listener serves only https and wss. Paths are
# relative to this file; the certificate is read at start.
# tls {
#   cert_file = "server.pem"
#   key_file  = "server-key.pem"
# }

# Without tls the listener speaks plain HTTP and ws. Setting insecure = true
# accepts that tokens and payloads cross the network unencrypted, and is
# required when listen is not a loopback address without tls. Default false.
# insecure = false

# API access: "token" requires a bearer token from `dtf tokens create` on
# every API request except /healthz; "none" leaves the API open. Default
# "token" on a non-loopback listener, "none" on a loopback one.
# api {
#   auth = "token"
# }

# Folder of the SQLite store (coordinator.db). Default "data". Every task,
# attempt and outcome is committed here before the coordinator acknowledges
# it, so a restart loses nothing.
data_dir   = "../data/coordinator"

# One of trace, debug, info, warn, error. Default "info".
log_level  = "info"

# Task types that submissions may use; a task of another type is rejected
# with 400. Default ["command", "gotest"], the executors shipped with dtf.
# "checkpoint" is the example executor that resumes from its checkpoints.
task_types = ["command", "gotest", "checkpoint"]

# Hand-outs of a task before it fails, counting attempts lost with their
# worker, timed out or failed with a retryable error. Attempts that a
# draining worker released do not count. Default 3, range 1 to 100. A
# submission may set its own.
max_attempts = 3

# Delay before a task whose attempt failed is handed out again. It doubles
# with each failed attempt from the base up to the max, and a random half of
# it is jitter, so tasks that failed together do not return together.
# "0s" as the base retries at once. Defaults "1s" (range "0s" to "1h") and
# "5m" (range "0s" to "24h").
# retry_backoff_base = "1s"
# retry_backoff_max  = "5m"

# How long an attempt may run past its task's timeout before the
# coordinator ends it as timed out, sends its worker a CancelTask and
# retries the task or, after its last attempt, ends it as timed_out. The
# worker enforces the timeout itself; this catches a worker whose host
# hangs. Default "30s", range "1s" to "24h".
# task_timeout_grace = "30s"

# Bound on the graceful shutdown: workers are told to retry later, open
# sessions are closed and the store is closed. Default "10s".
shutdown_timeout = "10s"

# Bound on the body of one HTTP request in bytes. Default 4194304 (4 MiB),
# enough for a submission of thousands of tasks; range 1024 to 67108864
# (64 MiB). A larger body gets HTTP 413.
# max_body_bytes = 4194304

# Timeouts of the HTTP server, which serves the API, /healthz and the
# WebSocket upgrade; an upgraded worker connection uses the workers
# timeouts instead. A client has http_read_header_timeout to send its
# headers (default "10s", range "100ms" to "5m"), so one that trickles
# bytes is disconnected, and http_read_timeout for the whole request
# (default "1m", range "1s" to "1h", at least the header timeout). A
# keep-alive connection is closed after http_idle_timeout without a
# request (default "2m", range "1s" to "1h").
# http_read_header_timeout = "10s"
# http_read_timeout        = "1m"
# http_idle_timeout        = "2m"

# Period of the scheduler's tick. Submissions, outcomes and syncs wake the
# scheduler at once; the tick also ends grace periods. Default "1s".
# schedule_interval = "1s"

workers {
  # Shared worker credential, compared in constant time. Empty disables the
  # check, which is allowed only on a loopback listener.
  token              = env("DTF_WORKER_TOKEN")

  # Period of the coordinator's heartbeats to each worker. Default "2s".
  heartbeat_interval = "2s"

  # A session with no frame received for this long is closed. Default "6s",
  # three intervals, so one lost heartbeat does not end a session.
  heartbeat_timeout  = "6s"

  # Grace period a disconnected worker has to come back before its running
  # attempts end as lost and their tasks are queued again. Default "30s".
  # After a coordinator restart it counts from the start.
  reassign_after     = "30s"

  # Time a new connection has to finish its whole handshake: the hello and,
  # with a credential, the SCRAM proof. Default "10s".
  # handshake_timeout = "10s"

  # Bound on one received WebSocket message in bytes, not counting the
  # 32-byte tag of a tagged message. Default 4194304 (4 MiB); executors
  # truncate task output well below it.
  # max_frame_bytes = 4194304

  # Unsequenced frames, such as heartbeat replies, queued for one
  # connection; a worker this far behind is disconnected rather than
  # buffered without bound. Default 256.
  # send_queue = 256

  # Upper bound of the heartbeat timeout, which grows with the measured
  # round-trip time. Default four times heartbeat_timeout.
  # max_heartbeat_timeout = "24s"

  # Task frames kept per session until the worker acknowledges them, in
  # frames and bytes. At three quarters full the session gets no new
  # assignments. Defaults 4096 and 16777216 (16 MiB).
  # replay_frames = 4096
  # replay_bytes  = 16777216

  # How long a session outlives its connection, so that a worker that
  # reconnects resumes it without a state sync. "0s" disables resume.
  # Default "60s".
  # session_ttl = "60s"

  # Token bucket for new and resumed sessions: the rate per second and the
  # burst. A hello over it gets CODE_OVERLOADED with a spread retry hint.
  # Defaults 500 and 1000.
  # max_sessions_per_second = 500
  # session_burst           = 1000

  # Connections in their handshake at once, from the upgrade request to the
  # welcome or reject; further upgrades get HTTP 503 with Retry-After.
  # Default 1024.
  # max_pending_handshakes = 1024

  # DEFLATE for workers that offer it. Default true.
  # compression = true
}
