package routes

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"testing"
)

// FuzzParseDocumentReuse: parsing with sandboxes reused from an earlier
// document gives what parsing from scratch gives, error or table.
func FuzzParseDocumentReuse(f *testing.F) {
	example, err := os.ReadFile("testdata/example.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(example, example)
	f.Add([]byte(`{"sandboxes":[{"id":"a"},{"id":"b","services":{"x":"h:1"}}]}`), []byte(`{"sandboxes":[{"id":"b","services":{"x":"h:1"}},{"id":"a"}]}`))
	f.Add([]byte(`{"sandboxes":[{"id":"a"},{"id":"b"}]}`), []byte(`{"sandboxes":[{"id":"a"},{"id":"a"}]}`))
	f.Add([]byte(`{"sandboxes":[{"id":"a"}, {"id":"b"}]}`), []byte(`{"sandboxes":[ {"id":"a"} ,{"id":"b","id":"c"}]}`))
	f.Add([]byte(`{"sandboxes":[{"id":"a","expires":"2026-12-01T00:00:00Z"}]}`), []byte(`{"sandboxes":[{"id":"a","expires":"2026-12-01T00:00:00Z"},null]}`))
	f.Fuzz(func(t *testing.T, before, after []byte) {
		prev, err := parseDocument(before, nil)
		if err != nil {
			return
		}
		want, wantErr := parseDocument(after, nil)
		got, gotErr := parseDocument(after, prev)
		if (wantErr == nil) != (gotErr == nil) || wantErr != nil && wantErr.Error() != gotErr.Error() {
			t.Fatalf("after %q, %q: error %v, from scratch %v", before, after, gotErr, wantErr)
		}
		if wantErr == nil && !reflect.DeepEqual(got.sbs, want.sbs) {
			t.Fatalf("after %q, %q: %+v, from scratch %+v", before, after, got.sbs, want.sbs)
		}
	})
}

// BenchmarkDocumentOne: what the file and HTTP sources do with a document
// in which one sandbox changed: parse it, reusing the sandboxes the last
// document had, and apply it. Compare with BenchmarkLoadOne.
func BenchmarkDocumentOne(b *testing.B) {
	for _, n := range []int{1, 1000, 100000} {
		b.Run(fmt.Sprintf("sandboxes=%d", n), func(b *testing.B) {
			sbs := make([]Sandbox, n)
			for i := range sbs {
				sbs[i] = Sandbox{ID: fmt.Sprintf("sb-%d", i), Actor: "alice", Services: map[string]Route{
					"cart": {Upstream: fmt.Sprintf("http://10.%d.%d.%d:8080", i>>16&255, i>>8&255, i&255)}, "orders": {Upstream: "10.0.0.1:9090"}}}
			}
			var docs [2][]byte
			for i, up := range []string{"http://10.255.255.255:8080", sbs[n/2].Services["cart"].Upstream} {
				sbs[n/2].Services = map[string]Route{"cart": {Upstream: up}, "orders": {Upstream: "10.0.0.1:9090"}}
				docs[i], _ = json.Marshal(Document{Sandboxes: sbs})
			}
			var cur *parsedDoc
			i := 0
			src := docSourceFunc(func(_ context.Context, have *parsedDoc) (*parsedDoc, error) {
				i++
				doc, err := parseDocument(docs[i&1], cur)
				cur = doc
				return doc, err
			})
			tbl := New()
			if err := tbl.Load(context.Background(), src); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := tbl.Load(context.Background(), src); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

type docSourceFunc func(context.Context, *parsedDoc) (*parsedDoc, error)

func (f docSourceFunc) Fetch(context.Context) ([]Sandbox, error) { panic("not used") }
func (f docSourceFunc) fetchDoc(ctx context.Context, have *parsedDoc) (*parsedDoc, error) {
	return f(ctx, have)
}
