// Command dtf-exec-command is the dtf executor plugin for "command" tasks: it
// runs one program per task, without a shell, and reports its exit code and
// the tail of its output. The worker host launches it through go-plugin;
// run it by hand only with -version.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/dtf-io/dtf/sdk"
)

func main() {
	showVersion := flag.Bool("version", false, "print the plugin name and version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Printf("%s %s\n", pluginName, version)
		return
	}
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "%s takes no arguments; the dtf worker host launches it\n", pluginName)
		os.Exit(2)
	}

	sdk.ServeExecutor(NewExecutor())
}
