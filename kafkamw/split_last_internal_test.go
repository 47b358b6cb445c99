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

// splitCopies returns n copies, as the baseline forwards them, of
// messages of the sandboxes ids in turn, each with its own source
// offset (HeaderSplitSource, the last header).
func splitCopies(t testing.TB, codec *propagation.Codec, ids []string, n int) []kafka.Message {
	t.Helper()
	out := make([]kafka.Message, n)
	for i := range out {
		var c carrier
		codec.InjectSandbox(propagation.Sandbox{ID: ids[i%len(ids)], Actor: "alice"}, &c)
		hs := append(c.list, kafka.Header{Key: HeaderSplitSource, Value: fmt.Appendf(nil, "0/%d", i)})
		out[i] = kafka.Message{Topic: "t.g.sandbox.pr-1", Offset: int64(i), Time: time.Now().Add(-time.Minute), Headers: hs}
	}
	return out
}

// TestSplitCopyReadOnce: a split-mode sandbox reader decides its
// sandbox's copies, whose header lists differ only in their source
// coordinates, from the list it remembered (lastHeaders) rather than
// scanning each and remembering it anew, and decides them as a reader
// without that shortcut does.
func TestSplitCopyReadOnce(t *testing.T) {
	table, err := syncedTable([]routes.Sandbox{{ID: "pr-1", Services: map[string]routes.Route{benchService: {Upstream: "h:1", ActiveFrom: time.Now().Add(-time.Hour)}}}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewReader(kafka.ReaderConfig{Brokers: []string{"127.0.0.1:1"}, Topic: "t", GroupID: "g"}, table, benchService, AsSandbox("pr-1"), WithSplit(Split{}))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	plain := bareReader(t, table, benchService, AsSandbox("pr-1"))
	msgs := splitCopies(t, propagation.Default(), []string{"pr-1"}, 3)
	for i := range msgs {
		_, v, err := r.decide(context.Background(), &msgs[i])
		_, want, werr := plain.decide(context.Background(), &msgs[i])
		if err != nil || werr != nil || v != want || v.fate != fateMine {
			t.Fatalf("copy %d: decided %+v, %v; a reader without the shortcut %+v, %v; want its own", i, v, err, want, werr)
		}
	}
	// The list remembered is the first copy's: the later ones matched it.
	src := r.last.hs[len(r.last.hs)-1]
	if src.Key != HeaderSplitSource || string(src.Value) != "0/0" {
		t.Errorf("remembered source header %s=%q; want the first copy's, 0/0: each copy was scanned and remembered anew", src.Key, src.Value)
	}
}

// TestSplitCopyHeaderNamedAsMarker: a codec whose dedicated header is
// named as HeaderSplitSource reads the sandbox from it, so its value is
// never passed over: copies whose only difference is that header are
// decided each on its own.
func TestSplitCopyHeaderNamedAsMarker(t *testing.T) {
	codec, err := propagation.NewCodec(propagation.WithHeader(HeaderSplitSource))
	if err != nil {
		t.Fatal(err)
	}
	table, err := syncedTable([]routes.Sandbox{
		{ID: "pr-1", Services: map[string]routes.Route{benchService: {Upstream: "h:1", ActiveFrom: time.Now().Add(-time.Hour)}}},
		{ID: "pr-2", Services: map[string]routes.Route{benchService: {Upstream: "h:1", ActiveFrom: time.Now().Add(-time.Hour)}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewReader(kafka.ReaderConfig{Brokers: []string{"127.0.0.1:1"}, Topic: "t", GroupID: "g"}, table, benchService, AsSandbox("pr-1"), WithSplit(Split{}), WithCodec(codec))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// Two messages whose lists differ only in that header's value: the
	// first is pr-1's, the second pr-2's.
	base := kafka.Message{Topic: "t.g.sandbox.pr-1", Time: time.Now().Add(-time.Minute)}
	one, two := base, base
	one.Headers = []kafka.Header{{Key: HeaderSplitSource, Value: []byte("pr-1")}}
	two.Headers = []kafka.Header{{Key: HeaderSplitSource, Value: []byte("pr-2")}}
	if _, v, err := r.decide(context.Background(), &one); err != nil || v.fate != fateMine {
		t.Fatalf("pr-1's message: %+v, %v; want it returned", v, err)
	}
	if _, v, err := r.decide(context.Background(), &two); err != nil || v.fate != fateSkip {
		t.Fatalf("pr-2's message after pr-1's: %+v, %v; want it skipped (not pr-1's)", v, err)
	}
}
