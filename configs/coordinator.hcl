# Coordinator configuration for `dtf coordinator -config configs/coordinator.hcl`.
# Relative paths are resolved against this file's folder. Durations are
# strings with a unit ("2s", "500ms"); a bare number is an error. env("NAME")
# reads an environment variable and returns "" when it is unset.

# Address of the one listener that serves the worker endpoint /v1/connect,
# the HTTP API and /healthz. Default "127.0.0.1:7070". A non-loopback
# address requires workers.token.
listen     = "127.0.0.1:7070"

# Folder of the SQLite store (coordinator.db). Default "data". Every task,
# attempt and outcome is committed here before the coordinator acknowledges
# it, so a restart loses nothing.
data_dir   = "../data/coordinator"

# One of trace, debug, info, warn, error. Default "info".
log_level  = "info"

# Task types that submissions may use; a task of another type is rejected
# with 400. Default ["command", "gotest"], the executors shipped with dtf.
task_types = ["command", "gotest"]

# Hand-outs of a task before it fails, counting attempts lost with their
# worker. Default 3, range 1 to 100. A submission may set its own.
max_attempts = 3

# Bound on the graceful shutdown: workers are told to retry later, open
# sessions are closed and the store is closed. Default "10s".
shutdown_timeout = "10s"

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

  # Wait for the Hello frame of a new connection. Default "10s".
  # handshake_timeout = "10s"

  # Bound on one received WebSocket message in bytes. Default 4194304
  # (4 MiB); executors truncate task output well below it.
  # max_frame_bytes = 4194304

  # Frames queued for one connection; a worker this far behind is
  # disconnected rather than buffered without bound. Default 256.
  # send_queue = 256
}
