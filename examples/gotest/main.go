// Command dtf-exec-gotest is the dtf executor plugin for "gotest" tasks: it
// runs `go test -json` on a module's packages and reports one result per test,
// keeping output only for failures. The worker host launches it through
// go-plugin; run it by hand only with -version.
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
