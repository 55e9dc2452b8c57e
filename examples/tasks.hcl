# Example task file for `dtf run -f examples/tasks.hcl` or `dtf submit -f`.
# Each block is one task; the label is its name.

task "hello" {
  type    = "command"
  payload = { argv = ["sh", "-c", "echo hello from $(hostname)"] }
  timeout = "1m"
}

task "resume-demo" {
  type    = "checkpoint"
  # Counts to 100, one step per 100 ms, and saves a checkpoint every 10
  # steps. Kill the worker while it runs: the next attempt starts after the
  # newest stored checkpoint.
  payload = { steps = 100, interval_ms = 100, checkpoint_every = 10 }
  timeout      = "5m"
  max_attempts = 3
}

task "protocol-tests" {
  type    = "gotest"
  # dir is resolved on the worker, so give an absolute path or one relative
  # to the worker's working directory.
  payload = { dir = ".", packages = ["./protocol/..."], args = ["-count=1"] }
  timeout = "5m"
  # Attempts before the task fails. An attempt counts when its worker is
  # lost, when it runs past timeout plus the coordinator's
  # task_timeout_grace, or when its executor crashes; an attempt that a
  # draining worker gives back does not count.
  max_attempts = 2
  # Worker labels the task requires: it runs only on a worker whose labels
  # (labels in worker.hcl) include each of these with the same value, and
  # `dtf tasks` says which one no connected worker has.
  # labels = { os = "linux", arch = "amd64" }
}
