package routes_test

import (
	"testing"

	"github.com/sandboxkit/sandboxkit/routes"
)

// BenchmarkPutOne: one sandbox changed by Put (alternately), the change a
// per-key source (etcd) hands over: cost independent of the table's size.
func BenchmarkPutOne(b *testing.B) {
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
				if err := tbl.Put(variants[i&1]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
