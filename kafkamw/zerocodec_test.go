package kafkamw_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/kafkamw"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// TestZeroCodecRefused: a Codec not made by propagation.NewCodec (the
// zero Codec, new(propagation.Codec)) reads no header at all: a reader
// built on it would pass an untrusted record's markers on unjudged, and a
// writer would write none. Both constructors refuse it with an ErrConfig
// error naming WithCodec, as grpcmw's and httpmw's do.
func TestZeroCodecRefused(t *testing.T) {
	table := routes.New()
	cfg := kafka.ReaderConfig{Brokers: []string{"127.0.0.1:1"}, Topic: "t", GroupID: "g"}
	r, err := kafkamw.NewReader(cfg, table, service, kafkamw.WithCodec(new(propagation.Codec)))
	if r != nil {
		r.Close()
	}
	if !errors.Is(err, kafkamw.ErrConfig) || r != nil || !strings.Contains(err.Error(), "WithCodec: codec not made by propagation.NewCodec") {
		t.Errorf("NewReader with a zero codec = %v, %v; want nil and an ErrConfig error naming WithCodec", r, err)
	}
	w, err := kafkamw.NewWriter(&kafka.Writer{Topic: "t"}, kafkamw.WithCodec(new(propagation.Codec)))
	if !errors.Is(err, kafkamw.ErrConfig) || w != nil || !strings.Contains(err.Error(), "WithCodec: codec not made by propagation.NewCodec") {
		t.Errorf("NewWriter with a zero codec = %v, %v; want nil and an ErrConfig error naming WithCodec", w, err)
	}
}
