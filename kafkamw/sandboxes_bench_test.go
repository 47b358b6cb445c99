package kafkamw

import (
	"context"
	"flag"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// sandboxesMessages is the size of BenchmarkSandboxes' topics.
var sandboxesMessages = flag.Int("kafkamw.bench.sandboxes.messages", 20000, "messages in BenchmarkSandboxes' topics")

// BenchmarkSandboxes measures what N sandboxes overriding a service cost,
// in each mode: a topic of 20,000 messages, a third of them tagged for the
// N sandboxes in turn, read by the baseline reader and N sandbox readers
// at once, each in its own group, until each has decided all it will see
// (the whole topic in the filter mode; in the split mode the baseline the
// whole topic, which it splits, and each sandbox reader its own topic).
// An op is one such pass, next to one pass of a plain kafka-go group
// reader over the same topic. It reports the messages fetched from the
// broker (kafka-go's ReaderStats.Messages, summed over the readers) per
// message produced and per message owned, the process's CPU time per
// reader and per message owned (user and system, the in-process broker
// included: what the cluster and the consumers spend together), and that
// CPU time over the plain reader's pass (cpu/plain).
//
//	go test ./kafkamw -run '^$' -bench Sandboxes -benchtime 3x
//
// The mode split-1p is the split mode with one partition per sandbox
// topic (Split{Partitions: 1}) rather than the source topic's three: a
// sandbox reader then runs one fetch loop, and one connection, instead
// of three.
func BenchmarkSandboxes(b *testing.B) {
	modes := []struct {
		name  string
		split *Split
	}{{"filter", nil}, {"split", &Split{}}, {"split-1p", &Split{Partitions: 1}}}
	for _, m := range modes {
		mode, split := m.name, m.split
		for _, n := range []int{1, 4, 16} {
			b.Run(fmt.Sprintf("mode=%s/N=%d", mode, n), func(b *testing.B) {
				addrs, topic, table := sandboxesTopic(b, *sandboxesMessages, n)
				var fetched, owned, dups int64
				var cpu, plain time.Duration
				for b.Loop() {
					plain += plainPass(b, addrs, topic)
					f, o, d, c := sandboxesPass(b, addrs, topic, table, n, split)
					fetched, owned, dups, cpu = fetched+f, owned+o, dups+d, cpu+c
				}
				b.ReportMetric(float64(fetched)/float64(*sandboxesMessages*b.N), "fetched/produced")
				b.ReportMetric(float64(fetched)/float64(owned), "fetched/owned")
				b.ReportMetric(float64(cpu.Milliseconds())/float64(b.N)/float64(n+1), "cpu-ms/reader")
				b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(owned), "cpu-µs/owned")
				b.ReportMetric(float64(cpu)/float64(plain), "cpu/plain")
				b.ReportMetric(float64(dups)/float64(b.N), "dups/pass")
			})
		}
	}
}

// plainPass reads the whole topic with a plain kafka-go group reader in a
// fresh group, committing every 100 messages, and returns the process CPU
// time spent.
func plainPass(b *testing.B, addrs []string, topic string) time.Duration {
	cfg := kafkatest.ReaderConfig(addrs, topic, fmt.Sprintf("plain-%d", time.Now().UnixNano()))
	cfg.MaxWait, cfg.HeartbeatInterval = sandboxesMaxWait, sandboxesMaxWait
	r := kafka.NewReader(cfg)
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := cpuTime()
	for k := range *sandboxesMessages {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if k%commitEvery == commitEvery-1 || k == *sandboxesMessages-1 {
			if err := r.CommitMessages(ctx, m); err != nil {
				b.Fatal(err)
			}
		}
	}
	return cpuTime() - start
}

// sandboxesTopic starts a broker and fills a topic of size messages, every
// third tagged for one of n sandboxes in turn, and returns a table in which
// each overrides the service.
func sandboxesTopic(b testing.TB, size, n int) ([]string, string, *routes.Table) {
	addrs, stop, err := kafkatest.NewBroker()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(stop)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const topic = "sandboxes"
	if err := kafkatest.CreateTopic(ctx, addrs, topic, 3); err != nil {
		b.Fatal(err)
	}
	kw, closeWriter := kafkatest.NewWriter(addrs, topic)
	defer closeWriter()
	kw.BatchSize = 5000
	w := mustWriter(b, kw)
	sbs := make([]routes.Sandbox, n)
	for i := range sbs {
		sbs[i] = routes.Sandbox{ID: fmt.Sprintf("pr-%d", i), Services: map[string]routes.Route{
			benchService: {Upstream: "10.0.0.1:9090", ActiveFrom: time.Now().Add(-time.Hour)},
		}}
	}
	msgs := make([]kafka.Message, 0, size)
	for i := range size {
		m := kafka.Message{Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Appendf(nil, "order %d", i)}
		if i%3 == 1 {
			var one [1]kafka.Message
			tagged, _, err := w.decorate(propagation.Sandbox{ID: sbs[(i/3)%n].ID}, []kafka.Message{m}, &one)
			if err != nil {
				b.Fatal(err)
			}
			m = tagged[0]
		}
		msgs = append(msgs, m)
	}
	if err := kw.WriteMessages(ctx, msgs...); err != nil {
		b.Fatal(err)
	}
	table, err := routes.NewStatic(sbs)
	if err != nil {
		b.Fatal(err)
	}
	return addrs, topic, table
}

