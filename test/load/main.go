// Command dtf-load puts load on a dtf coordinator from one process: it runs
// many simulated workers, each a real WebSocket client speaking the wire
// protocol with protocol.Codec and protocol.Window, and measures what the
// coordinator does under that load. It prints a result block for
// docs/benchmarks.md.
//
// Modes:
//
//	idle        connect the workers and hold; with -coordinator-pid, report
//	            the coordinator's resident memory per idle worker
//	storm       connect the workers, wait for a coordinator restart (run by
//	            -restart-cmd or by the user) and measure the reconnection
//	throughput  submit no-op command tasks through the HTTP API, let the
//	            simulated workers complete them, and measure tasks/s
//	host-rss    start one real worker host (dtf-worker, or dtf worker with -host dtf)
//	            with its plugins and report the resident memory of each process
//	dashboard   load the coordinator's dashboard in headless Chromium,
//	            connect the workers (none with -workers 0) and report how
//	            long a trivial evaluate on the page takes meanwhile
//
// Every run is bounded by -timeout and stops by itself. Aim it only at a
// coordinator you started yourself.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/dtf-io/dtf/protocol"
)

// options are the command-line settings of one run.
type options struct {
	mode           string
	workers        int
	addr           string
	token          string
	duration       time.Duration
	timeout        time.Duration
	connectRate    int
	coordinatorPID int
	restartCmd     string
	tasks          int
	batch          int
	workerSettings workerSettings
	bin            string
	chromium       string
	dashboardToken string
	host           string
	probeInterval  time.Duration
}

func parseOptions(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("dtf-load", flag.ContinueOnError)
	fs.StringVar(&o.mode, "mode", "idle", "idle, storm, throughput, host-rss or dashboard")
	fs.IntVar(&o.workers, "workers", 100, "number of simulated workers; dashboard accepts 0")
	fs.StringVar(&o.addr, "addr", "127.0.0.1:7070", "coordinator host:port")
	fs.StringVar(&o.token, "token", "", "the coordinator's worker token")
	fs.DurationVar(&o.duration, "duration", 30*time.Second,
		"idle and host-rss: time to hold before measuring; storm and throughput: bound on the measured phase; "+
			"dashboard: time to probe the page from the fleet's start")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Minute, "bound on the whole run, connecting included")
	fs.IntVar(&o.connectRate, "connect-rate", 1000, "first connections per second while the fleet starts")
	fs.IntVar(&o.coordinatorPID, "coordinator-pid", 0,
		"idle: pid of the coordinator whose VmRSS is read before and after connecting")
	fs.StringVar(&o.restartCmd, "restart-cmd", "",
		"storm: shell command that restarts the coordinator; empty waits for a restart by the user")
	fs.IntVar(&o.tasks, "tasks", 10000, "throughput: number of no-op tasks to submit")
	fs.IntVar(&o.batch, "batch", 500, "throughput: tasks per submit request")
	fs.StringVar(&o.bin, "bin", "bin", "host-rss: folder of the dtf binaries")
	fs.StringVar(&o.host, "host", "dtf-worker",
		"host-rss: program of the worker host, dtf-worker (lean) or dtf (the whole command, run as dtf worker)")
	fs.StringVar(&o.chromium, "chromium", "", "dashboard: Chromium binary; empty looks up chromium or chromium-browser in PATH")
	fs.StringVar(&o.dashboardToken, "dashboard-token", "",
		"dashboard: API token with the read role, typed into the page's token form when api.auth is token")
	fs.DurationVar(&o.probeInterval, "probe-interval", 100*time.Millisecond,
		"dashboard: pause between the end of one evaluate call and the start of the next")

	s := &o.workerSettings
	fs.StringVar(&s.taskType, "task-type", "command", "task type the workers declare and throughput submits")
	fs.IntVar(&s.slots, "slots", 1, "slots each simulated worker declares")
	fs.BoolVar(&s.compression, "compression", true, "offer DEFLATE in hello")
	fs.DurationVar(&s.handshakeTimeout, "handshake-timeout", 10*time.Second, "bound on dial plus welcome")
	fs.DurationVar(&s.backoffBase, "backoff-base", 200*time.Millisecond, "ceiling of the first reconnection delay")
	fs.DurationVar(&s.backoffCap, "backoff-cap", 5*time.Second, "maximum ceiling of a reconnection delay")
	fs.DurationVar(&s.healthyAfter, "healthy-after", 10*time.Second,
		"session uptime after which the backoff starts again from backoff-base")
	fs.IntVar(&s.replayFrames, "replay-frames", protocol.DefaultReplayFrames,
		"unacknowledged task frames each worker keeps for replay")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}

	switch o.mode {
	case "idle", "storm", "throughput", "host-rss", "dashboard":
	default:
		return nil, fmt.Errorf("invalid -mode %q; use idle, storm, throughput, host-rss or dashboard", o.mode)
	}
	if o.host != "dtf-worker" && o.host != "dtf" {
		return nil, fmt.Errorf("invalid -host %q; use dtf-worker or dtf", o.host)
	}
	if o.workers < 0 || (o.workers == 0 && o.mode != "dashboard") {
		return nil, fmt.Errorf("invalid -workers %d: must be at least 1 (0 only with -mode dashboard)", o.workers)
	}
	if o.connectRate < 1 || o.tasks < 1 || o.batch < 1 || s.slots < 1 {
		return nil, errors.New("-connect-rate, -tasks, -batch and -slots must be at least 1")
	}
	if o.duration <= 0 || o.timeout <= 0 || o.probeInterval <= 0 {
		return nil, errors.New("-duration, -timeout and -probe-interval must be positive")
	}
	if s.backoffBase <= 0 || s.backoffCap < s.backoffBase {
		return nil, fmt.Errorf("invalid backoff: -backoff-base %s must be positive and at most -backoff-cap %s",
			s.backoffBase, s.backoffCap)
	}
	url, err := protocol.ConnectURL("ws://" + o.addr)
	if err != nil {
		return nil, err
	}
	s.url = url
	s.token = o.token
	return o, nil
}

func main() {
	o, err := parseOptions(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "dtf-load:", err)
		os.Exit(2)
	}

	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	r := newReport(o, strings.Join(os.Args, " "))
	switch o.mode {
	case "idle":
		err = runIdle(ctx, o, r)
	case "storm":
		err = runStorm(ctx, o, r)
	case "throughput":
		err = runThroughput(ctx, o, r)
	case "host-rss":
		err = runHostRSS(ctx, o, r)
	case "dashboard":
		err = runDashboard(ctx, o, r)
	}
	r.print(os.Stdout, err)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dtf-load:", err)
		os.Exit(1)
	}
}
