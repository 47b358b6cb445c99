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

// fastPathCase is one message of TestFetchFastPath's stream and what each
// reader must do with it.
type fastPathCase struct {
	name    string
	headers []kafka.Header
	// What the baseline reader and the reader of pr-42 do with it:
	// return it ("" in the context: production; else its sandbox), or
	// skip it.
	baseline, sandbox outcome14
	unreadable        bool // counted as unreadable
	orphan            bool // counted as orphaned (by the baseline reader)
}

type outcome14 struct {
	returned bool
	sandbox  string // the context's sandbox of a returned message
}

var (
	returnedPlain14 = outcome14{returned: true}
	skipped14       = outcome14{}
)

func returnedWith14(id string) outcome14 { return outcome14{returned: true, sandbox: id} }

// fastPathCases: untagged messages (no header, or headers none of which
// is ours) are production's, and everything that carries a marker,
// readable or not, must leave the untagged fast path: owned by a
// sandbox, of a sandbox that overrides nothing, of an unknown sandbox, or
// unreadable (fail closed: never returned as production).
func fastPathCases() []fastPathCase {
	tag := tagged14
	return []fastPathCase{
		{name: "untagged", baseline: returnedPlain14, sandbox: skipped14},
		{name: "empty-header-list", headers: []kafka.Header{}, baseline: returnedPlain14, sandbox: skipped14},
		{name: "foreign-header", headers: []kafka.Header{{Key: "traceparent", Value: []byte("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")}}, baseline: returnedPlain14, sandbox: skipped14},
		{name: "owned-by-sandbox", headers: tag("pr-42"), baseline: skipped14, sandbox: returnedWith14("pr-42")},
		{name: "sandbox-overriding-nothing", headers: tag("pr-7"), baseline: returnedWith14("pr-7"), sandbox: skipped14},
		{name: "unknown-sandbox", headers: tag("pr-999"), baseline: skipped14, sandbox: skipped14, orphan: true},
		{name: "bad-id", headers: []kafka.Header{{Key: "sandbox-id", Value: []byte("NOT_A_LABEL")}}, baseline: skipped14, sandbox: skipped14, unreadable: true},
		{name: "empty-dedicated-header", headers: []kafka.Header{{Key: "sandbox-id", Value: []byte("")}}, baseline: skipped14, sandbox: skipped14, unreadable: true},
		{name: "baggage-without-value", headers: []kafka.Header{{Key: "baggage", Value: []byte("sandbox.id")}}, baseline: skipped14, sandbox: skipped14, unreadable: true},
		{name: "member-key-as-header", headers: []kafka.Header{{Key: "sandbox.id", Value: []byte("pr-42")}}, baseline: skipped14, sandbox: skipped14, unreadable: true},
		{name: "unreadable-after-foreign", headers: []kafka.Header{{Key: "traceparent", Value: []byte("x")}, {Key: "sandbox-id", Value: []byte("NOT_A_LABEL")}}, baseline: skipped14, sandbox: skipped14, unreadable: true},
	}
}

