package host

import (
	"fmt"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/proto"

	dtfplugin "github.com/dtf-io/dtf/plugin"
	"github.com/dtf-io/dtf/protocol"
	wirepb "github.com/dtf-io/dtf/protocol/pb"
)

// Every outcome that the host builds passes through boundOutcome before it
// is written to the outbox, so that it fits one frame. An outcome over the
// frame limit would never be accepted by the connector, and the attempt
// and its slot would wait for an acknowledgement that cannot come.

// logMessageBytes bounds the outcome message in the host's own log lines.
const logMessageBytes = 256

// boundOutcome applies the result bounds of the plugin package to outcome
// in place: it keeps the tail of the output, drops result data over its
// limit and makes the message one bounded line that names what was cut. A
// checkpoint's message is bounded the same way. When the encoded frame
// still exceeds protocol.DefaultMaxFrameBytes, the outcome is replaced with
// a failed one that names the cause. It returns the notes of what changed.
func boundOutcome(outcome *wirepb.TaskOutcome) []string {
	var notes []string
	if size := len(outcome.GetOutput()); size > dtfplugin.MaxResultOutputBytes {
		outcome.Output = outcome.Output[size-dtfplugin.MaxResultOutputBytes:]
		notes = append(notes, fmt.Sprintf("output cut to its last %d of %d bytes",
			dtfplugin.MaxResultOutputBytes, size))
	}
	if size := len(outcome.GetResult()); size > dtfplugin.MaxResultDataBytes {
		outcome.Result = nil
		notes = append(notes, fmt.Sprintf("result data of %d bytes dropped, over the %d-byte limit",
			size, dtfplugin.MaxResultDataBytes))
	}
	outcome.Message = dtfplugin.BoundMessage(outcome.GetMessage(), notes...)
	if cp := outcome.GetCheckpoint(); cp != nil {
		cp.Message = dtfplugin.BoundMessage(cp.GetMessage())
	}

	data, err := protocol.Encode(&wirepb.Frame{Body: &wirepb.Frame_TaskOutcome{TaskOutcome: outcome}})
	var message string
	switch {
	case err != nil:
		message = fmt.Sprintf("the outcome does not encode as a frame (%v); the executor's result was dropped", err)
	case len(data) > protocol.DefaultMaxFrameBytes:
		message = fmt.Sprintf("the outcome's frame of %d bytes exceeds the %d-byte frame limit even after its "+
			"output, message and data were bounded; the executor's result was dropped", len(data),
			protocol.DefaultMaxFrameBytes)
	default:
		return notes
	}
	replaceWithFailure(outcome, message)
	return append(notes, message)
}

// replaceWithFailure turns outcome into a failed outcome with message and
// without output, data or checkpoint. Ref and times stay.
func replaceWithFailure(outcome *wirepb.TaskOutcome, message string) {
	ref, started, finished := outcome.GetRef(), outcome.GetStartedUnixMs(), outcome.GetFinishedUnixMs()
	proto.Reset(outcome)
	outcome.Ref = ref
	outcome.Status = wirepb.Status_STATUS_FAILED
	outcome.Message = dtfplugin.BoundMessage(message)
	outcome.StartedUnixMs = started
	outcome.FinishedUnixMs = finished
}

// logMessage returns message as a short quoted line for the host's log,
// whatever its size and line breaks.
func logMessage(message string) hclog.Quote {
	return hclog.Quote(dtfplugin.OneLine(message, logMessageBytes))
}
