package kafkamw

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/routes"
)

// Attacks on the hashed marker memo and the context memo of several
// sandboxes (#14, second round).

// heapAfterGC is the live heap once garbage is collected.
func heapAfterGC() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestMemoHoldsNoHugeHeaders: a producer that tags messages with large
// marker headers, each a little different (a bug, or anyone who can write
// to the topic), must not make the reader keep every one of them. The
// memo of four entries held four; one of 128 entries, each owning a copy
// of its header bytes and the codec's answer read from them, held 128 of
// them: 64 KiB values kept 16 MiB alive per reader (1 MiB values, what a
// broker accepts by default, 256 MiB). Markers that large are unreadable
// whatever they hold (the W3C limit is 8 KiB of baggage), and reading
// them again costs a linear pass, as hashing them for the memo does.
func TestMemoHoldsNoHugeHeaders(t *testing.T) {
	table, err := routes.NewStatic(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		hs   func(v string) []kafka.Header
	}{
		{"dedicated header", func(v string) []kafka.Header { return []kafka.Header{{Key: "sandbox-id", Value: []byte(v)}} }},
		{"baggage", func(v string) []kafka.Header {
			return []kafka.Header{{Key: "baggage", Value: []byte("sandbox.id=pr-1,note=" + v)}}
		}},
		{"both", func(v string) []kafka.Header {
			return []kafka.Header{{Key: "sandbox-id", Value: []byte("pr-1")}, {Key: "baggage", Value: []byte("sandbox.id=pr-1,note=" + v)}}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, id := range []string{"", "pr-1"} {
				r := bareReader(t, table, "orders", side(id))
				const size, n = 64 << 10, 512
				before := heapAfterGC()
				for i := range n {
					v := fmt.Sprintf("%08d", i) + strings.Repeat("x", size)
					msg := kafka.Message{Topic: "t", Time: time.Now().Add(-time.Minute), Headers: tc.hs(v)}
					if _, v, err := r.decide(context.Background(), &msg); err != nil || v.fate == fateMine {
						t.Fatalf("message %d: decide = %+v, %v; want it refused", i, v, err)
					}
				}
				held := int64(heapAfterGC()) - int64(before)
				runtime.KeepAlive(r)
				if limit := int64(4 * size); held > limit {
					t.Errorf("reader %q: %d KiB held after %d messages with %d KiB marker headers; want at most %d KiB", id, held>>10, n, size>>10, limit>>10)
				}
			}
		})
	}
}
