package kafkamw

import (
	"testing"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/routes"
)

// mustWriter is NewWriter for tests of the package's internals.
func mustWriter(tb testing.TB, w *kafka.Writer, opts ...WriterOption) *Writer {
	tb.Helper()
	wr, err := NewWriter(w, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	return wr
}

// bareReader returns a reader of service with the configuration NewReader
// would give it, without a group reader: for driving fetch and decide
// directly.
func bareReader(tb testing.TB, table *routes.Table, service string, opts ...ReaderOption) *Reader {
	tb.Helper()
	cfg, err := newReaderConfig(table, service, opts)
	if err != nil {
		tb.Fatal(err)
	}
	r := &Reader{cfg: cfg, gate: cfg.gate(), markers: newMarkers(cfg.codec), ledger: newLedger(), role: role(cfg.sandbox)}
	return r
}

// side is the reader option for the consumer of sandbox id: AsSandbox(id),
// or none for the baseline reader ("").
func side(id string) ReaderOption {
	if id == "" {
		return nil
	}
	return AsSandbox(id)
}
