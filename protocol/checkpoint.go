package protocol

// MaxCheckpointBytes bounds the data of one checkpoint (1 MiB). The
// executor SDK rejects larger data, and the coordinator rejects a
// checkpoint frame that carries more. A task outcome may carry a checkpoint
// beside up to 1 MiB of output, and the limit keeps that well under
// DefaultMaxFrameBytes.
const MaxCheckpointBytes = 1 << 20
