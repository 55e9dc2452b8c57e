package exporter

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dtf-io/dtf/sdk"
)

// Defaults of the plugin's config block. Port 9464 is also the default
// port of OpenTelemetry's Prometheus exporter (OpenTelemetry JS SDK,
// ExperimentalPrometheusMetricExporterConfigModel), so operators who
// scrape OpenTelemetry services know it.
const (
	DefaultListen          = "127.0.0.1:9464"
	DefaultSummaryInterval = 15 * time.Second
)

// Bounds of summary_interval. A summary is one small frame, but a worker
// that sends several per second only adds load on the coordinator. One
// that sends less than hourly leaves the coordinator with a stale view.
const (
	minSummaryInterval = 100 * time.Millisecond
	maxSummaryInterval = time.Hour
)

// Config is the validated config block of the metrics plugin.
type Config struct {
	// Listen is the host:port of the Prometheus endpoint, GET /metrics.
	Listen string
	// Insecure allows a Listen address that is not a loopback address.
	// The endpoint has neither TLS nor authentication, so anyone who can
	// reach it reads the worker's metrics.
	Insecure bool
	// SummaryInterval is how often the host calls Summary and sends the
	// result to the coordinator.
	SummaryInterval time.Duration
}

// settings lists the settings of the config block, for the message about
// an unknown one.
const settings = "listen, insecure, summary_interval"

// ConfigError lists the invalid settings of a config block, each as a
// problem whose path names the setting.
type ConfigError struct {
	Problems []sdk.ConfigProblem
}

func (e *ConfigError) Error() string {
	parts := make([]string, 0, len(e.Problems))
	for _, problem := range e.Problems {
		text := problem.Detail
		if problem.Path != "" {
			text = problem.Path + ": " + text
		}
		parts = append(parts, text)
	}
	return "invalid metrics plugin config: " + strings.Join(parts, "; ")
}

// ParseConfig decodes and checks the plugin's config block, as JSON. An
// empty input selects every default. An invalid config returns a
// *ConfigError with a problem for each invalid setting.
func ParseConfig(data []byte) (*Config, error) {
	cfg := &Config{Listen: DefaultListen, SummaryInterval: DefaultSummaryInterval}
	if len(bytes.TrimSpace(data)) == 0 {
		return cfg, nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return nil, &ConfigError{Problems: []sdk.ConfigProblem{{
			Summary: "Invalid plugin config",
			Detail:  fmt.Sprintf("the config is not a JSON object (%v); valid settings are %s", err, settings),
		}}}
	}

	var problems []sdk.ConfigProblem
	listenValid := true
	for _, name := range slices.Sorted(maps.Keys(fields)) {
		problem := decodeSetting(cfg, name, fields[name])
		if problem != nil {
			problems = append(problems, *problem)
			listenValid = listenValid && name != "listen" && name != "insecure"
		}
	}
	if listenValid {
		if err := checkListen(cfg.Listen, cfg.Insecure); err != nil {
			problems = append(problems, sdk.ConfigProblem{
				Path: "listen", Summary: "Invalid listen address", Detail: err.Error(),
			})
		}
	}
	if len(problems) > 0 {
		return nil, &ConfigError{Problems: problems}
	}
	return cfg, nil
}

// decodeSetting decodes one setting into cfg and returns its problem, or
// nil when it is valid.
func decodeSetting(cfg *Config, name string, raw json.RawMessage) *sdk.ConfigProblem {
	invalid := func(summary, detail string) *sdk.ConfigProblem {
		return &sdk.ConfigProblem{Path: name, Summary: summary, Detail: detail}
	}
	switch name {
	case "listen":
		if err := json.Unmarshal(raw, &cfg.Listen); err != nil {
			return invalid("Invalid listen address", fmt.Sprintf("listen must be a string such as %q", DefaultListen))
		}
		cfg.Listen = strings.TrimSpace(cfg.Listen)
	case "insecure":
		if err := json.Unmarshal(raw, &cfg.Insecure); err != nil {
			return invalid("Invalid value", fmt.Sprintf("insecure must be true or false, got %s", raw))
		}
	case "summary_interval":
		var text string
		if err := json.Unmarshal(raw, &text); err != nil {
			return invalid("Invalid duration", fmt.Sprintf("summary_interval must be a string with a unit, "+
				"such as \"15s\", got %s", raw))
		}
		interval, err := parseInterval(text)
		if err != nil {
			return invalid("Invalid duration", err.Error())
		}
		cfg.SummaryInterval = interval
	default:
		return invalid("Unsupported argument",
			fmt.Sprintf("the metrics plugin has no setting %q; valid settings are %s", name, settings))
	}
	return nil
}

// parseInterval parses summary_interval and checks its bounds.
func parseInterval(text string) (time.Duration, error) {
	interval, err := time.ParseDuration(strings.TrimSpace(text))
	if err != nil {
		return 0, fmt.Errorf("summary_interval %q is not a duration; write a number with a unit, "+
			"such as \"15s\" or \"1m\"", text)
	}
	if interval < minSummaryInterval || interval > maxSummaryInterval {
		return 0, fmt.Errorf("summary_interval %q is out of range; use %s to %s, default %s",
			text, minSummaryInterval, maxSummaryInterval, DefaultSummaryInterval)
	}
	return interval, nil
}

// checkListen checks that listen is host:port and, unless insecure is
// set, that it is a loopback address.
func checkListen(listen string, insecure bool) error {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("listen %q is not host:port, for example %q", listen, DefaultListen)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("listen %q has an invalid port %q; use a port from 0 to 65535, for example %q",
			listen, port, DefaultListen)
	}
	if insecure || isLoopback(host) {
		return nil
	}
	return fmt.Errorf("listen %q is not a loopback address, and the metrics endpoint has neither TLS "+
		"nor authentication; listen on 127.0.0.1:%s and put a proxy in front of it, or set "+
		"insecure = true to serve it to other machines", listen, port)
}

// isLoopback reports whether host names only loopback addresses. An empty
// host listens on every interface.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
