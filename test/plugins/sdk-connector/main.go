// Command sdk-connector is a connector plugin written against sdk.Connector
// alone, served with sdk.ServeConnector. It does not dial a coordinator.
// It plays one in process: it reports a connected session, replies to the
// host's state sync, assigns one task, and acknowledges the outcome. Every
// frame that the host sends is appended to the file named by the record
// setting of its config, one JSON object a line, so that a test can see
// what a real worker host did with a connector built on the SDK.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/dtf-io/dtf/protocol"
	wirepb "github.com/dtf-io/dtf/protocol/pb"
	"github.com/dtf-io/dtf/sdk"
)

// version is the release version in the plugin's Info.
var version = "sdk-test"

// sessionID is the session that the connector reports as connected.
const sessionID = "sdk-loopback-1"

// settings is the plugin block's config.
type settings struct {
	// Record is the path of the file that receives one line per frame.
	Record string `json:"record"`
	// TaskType and Payload describe the one task that the connector
	// assigns after the state sync.
	TaskType string          `json:"task_type"`
	Payload  json.RawMessage `json:"payload"`
}

// recordLine is one line of the record file.
type recordLine struct {
	Type   string `json:"type"`
	TaskID string `json:"task_id,omitempty"`
	Status string `json:"status,omitempty"`
	Output string `json:"output,omitempty"`
}

type loopback struct {
	mu       sync.Mutex
	settings settings
	inbox    chan *wirepb.Frame
	open     bool
	stopped  chan struct{}
	stopOnce sync.Once
}

func (c *loopback) Info() sdk.Info { return sdk.Info{Name: "sdk-loopback", Version: version} }

func (c *loopback) ValidateConfig(config json.RawMessage) error {
	_, err := parseSettings(config)
	return err
}

func parseSettings(config json.RawMessage) (settings, error) {
	var s settings
	if problems := sdk.DecodeConfig(config, &s); len(problems) > 0 {
		return s, &sdk.ConfigError{Problems: problems}
	}
	if s.Record == "" || s.TaskType == "" {
		return s, &sdk.ConfigError{Problems: []sdk.ConfigProblem{{
			Summary: "Missing setting",
			Detail:  "record and task_type are required, for example record = \"/tmp/frames.jsonl\"",
		}}}
	}
	return s, nil
}

func (c *loopback) Configure(_ context.Context, cfg sdk.ConnectorConfig) error {
	s, err := parseSettings(cfg.Config)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.settings = s
	c.mu.Unlock()
	return c.record(recordLine{Type: "configured", Output: cfg.WorkerID})
}

// Events reports a connected session and then replies to the host's frames
// until Stop or the end of ctx.
func (c *loopback) Events(ctx context.Context, send func(sdk.ConnectorEvent) error) error {
	c.mu.Lock()
	c.open = true
	c.mu.Unlock()
	err := send(sdk.ConnectorEvent{State: &sdk.StateChange{State: sdk.StateConnected, SessionID: sessionID}})
	if err != nil {
		return err
	}
	for {
		select {
		case <-c.stopped:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case frame := <-c.inbox:
			if err := c.answer(frame, send); err != nil {
				return err
			}
		}
	}
}

// answer sends the replies that a coordinator sends to one frame from
// the host.
func (c *loopback) answer(frame *wirepb.Frame, send func(sdk.ConnectorEvent) error) error {
	var replies []*wirepb.Frame
	switch body := frame.GetBody().(type) {
	case *wirepb.Frame_StateSync:
		c.mu.Lock()
		s := c.settings
		c.mu.Unlock()
		replies = append(replies,
			&wirepb.Frame{Body: &wirepb.Frame_StateSyncResult{StateSyncResult: &wirepb.StateSyncResult{}}},
			&wirepb.Frame{Body: &wirepb.Frame_Assign{Assign: &wirepb.Assign{
				Ref:     &wirepb.TaskRef{TaskId: "sdk-task-1", Attempt: 1},
				Type:    s.TaskType,
				Payload: s.Payload,
			}}})
	case *wirepb.Frame_TaskOutcome:
		replies = append(replies, &wirepb.Frame{Body: &wirepb.Frame_OutcomeAck{OutcomeAck: &wirepb.OutcomeAck{
			Ref: body.TaskOutcome.GetRef(), Applied: true,
		}}})
	}
	for _, reply := range replies {
		data, err := protocol.Encode(reply)
		if err != nil {
			return fmt.Errorf("encode %s frame: %w", protocol.TypeOf(reply), err)
		}
		if err := send(sdk.ConnectorEvent{Frame: data}); err != nil {
			return err
		}
	}
	return nil
}

func (c *loopback) Send(ctx context.Context, frame []byte) error {
	_, err := c.SendBatch(ctx, [][]byte{frame})
	return err
}

// SendBatch records each frame and passes it to Events for an answer.
func (c *loopback) SendBatch(ctx context.Context, frames [][]byte) (int, error) {
	for i, data := range frames {
		c.mu.Lock()
		open := c.open
		c.mu.Unlock()
		if !open {
			return i, fmt.Errorf("no session before Events: %w", sdk.ErrUnavailable)
		}
		frame, err := protocol.Decode(data, 0)
		if err != nil {
			return i, fmt.Errorf("decode frame %d of the batch: %w: %v", i, sdk.ErrInvalidFrame, err)
		}
		line := recordLine{Type: protocol.TypeOf(frame)}
		if outcome := frame.GetTaskOutcome(); outcome != nil {
			line.TaskID = outcome.GetRef().GetTaskId()
			line.Status = outcome.GetStatus().String()
			line.Output = string(outcome.GetOutput())
		}
		if err := c.record(line); err != nil {
			return i, err
		}
		select {
		case c.inbox <- frame:
		case <-ctx.Done():
			return i, ctx.Err()
		}
	}
	return len(frames), nil
}

func (c *loopback) Stop(context.Context) error {
	c.stopOnce.Do(func() { close(c.stopped) })
	return c.record(recordLine{Type: "stopped"})
}

// record appends one line to the record file.
func (c *loopback) record(line recordLine) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.settings.Record == "" {
		return errors.New("record file not configured; Configure must come first")
	}
	data, err := json.Marshal(line)
	if err != nil {
		return err
	}
	file, err := os.OpenFile(c.settings.Record, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("open record file: %w", err)
	}
	_, err = file.Write(append(data, '\n'))
	if closeErr := file.Close(); err == nil {
		err = closeErr
	}
	return err
}

func main() {
	sdk.ServeConnector(&loopback{inbox: make(chan *wirepb.Frame, 64), stopped: make(chan struct{})})
}
