// Command dtf runs the dtf coordinator and worker host and talks to a
// coordinator's HTTP API; see package cli for the subcommands.
package main

import (
	"os"

	"github.com/dtf-io/dtf/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:]))
}
