package plugin

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	goplugin "github.com/hashicorp/go-plugin"

	"github.com/dtf-io/dtf/plugin/pb"
)

// versionInfoTimeout bounds the Info call that -version makes on the
// plugin's own implementation, which runs in the same process.
const versionInfoTimeout = 5 * time.Second

// VersionRequested reports whether args, a plugin binary's arguments after
// its name, ask for its version line: the first argument is -version or
// --version, the two spellings that Go's flag package accepts.
func VersionRequested(args []string) bool {
	return len(args) > 0 && (args[0] == "-version" || args[0] == "--version")
}

// VersionLine formats the line that a plugin binary prints for -version:
// its name and release version, its kind, the plugin API versions it
// serves and optional details, for example
// "dtf-exec-hello 0.1.0 (plugin kind executor, plugin API version 1)".
// Release tooling may parse it, so the order of its parts is fixed.
func VersionLine(name, version, kind string, apiVersions []int, details ...string) string {
	if version == "" {
		version = "unknown"
	}
	numbers := make([]string, len(apiVersions))
	for i, v := range apiVersions {
		numbers[i] = strconv.Itoa(v)
	}
	label := "plugin API version "
	if len(numbers) > 1 {
		label = "plugin API versions "
	}
	parts := append([]string{"plugin kind " + kind, label + strings.Join(numbers, ", ")}, details...)
	return fmt.Sprintf("%s %s (%s)", name, version, strings.Join(parts, ", "))
}

// apiVersions returns the sorted keys of a VersionedPlugins map.
func apiVersions(versions map[int]goplugin.PluginSet) []int {
	keys := make([]int, 0, len(versions))
	for v := range versions {
		keys = append(keys, v)
	}
	slices.Sort(keys)
	return keys
}

// printVersion writes the version line of the plugin that serve was asked
// to serve and returns the process's exit code. It runs without go-plugin,
// so a binary started by hand, without the magic cookie, can answer it.
func printVersion(stdout, stderr io.Writer, kind string, p goplugin.Plugin,
	versions map[int]goplugin.PluginSet, details []string,
) int {
	ctx, cancel := context.WithTimeout(context.Background(), versionInfoTimeout)
	defer cancel()
	info, err := pluginInfo(ctx, p)
	if err != nil {
		fmt.Fprintf(stderr, "read the %s plugin's info for -version: %v\n", kind, err)
		return 1
	}
	fmt.Fprintln(stdout, VersionLine(info.GetName(), info.GetVersion(), kind, apiVersions(versions), details...))
	return 0
}

// pluginInfo calls the Info method of the implementation that p serves.
func pluginInfo(ctx context.Context, p goplugin.Plugin) (*pb.PluginInfo, error) {
	switch p := p.(type) {
	case *ExecutorPlugin:
		return p.Impl.Info(ctx, &pb.Empty{})
	case *ConnectorPlugin:
		return p.Impl.Info(ctx, &pb.Empty{})
	case *MetricsPlugin:
		return p.Impl.Info(ctx, &pb.Empty{})
	default:
		return nil, fmt.Errorf("plugin type %T has no Info method", p)
	}
}

// exitForVersion prints the version line and exits when the process's
// arguments ask for it.
func exitForVersion(kind string, p goplugin.Plugin, versions map[int]goplugin.PluginSet, details []string) {
	if VersionRequested(os.Args[1:]) {
		os.Exit(printVersion(os.Stdout, os.Stderr, kind, p, versions, details))
	}
}
