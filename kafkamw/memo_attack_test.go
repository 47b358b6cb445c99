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

// TestMemoSameSet: header lists whose memo keys land in one set of the
// hashed memo (found with the process's seed), more of them than the set
// has ways, some differing in a byte, some only in where the bytes sit
// (the dedicated header's value against baggage's), read in turns and
// again and again: each is read as the codec reads it, never as the list
// remembered beside it in its set.
func TestMemoSameSet(t *testing.T) {
	table, err := routes.NewStatic(nil)
	if err != nil {
		t.Fatal(err)
	}
	r := bareReader(t, table, "orders")
	h := func(kv ...string) []kafka.Header {
		var hs []kafka.Header
		for i := 0; i < len(kv); i += 2 {
			hs = append(hs, kafka.Header{Key: kv[i], Value: []byte(kv[i+1])})
		}
		return hs
	}
	keyOf := func(hs []kafka.Header) memoKey {
		var k memoKey
		if _, memoize := r.markers.scanKey(hs, &k); !memoize {
			t.Fatalf("%v: not memoized", hs)
		}
		return k
	}
	// Candidates in families that differ only in one header's bytes: the
	// same dedicated header with other baggage, the same baggage with
	// another dedicated header (some agreeing, some not, some unreadable),
	// either alone; from each, four whose keys land in one set.
	families := []func(id string) []kafka.Header{
		func(id string) []kafka.Header { return h("sandbox-id", "pr-1", "baggage", "sandbox.id="+id) },
		func(id string) []kafka.Header { return h("sandbox-id", id, "baggage", "sandbox.id=pr-1") },
		func(id string) []kafka.Header { return h("Sandbox-ID", " "+id+" ") },
		func(id string) []kafka.Header { return h("baggage", "sandbox.id="+id+",sandbox.actor=a") },
		func(id string) []kafka.Header { return h("sandbox-id", "", "baggage", "sandbox.id="+id) },
	}
	const target = 0
	var same [][]kafka.Header
	for _, f := range families {
		n := 0
		for i := 0; n < memoWays; i++ {
			hs := f(fmt.Sprintf("pr-%d", i))
			if k := keyOf(hs); k.set() == target {
				same = append(same, hs)
				n++
			}
		}
	}
	want := make([]string, len(same))
	for i, hs := range same {
		m, err := r.cfg.codec.Read(&carrier{list: hs})
		want[i] = fmt.Sprintf("%+v %v", m, err)
	}
	// Turns of growing stride: each entry evicted, re-read, remembered.
	for round := range 40 {
		for j := range same {
			i := (j * (round%5 + 1)) % len(same)
			hs := append([]kafka.Header(nil), same[i]...)
			m, err := readHeaders(r, hs)
			if got := fmt.Sprintf("%+v %v", m, err); got != want[i] {
				t.Fatalf("round %d, list %d %v: read %s; the codec reads %s", round, i, same[i], got, want[i])
			}
		}
	}
}
