package kafkamw

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// manySandboxes returns a table in which n sandboxes, pr-0 to pr-<n-1>,
// override service "orders", and a message tagged for each.
func manySandboxes(tb testing.TB, n int) (*routes.Table, []kafka.Message) {
	sbs := make([]routes.Sandbox, n)
	msgs := make([]kafka.Message, n)
	for i := range sbs {
		id := fmt.Sprintf("pr-%d", i)
		sbs[i] = routes.Sandbox{ID: id, Services: map[string]routes.Route{"orders": {Upstream: "h:1", ActiveFrom: time.Now().Add(-time.Hour)}}}
		var c carrier
		propagation.Default().InjectSandbox(propagation.Sandbox{ID: id}, &c)
		msgs[i] = kafka.Message{Topic: "t", Time: time.Now().Add(-time.Minute), Headers: c.list}
	}
	table, err := routes.NewStatic(sbs)
	if err != nil {
		tb.Fatal(err)
	}
	return table, msgs
}

// TestMemoDecidesManySandboxes checks that the baseline reader of a topic
// whose tagged messages belong to 8 sandboxes in turn reads each
// sandbox's headers once: its decisions allocate nothing once each was
// met (with four slots taken in turn, every one was a codec read and three
// allocations), and they are right. Eight, not more: the memo's sets hold
// four keys each, and with the process's random seed 16 keys would put
// five in one set about once in 250 runs.
func TestMemoDecidesManySandboxes(t *testing.T) {
	table, msgs := manySandboxes(t, 8)
	r := bareReader(t, table, "orders")
	ctx := context.Background()
	for i := range msgs {
		if _, v, err := r.decide(ctx, &msgs[i]); err != nil || v.fate != fateSandbox || v.sandbox != fmt.Sprintf("pr-%d", i) {
			t.Fatalf("message of pr-%d: verdict %+v, %v", i, v, err)
		}
	}
	if raceEnabled {
		t.Skip("allocation counts are not exact under the race detector")
	}
	i := 0
	allocs := testing.AllocsPerRun(10*len(msgs), func() {
		r.decide(ctx, &msgs[i%len(msgs)])
		i++
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations per decision of 16 sandboxes' messages in turn, want 0", allocs)
	}
}

// TestMemoKeepsNoLargeKey checks that the memo does not remember a key
// value above memoMaxBytes: 128 slots of a hostile producer's megabyte headers
// would hold 128 MB.
func TestMemoKeepsNoLargeKey(t *testing.T) {
	var mm memo
	small := memoKey{bag: []byte("sandbox.id=pr-1"), hasBag: true}
	large := memoKey{bag: make([]byte, memoMaxBytes+1), hasBag: true}
	mm.put(small, propagation.Markers{Found: true}, nil)
	mm.put(large, propagation.Markers{Found: true}, nil)
	if mm.get(&small) == nil {
		t.Error("a small key was not remembered")
	}
	if mm.get(&large) != nil {
		t.Errorf("a key of %d bytes was remembered", len(large.bag))
	}
}
