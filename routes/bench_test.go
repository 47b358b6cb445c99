package routes_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/routes"
)

// These benchmarks use only the API that predates O(change) updates, so
// the same file runs against the old code for side-by-side figures.

var benchSizes = []int{1, 1000, 100000}

// benchSandboxes returns n sandboxes of two services each, and a copy of
// the middle one changed (another upstream), for one-sandbox changes.
func benchSandboxes(n int) (sbs []routes.Sandbox, changed routes.Sandbox) {
	from := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	sbs = make([]routes.Sandbox, n)
	for i := range sbs {
		sbs[i] = routes.Sandbox{
			ID:    fmt.Sprintf("sb-%d", i),
			Actor: "alice",
			Services: map[string]routes.Route{
				"cart":   {Upstream: fmt.Sprintf("http://10.%d.%d.%d:8080", i>>16&255, i>>8&255, i&255)},
				"orders": {Upstream: "10.0.0.1:9090", ActiveFrom: from},
			},
		}
	}
	changed = sbs[n/2]
	changed.Services = map[string]routes.Route{"cart": {Upstream: "http://10.255.255.255:8080"}, "orders": changed.Services["orders"]}
	return sbs, changed
}

func sizeName(n int) string {
	switch {
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("sandboxes=%dk", n/1000)
	}
	return fmt.Sprintf("sandboxes=%d", n)
}

// BenchmarkLookup: the hot path, at 1 to 100,000 sandboxes.
func BenchmarkLookup(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(sizeName(n), func(b *testing.B) {
			sbs, _ := benchSandboxes(n)
			tbl, err := routes.NewStatic(sbs)
			if err != nil {
				b.Fatal(err)
			}
			id := sbs[n/2].ID
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := tbl.Lookup(id, "cart"); !ok {
					b.Fatal("no route")
				}
			}
		})
	}
}

// BenchmarkUpdateOne: Update with the whole list, one sandbox changed each
// time (alternately), as a source that hands over full documents does.
func BenchmarkUpdateOne(b *testing.B) {
	benchOneChange(b, func(tbl *routes.Table, sbs []routes.Sandbox, i int, s routes.Sandbox) error {
		sbs[i] = s
		return tbl.Update(sbs)
	})
}

// BenchmarkPutOne: one sandbox changed by Put (alternately), the change a
// per-key source (etcd) hands over: cost independent of the table's size.
func BenchmarkPutOne(b *testing.B) {
	benchOneChange(b, func(tbl *routes.Table, _ []routes.Sandbox, _ int, s routes.Sandbox) error {
		return tbl.Put(s)
	})
}

// benchOneChange applies, at every table size, one sandbox changed back and
// forth with apply, given the table, its full list, the changed sandbox's
// index in it and its new version.
func benchOneChange(b *testing.B, apply func(tbl *routes.Table, sbs []routes.Sandbox, i int, s routes.Sandbox) error) {
	for _, n := range benchSizes {
		b.Run(sizeName(n), func(b *testing.B) {
			sbs, changed := benchSandboxes(n)
			tbl, err := routes.NewStatic(sbs)
			if err != nil {
				b.Fatal(err)
			}
			variants := [2]routes.Sandbox{changed, sbs[n/2]}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if err := apply(tbl, sbs, n/2, variants[i&1]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkLoadOne: a document with one sandbox changed each time, from
// bytes to the table (parse and apply), as the file and HTTP sources do.
func BenchmarkLoadOne(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(sizeName(n), func(b *testing.B) {
			sbs, changed := benchSandboxes(n)
			var docs [2][]byte
			for i, v := range [2]routes.Sandbox{changed, sbs[n/2]} {
				sbs[n/2] = v
				var err error
				if docs[i], err = json.Marshal(routes.Document{Sandboxes: sbs}); err != nil {
					b.Fatal(err)
				}
			}
			i := 0
			src := routes.SourceFunc(func(context.Context) ([]routes.Sandbox, error) {
				i++
				return routes.ParseDocument(docs[i&1])
			})
			tbl := routes.New()
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

// BenchmarkLoad10k: a 10,000-sandbox document read from a file into a
// fresh table (parse, validate, index), and the heap the loaded table
// keeps (heap-B/table, after a GC, the document and its parse dropped).
//
//	go test ./routes -run '^$' -bench Load10k -benchtime 10x
func BenchmarkLoad10k(b *testing.B) {
	const n = 10000
	sbs, _ := benchSandboxes(n)
	doc, err := json.Marshal(routes.Document{Sandboxes: sbs})
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "routes.json")
	if err := os.WriteFile(path, doc, 0o644); err != nil {
		b.Fatal(err)
	}
	src := routes.File(path)
	var kept []*routes.Table
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ReportAllocs()
	for b.Loop() {
		t := routes.New()
		if err := t.Load(context.Background(), src); err != nil {
			b.Fatal(err)
		}
		kept = append(kept, t)
	}
	b.StopTimer()
	runtime.GC()
	runtime.ReadMemStats(&after)
	if _, ok := kept[len(kept)-1].Lookup(sbs[n/2].ID, "cart"); !ok {
		b.Fatal("the loaded table has no route for a sandbox of the document")
	}
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(len(kept)), "heap-B/table")
	runtime.KeepAlive(kept)
}
