# Example task file for `dtf run -f examples/tasks.hcl` or `dtf submit -f`.
# Each block is one task; the label is its name.

task "hello" {
  type    = "command"
  payload = { argv = ["sh", "-c", "echo hello from $(hostname)"] }
  timeout = "1m"
}

task "protocol-tests" {
  type    = "gotest"
  # dir is resolved on the worker, so give an absolute path or one relative
  # to the worker's working directory.
  payload = { dir = ".", packages = ["./protocol/..."], args = ["-count=1"] }
  timeout = "5m"
  max_attempts = 2
}
