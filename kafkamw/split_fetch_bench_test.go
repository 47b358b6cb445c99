package kafkamw

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// BenchmarkFetchSplitCopies is what a split-mode sandbox reader spends
// deciding each forwarded copy, without a broker: a stream of its
// sandbox's copies as the baseline forwards them (the writer's headers,
// then HeaderSplitSource, whose value differs from copy to copy), read
// with the reader's duplicate marks. "tagged" is the same stream without
// the source header, read by a filter-mode sandbox reader: what deciding
// one of its own messages costs when every message is its own. An op is
// one copy returned.
//
//	go test ./kafkamw -run '^$' -bench FetchSplitCopies -benchmem
func BenchmarkFetchSplitCopies(b *testing.B) {
	sbs := []routes.Sandbox{{ID: benchSandbox, Services: map[string]routes.Route{benchService: {Upstream: "h:1", ActiveFrom: time.Now().Add(-time.Hour)}}}}
	table, _ := syncedTable(sbs)
	var c carrier
	propagation.Default().InjectSandbox(propagation.Sandbox{ID: benchSandbox, Actor: "alice"}, &c)
	const n = 3000
	for _, mode := range []string{"split", "tagged"} {
		stream := make([]kafka.Message, n)
		for i := range stream {
			p, off := i/(n/3), int64(i%(n/3)) // runs of one partition, as kafka-go delivers them
			hs := append([]kafka.Header(nil), c.list...)
			if mode == "split" {
				v := strconv.AppendInt(nil, int64(p), 10)
				v = strconv.AppendInt(append(v, '/'), off, 10)
				hs = append(hs, kafka.Header{Key: HeaderSplitSource, Value: v})
			}
			stream[i] = kafka.Message{Topic: "t.g.sandbox." + benchSandbox, Partition: p, Offset: off, Time: time.Now().Add(-time.Minute), Key: []byte("k"), Value: []byte("v"), Headers: hs}
		}
		b.Run(mode, func(b *testing.B) {
			r := bareReader(b, table, benchService, AsSandbox(benchSandbox))
			if mode == "split" {
				r.marks = &marks{next: map[int]*int64{}, source: "t"}
				r.freeSplitSource() // as NewReader does
			}
			var i, pass int64
			next := func(context.Context) (kafka.Message, error) {
				if i > 0 && i%n == 0 {
					// The copies' source offsets start again: so do
					// the marks, or every copy would be a second one.
					pass++
					if r.marks != nil {
						*r.marks = marks{next: map[int]*int64{}, source: "t"}
					}
				}
				m := stream[i%n]
				m.Offset += pass * n / 3
				i++
				return m, nil
			}
			b.ReportAllocs()
			for b.Loop() {
				var msg kafka.Message
				if _, err := r.fetch(context.Background(), sourceFunc(next), &msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSplitForward is the split-mode baseline reader's side of
// BenchmarkFetchSplitCopies, without a broker: a stream in which every
// third message is tagged for a sandbox that overrides the service, read
// by the baseline reader, which returns the others and buffers a copy of
// each tagged one for the sandbox's topic (its topic known, as after the
// first copy). The buffer is emptied at each pass over the stream, as a
// write would; nothing is written. An op is one message returned, so
// half a copy.
//
//	go test ./kafkamw -run '^$' -bench SplitForward -benchmem
func BenchmarkSplitForward(b *testing.B) {
	var c carrier
	propagation.Default().InjectSandbox(propagation.Sandbox{ID: benchSandbox, Actor: "alice"}, &c)
	stream := make([]kafka.Message, 300)
	for i := range stream {
		stream[i] = kafka.Message{Topic: "t", Partition: i / 100, Offset: int64(i), Time: time.Now().Add(-time.Minute), Key: []byte("k"), Value: []byte("v")}
		if i%3 == 1 {
			stream[i].Headers = c.list
		}
	}
	table, _ := syncedTable([]routes.Sandbox{{ID: benchSandbox, Services: map[string]routes.Route{benchService: {Upstream: "h:1", ActiveFrom: time.Now().Add(-time.Hour)}}}})
	r := bareReader(b, table, benchService, WithSplit(Split{}))
	r.ticketKey = ticketKey(r.cfg.codec) // as NewReader sets it
	f := newForwarder(Split{}, kafka.ReaderConfig{Brokers: []string{"127.0.0.1:1"}, Topic: "t", GroupID: "g"})
	r.forward = f
	name, _ := SplitTopic("t", "g", benchSandbox)
	f.names[sandboxTopic{"t", benchSandbox}] = name
	var i, pass int64
	next := func(context.Context) (kafka.Message, error) {
		if i > 0 && i%300 == 0 {
			pass++
			f.mu.Lock()
			f.buf, f.src = f.buf[:0], f.src[:0]
			clear(f.first)
			f.holding.Store(false)
			f.mu.Unlock()
			select {
			case <-f.kick:
			default:
			}
		}
		m := stream[i%300]
		m.Offset += pass * 300
		i++
		return m, nil
	}
	b.ReportAllocs()
	for b.Loop() {
		var msg kafka.Message
		if _, err := r.fetch(context.Background(), sourceFunc(next), &msg); err != nil {
			b.Fatal(err)
		}
	}
}
