package sdk

import (
	"context"
	"encoding/json"
	"errors"
)

// ErrInvalidFrame marks an error of Connector.Send or SendBatch for a
// frame that the connector rejects as it is, such as one over the wire
// protocol's size limit. The host gets the gRPC code INVALID_ARGUMENT and
// does not retry the frame in the same session.
var ErrInvalidFrame = errors.New("invalid frame")

// Connector owns the worker's connection to the coordinator. The shipped
// reconnection plugin is one; implement this interface to replace it, and
// serve it with ServeConnector. The connector speaks the wire protocol of
// the protocol package: frames between it and the host are marshalled
// dtf.wire.v1.Frame messages.
//
// Errors of Send, SendBatch, Stop and Export that wrap ErrUnavailable
// reach the host as UNAVAILABLE, those that wrap ErrInvalidFrame as
// INVALID_ARGUMENT, and any other as INTERNAL.
type Connector interface {
	// Info describes the connector. TaskTypes is ignored. It is called by
	// ServeConnector for -version, so it returns constant values.
	Info() Info
	// Configure receives the host's settings before Events, and again in a
	// new process after each restart. A *ConfigError reports problems at
	// the lines of the plugin block's config in worker.hcl, and the worker
	// stops. A connector that implements ConfigValidator gets
	// ValidateConfig with config.Config instead when the host only checks
	// the config.
	Configure(ctx context.Context, config ConnectorConfig) error
	// Events starts the connection and calls send for each state change,
	// stats snapshot and task frame from the coordinator, in order, until
	// Stop or until ctx ends because the host went away. send is safe for
	// concurrent use and returns an error once the host's stream is gone.
	// The host treats the end of Events, with or without an error, as a
	// lost connector unless it called Stop.
	Events(ctx context.Context, send func(ConnectorEvent) error) error
	// Send queues one task frame for the coordinator. It returns an error
	// wrapping ErrUnavailable while no session is open.
	Send(ctx context.Context, frame []byte) error
	// SendBatch queues frames in order and stops at the first one that it
	// cannot queue. It returns how many it queued, always the first ones,
	// and the error of the next one. ctx carries the host's bound for the
	// whole batch.
	SendBatch(ctx context.Context, frames [][]byte) (accepted int, err error)
	// Stop closes the session cleanly and makes Events return.
	Stop(ctx context.Context) error
}

// SessionExporter is implemented by a connector that supports the live
// handover of its session to a successor process, connector plugin API
// version 2. ServeConnector offers version 2 only for such a connector,
// which must then also resume ConnectorConfig.Resume.
type SessionExporter interface {
	// Export stops reading and writing, closes the connection without a
	// WebSocket close frame, so that the coordinator keeps the session for
	// a resume, and makes Events return after the frames it received. The
	// handover contains every frame that the connector took from the host
	// and the coordinator did not acknowledge.
	Export(ctx context.Context) (SessionHandover, error)
}

// ConnectorConfig is the worker host's settings for its connector.
type ConnectorConfig struct {
	// URL is the coordinator's WebSocket URL, ws:// or wss://.
	URL      string
	WorkerID string
	// Token is the shared secret of the token mode, used when no worker
	// secret is set.
	Token string
	// Secret is the worker's credential secret, or empty. SecretFile is the
	// path of a file that contains it, which the connector reads again
	// before every handshake, so that a rotated secret is used without a
	// restart. At most one of them is set.
	Secret     string
	SecretFile string
	// CAFile is the path of a PEM file with the CA certificates that a
	// wss:// coordinator's certificate must chain to; empty uses the
	// system roots.
	CAFile string
	// TaskTypes are the task types of the worker's executors, and Slots the
	// number of attempts it runs at once.
	TaskTypes []string
	Slots     int
	Labels    map[string]string
	// HostVersion is the worker host's release version.
	HostVersion string
	// Config is the plugin block's config as a JSON object, {} without a
	// config block.
	Config json.RawMessage
	// Plugins lists the host's plugin processes, which a connector sends
	// to the coordinator as release metadata.
	Plugins []HostPlugin
	// Resume is the session that a predecessor exported, set only for a
	// connector that implements SessionExporter. The connector resumes that
	// session in place of starting a new one.
	Resume *SessionHandover
}

// HostPlugin describes one plugin process of the worker host.
type HostPlugin struct {
	// Name is the plugin block's label in worker.hcl.
	Name string
	Kind string
	// Version is the release version from the plugin's Info.
	Version string
	// APIVersion is the plugin API version negotiated at launch.
	APIVersion int
}

// SessionHandover is the state of a worker's session that passes from one
// connector process to its successor during a live upgrade.
type SessionHandover struct {
	// SessionID names the session to resume; empty when the exporting
	// connector had no session yet, and the successor then starts a new one.
	SessionID string
	// NextSeq is the sequence number of the next frame that the worker
	// sends, and Received the highest coordinator frame received in order.
	NextSeq  uint64
	Received uint64
	// Unacknowledged are the frames sent but not acknowledged, each a
	// marshalled frame with its sequence number, in sequence order.
	Unacknowledged [][]byte
	// Queued are the task frames that the host handed over and that were
	// not numbered yet, in the order to send them.
	Queued [][]byte
}

// ConnectorEvent is one event of a connector's event stream. Exactly one
// field is set.
type ConnectorEvent struct {
	// Frame is a task frame from the coordinator, a marshalled frame.
	Frame []byte
	// State is a transition of the connection.
	State *StateChange
	// Stats is a snapshot of the connector's counters, which the host passes
	// to its metrics plugins. The shipped connector sends one every few
	// seconds and after each state change.
	Stats *ConnectorStats
}
