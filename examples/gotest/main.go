// Command dtf-exec-gotest is the dtf executor plugin for "gotest" tasks: it
// runs `go test -json` on a module's packages and reports one result per test,
// keeping output only for failures. The worker host launches it through
// go-plugin; run it by hand only with -version.
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