// TestFetchFastPath checks that fetch's path for untagged messages takes
// only those: each message of fastPathCases, alone between two untagged
// ones, is returned or skipped14 as the decision says, with the sandbox in
// the context it is returned with, and counted, by the baseline reader in
// the filter and the split mode and by a sandbox reader. A fast path that
// took a tagged, owned or unreadable message for an untagged one returns
// it to the baseline reader with no sandbox in its context.
func TestFetchFastPath(t *testing.T) {
	table := routes14(t)
	for _, c := range fastPathCases() {
		for _, mode := range []string{"baseline", "baseline-split", "sandbox"} {
			t.Run(c.name+"/"+mode, func(t *testing.T) {
				var opts []ReaderOption
				want := c.baseline
				switch mode {
				case "sandbox":
					opts = append(opts, AsSandbox("pr-42"))
					want = c.sandbox
				case "baseline-split":
					opts = append(opts, WithSplit(Split{}))
				}
				r := bareReader(t, table, "orders", opts...)
				if mode == "baseline-split" {
					if c.name == "owned-by-sandbox" {
						t.Skip("forwarding needs a broker: split_test.go")
					}
					// Never dialled: nothing here is forwarded.
					r.forward = newForwarder(Split{}, kafka.ReaderConfig{Brokers: []string{"127.0.0.1:1"}, Topic: "t", GroupID: "g"})
				}
				at := time.Now().Add(-time.Minute)
				stream := []kafka.Message{
					{Topic: "t", Offset: 0, Time: at, Value: []byte("before")},
					{Topic: "t", Offset: 1, Time: at, Value: []byte("case"), Headers: c.headers},
					{Topic: "t", Offset: 2, Time: at, Value: []byte("after")},
				}
				if mode == "sandbox" {
					// The sandbox reader returns none of the untagged
					// ones: a message of its own ends the stream.
					stream = append(stream, kafka.Message{Topic: "t", Offset: 3, Time: at, Value: []byte("end"), Headers: stream[1].Headers})
					stream[3].Headers = tagged14("pr-42")
				}
				next := 0
				src := sourceFunc(func(context.Context) (kafka.Message, error) {
					if next == len(stream) {
						return kafka.Message{}, fmt.Errorf("stream read to its end")
					}
					next++
					return stream[next-1], nil
				})
				ctx := context.Background()
				var got []string
				for next < len(stream) {
					var msg kafka.Message
					out, err := r.fetch(ctx, src, &msg)
					if err != nil {
						t.Fatal(err)
					}
					id := ""
					if s, ok := propagation.FromContext(out); ok {
						id = s.ID
					} else if out != ctx {
						t.Errorf("offset %d: returned with a context that is not the caller's, and no sandbox in it", msg.Offset)
					}
					got = append(got, fmt.Sprintf("%d:%s", msg.Offset, id))
				}
				var wantGot []string
				switch {
				case mode == "sandbox" && want.returned:
					wantGot = []string{"1:" + want.sandbox, "3:pr-42"}
				case mode == "sandbox":
					wantGot = []string{"3:pr-42"}
				case want.returned:
					wantGot = []string{"0:", "1:" + want.sandbox, "2:"}
				default:
					wantGot = []string{"0:", "2:"}
				}
				if fmt.Sprint(got) != fmt.Sprint(wantGot) {
					t.Errorf("returned (offset:sandbox) %v; want %v", got, wantGot)
				}
				n := r.Counts()
				if n.Delivered != int64(len(wantGot)) || n.Delivered+n.Skipped != int64(len(stream)) {
					t.Errorf("counts %+v; want %d delivered of %d", n, len(wantGot), len(stream))
				}
				if wantU := count14(c.unreadable); n.Unreadable != wantU {
					t.Errorf("Unreadable = %d; want %d", n.Unreadable, wantU)
				}
				if wantO := count14(c.orphan && mode != "sandbox"); n.Orphaned != wantO {
					t.Errorf("Orphaned = %d; want %d", n.Orphaned, wantO)
				}
			})
		}
	}
}

// TestFetchFastPathLedger checks that the messages fetch's fast path
// returns are recorded in the ledger as the general path records them: a
// skipped14 message after returned ones is not committed before they are.
func TestFetchFastPathLedger(t *testing.T) {
	r := bareReader(t, routes14(t), "orders")
	at := time.Now().Add(-time.Minute)
	stream := []kafka.Message{
		{Topic: "t", Offset: 10, Time: at},
		{Topic: "t", Offset: 11, Time: at, Headers: tagged14("pr-42")}, // the sandbox's: skipped14
		{Topic: "t", Offset: 12, Time: at},
	}
	next := 0
	src := sourceFunc(func(context.Context) (kafka.Message, error) {
		next++
		return stream[next-1], nil
	})
	var first kafka.Message
	if _, err := r.fetch(context.Background(), src, &first); err != nil || first.Offset != 10 {
		t.Fatalf("first fetch: offset %d, %v; want 10", first.Offset, err)
	}
	var second kafka.Message
	if _, err := r.fetch(context.Background(), src, &second); err != nil || second.Offset != 12 {
		t.Fatalf("second fetch: offset %d, %v; want 12 (11 skipped)", second.Offset, err)
	}
	if c := r.ledger.committable(); len(c) != 0 {
		t.Errorf("committable before the returned offset 10 is committed: %v; want none", c)
	}
	all := r.ledger.withSkipped([]kafka.Message{first})
	if len(all) != 2 || all[1].Offset != 11 {
		t.Errorf("committing offset 10 commits %v; want it and the skipped14 11", all)
	}
}

func routes14(t *testing.T) *routes.Table {
	t.Helper()
	table, err := syncedTable([]routes.Sandbox{
		{ID: "pr-42", Services: map[string]routes.Route{"orders": {Upstream: "h:1", ActiveFrom: time.Now().Add(-time.Hour)}}},
		{ID: "pr-7"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return table
}

func tagged14(id string) []kafka.Header {
	var c carrier
	propagation.Default().InjectSandbox(propagation.Sandbox{ID: id, Actor: "alice"}, &c)
	return c.list
}

func count14(b bool) int64 {
	if b {
		return 1
	}
	return 0
}
