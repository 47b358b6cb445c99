package cart

import (
	"encoding/json"

	"google.golang.org/grpc/mem"
)

// Codec is a gRPC codec (encoding.CodecV2) that sends messages as JSON.
// It is given per server (grpc.ForceServerCodecV2) and per call
// (grpc.ForceCodecV2), never registered globally.
type Codec struct{}

// Marshal encodes v as JSON.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

// Unmarshal decodes JSON into v.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	return json.Unmarshal(data.Materialize(), v)
}

// Name is the content-subtype: application/grpc+json.
func (Codec) Name() string { return "json" }