// sandboxesPass runs the baseline reader and n sandbox readers over the
// whole topic, each in a fresh group, committing every 100 messages it
// returns. It returns the messages all readers fetched from the broker,
// the messages they owned, and the process CPU time spent.
func sandboxesPass(b *testing.B, addrs []string, topic string, table *routes.Table, n int, mode *Split) (fetched, owned, dups int64, cpu time.Duration) {
	split := mode != nil
	group := fmt.Sprintf("pass-%d", time.Now().UnixNano())
	readers := make([]*Reader, n+1)
	size := int64(*sandboxesMessages)
	// What each reader decides: the whole topic, or in the split mode the
	// messages of its sandbox (every third, for the sandboxes in turn).
	sees := make([]int64, n+1)
	for i := range sees {
		sees[i] = size
	}
	if split {
		for i := range size {
			if i%3 == 1 {
				sees[1+(i/3)%int64(n)]++
			}
		}
		for i := 1; i <= n; i++ {
			sees[i] -= size
		}
	}
	for i := range readers {
		var opts []ReaderOption
		if i > 0 {
			opts = append(opts, AsSandbox(fmt.Sprintf("pr-%d", i-1)))
		}
		if split {
			opts = append(opts, WithSplit(*mode))
		}
		cfg := kafkatest.ReaderConfig(addrs, topic, group)
		cfg.MaxWait, cfg.HeartbeatInterval = sandboxesMaxWait, sandboxesMaxWait
		r, err := NewReader(cfg, table, benchService, opts...)
		if err != nil {
			b.Fatal(err)
		}
		readers[i] = r
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := cpuTime()
	var wg sync.WaitGroup
	errs := make([]error, len(readers))
	cancels := make([]context.CancelFunc, len(readers))
	for i, r := range readers {
		// A reader's FetchMessage blocks once it has returned all it
		// owns: the pass ends for it when it has decided the whole topic
		// (the watcher below cancels it).
		rctx, rcancel := context.WithCancel(ctx)
		cancels[i] = rcancel
		wg.Go(func() {
			defer rcancel()
			var last kafka.Message
			for k := 0; ; k++ {
				_, m, err := r.FetchMessage(rctx)
				if err != nil {
					if rctx.Err() == nil {
						errs[i] = err
						cancel() // ends the pass
					}
					break
				}
				last = m
				if k%commitEvery == commitEvery-1 {
					if err := r.CommitMessages(ctx, m); err != nil {
						errs[i] = err
						cancel()
						return
					}
				}
			}
			if last.Topic != "" {
				errs[i] = r.CommitMessages(ctx, last)
			}
		})
	}
	// One watcher for all readers, every 20ms, so that watching costs
	// the process about as little as the plain pass's loop does (one
	// poller per reader cost N+1 timers every 20ms).
	wg.Go(func() {
		for left := len(readers); ; time.Sleep(20 * time.Millisecond) {
			for i, r := range readers {
				if cancels[i] == nil {
					continue
				}
				// In the split mode a sandbox reader is done when it has
				// returned its share (it may also skip duplicates).
				c := r.Counts()
				if c.Delivered+c.Skipped >= sees[i] && (!split || i == 0 || c.Delivered >= sees[i]) || ctx.Err() != nil {
					cancels[i]()
					cancels[i] = nil
					left--
				}
			}
			if left == 0 {
				return
			}
		}
	})
	wg.Wait()
	cpu = cpuTime() - start
	for i, r := range readers {
		if errs[i] != nil {
			b.Fatal(errs[i])
		}
		fetched += r.Stats().Messages
		owned += r.Counts().Delivered
		dups += r.Counts().Duplicates
	}
	// Closed together, after the CPU is read: each leaves its group,
	// which takes a round of the broker's group protocol.
	var closing sync.WaitGroup
	for _, r := range readers {
		closing.Go(func() { r.Close() })
	}
	closing.Wait()
	return fetched, owned, dups, cpu
}

// cpuTime returns the process's user and system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// sandboxesMaxWait is the readers' MaxWait in BenchmarkSandboxes: how long
// the broker holds a fetch that finds nothing (kafka-go's default is 10s).
// A fetch returns as soon as there is a message, so it delays nothing; a
// short one would make every idle reader poll, which costs CPU per reader
// rather than per message.
const sandboxesMaxWait = 500 * time.Millisecond
