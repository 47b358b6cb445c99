package etcdtest_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sandboxkit/sandboxkit/routes"
	"github.com/sandboxkit/sandboxkit/routes/etcdroutes"
)

// BenchmarkWriteToFleet: from a write to etcd to each of 100 tables
// watching it routing the new sandbox. It reports the latency of every
// table in every round: p50-ms and p99-ms.
func BenchmarkWriteToFleet(b *testing.B) {
	const tables = 100
	srv := startServer(b)
	c := client(b, srv.Endpoint())
	src := source(b, c, etcdroutes.Timeout(30*time.Second))
	tbls := make([]*routes.Table, tables)
	for i := range tbls {
		tbls[i] = routes.New()
		syncing(b, src, tbls[i])
	}
	loaded := time.Now()
	for _, tbl := range tbls {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := tbl.WaitSynced(ctx, loaded)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
	}
	var lat []time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		lat = append(lat, writeToFleet(b, c, tbls, fmt.Sprintf("pr-%d", i))...)
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2])/1e6, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100])/1e6, "p99-ms")
}

// writeToFleet writes sandbox id and returns how long each table took to
// route it.
func writeToFleet(b *testing.B, c *clientv3.Client, tbls []*routes.Table, id string) []time.Duration {
	lat := make([]time.Duration, len(tbls))
	var wg sync.WaitGroup
	ready := make(chan struct{})
	start := time.Now()
	for i, tbl := range tbls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-ready
			for {
				changed := tbl.Changed()
				if _, ok := tbl.Lookup(id, "cart"); ok {
					lat[i] = time.Since(start)
					return
				}
				select {
				case <-changed:
				case <-time.After(time.Minute):
					return
				}
			}
		}()
	}
	start = time.Now()
	close(ready)
	put(b, c, sandbox(id, "h:1"))
	wg.Wait()
	for _, d := range lat {
		if d == 0 {
			b.Fatalf("a table did not route %s within a minute", id)
		}
	}
	return lat
}
