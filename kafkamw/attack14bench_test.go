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

// BenchmarkFetchProductionHeaders measures the reader's cost per untagged
// message (production's, no sandbox marker) when production messages carry
// the headers they usually carry, next to messages with no header at all
// (what BenchmarkReaderRatio's untagged messages are). Every message of the
// stream is untagged; each has its own traceparent, as messages produced
// under OpenTelemetry instrumentation do (one trace each), so the reader's
// memo of the last header list never matches. The variants:
//
//   - none: no header (the fast path of fetch, when it has one)
//   - traceparent: one W3C traceparent header
//   - traceparent+content-type: that and a content-type header
//   - traceparent+baggage: that and a baggage header whose members are
//     not ours (the codec reads baggage to find out)
//
// It uses only what main's reader has too (fetch, sourceFunc, bareReader),
// so that the same file measures both sides: count instructions with
// callgrind at two -test.benchtime lengths and divide the difference.
//
//	go test -c -o k.test ./kafkamw
//	GOMAXPROCS=1 GOGC=off GODEBUG=asyncpreemptoff=1,cpu.rdtscp=off valgrind --tool=callgrind \
//	  ./k.test -test.run '^$' -test.bench 'FetchProductionHeaders/baseline/none$' -test.benchtime 20000x
func BenchmarkFetchProductionHeaders(b *testing.B) {
	sbs := []routes.Sandbox{{ID: benchSandbox, Services: map[string]routes.Route{benchService: {Upstream: "h:1", ActiveFrom: time.Now().Add(-time.Hour)}}}}
	table, err := syncedTable(sbs)
	if err != nil {
		b.Fatal(err)
	}
	for _, role := range []string{"baseline", "sandbox"} {
		for _, variant := range []string{"none", "traceparent", "traceparent+content-type", "traceparent+baggage"} {
			stream := productionStream(variant, 300)
			var opts []ReaderOption
			if role == "sandbox" {
				opts = append(opts, AsSandbox(benchSandbox))
				// A sandbox reader returns none of these: end each
				// pass over the stream with one of its own.
				var c carrier
				propagation.Default().InjectSandbox(propagation.Sandbox{ID: benchSandbox, Actor: "alice"}, &c)
				stream[len(stream)-1].Headers = c.list
			}
			r := bareReader(b, table, benchService, opts...)
			b.Run(role+"/"+variant, func(b *testing.B) {
				var i int
				next := func(context.Context) (kafka.Message, error) {
					m := stream[i%len(stream)]
					i++
					return m, nil
				}
				ctx := context.Background()
				b.ReportAllocs()
				for b.Loop() {
					var msg kafka.Message
					if _, err := r.fetch(ctx, sourceFunc(next), &msg); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(i), "ns/msg")
			})
		}
	}
}

// productionStream returns n untagged messages over three partitions, with
// the headers variant names (see BenchmarkFetchProductionHeaders).
func productionStream(variant string, n int) []kafka.Message {
	at := time.Now().Add(-time.Minute)
	stream := make([]kafka.Message, n)
	for i := range stream {
		m := kafka.Message{Topic: "t", Partition: i / 100 % 3, Offset: int64(i), Time: at, Key: []byte("k"), Value: []byte("v")}
		tp := kafka.Header{Key: "traceparent", Value: fmt.Appendf(nil, "00-%032x-%016x-01", uint64(i)+0x0af7651916cd43dd, uint64(i)+0xb7ad6b7169203331)}
		switch variant {
		case "traceparent":
			m.Headers = []kafka.Header{tp}
		case "traceparent+content-type":
			m.Headers = []kafka.Header{tp, {Key: "content-type", Value: []byte("application/json")}}
		case "traceparent+baggage":
			m.Headers = []kafka.Header{tp, {Key: "baggage", Value: fmt.Appendf(nil, "userid=%d,tenant=acme", i)}}
		}
		stream[i] = m
	}
	return stream
}
