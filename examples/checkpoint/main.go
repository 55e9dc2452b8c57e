// Command dtf-exec-checkpoint is an example dtf executor plugin for
// "checkpoint" tasks. It counts to a number of steps, one step per
// interval. It saves a checkpoint after each step, or every
// checkpoint_every steps, and when the worker host stops the attempt. A
// retried or reassigned attempt then resumes at the step where the last
// one stopped. Copy it as the starting point of an executor that resumes
// long work. The worker host launches it through go-plugin; run it by hand
// only with -version.
package main

import (
	"fmt"
	"os"

	"github.com/dtf-io/dtf/sdk"
)

func main() {
	// ServeExecutor answers -version and --version itself.
	if len(os.Args) > 1 && os.Args[1] != "-version" && os.Args[1] != "--version" {
		fmt.Fprintf(os.Stderr, "%s takes no arguments other than -version; the dtf worker host "+
			"launches it, so remove args from its plugin block\n", pluginName)
		os.Exit(2)
	}
	sdk.ServeExecutor(NewExecutor())
}
