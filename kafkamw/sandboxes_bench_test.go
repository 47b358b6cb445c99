package kafkamw

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
// in each mode, against one plain kafka-go group reader: a topic whose
// messages are a third tagged for the N sandboxes in turn, read by the
// baseline reader and N sandbox readers, each in its own group. Two
// families of sub-benchmarks:
//
//   - steady (BenchmarkSandboxes/steady/...): what a running fleet pays
//     per message. The readers (the plain one alone, then ours) are
//     started on an empty topic, joined and caught up on a warm-up of a
//     few messages before anything is measured; a pass then produces
//     -kafkamw.bench.sandboxes.messages messages (20,000 by default)
//     while they run and measures the process's CPU until every reader
//     has decided its share, idle polling included (sandbox readers with
//     nothing to read long-poll meanwhile). An op is three passes for
//     the plain reader and three for our fleet. The messages are
//     produced from another process (see [producer]), so that the
//     producing client's CPU is in neither. cpu/plain is our fleet's CPU
//     per pass over the plain reader's: what reading costs, the broker's
//     serving (and storing the pass's messages, alike in both) included.
//     join-ms is the CPU
//     of starting the fleet (groups joined, connections dialled, sandbox
//     topics created, the warm-up decided), join-ms-plain the plain
//     reader's; idle-ms/s is the fleet's CPU per second of an idle
//     topic, idle-ms/s-plain the plain reader's. fetches/pass is the
//     fetch requests of our fleet's readers per pass (kafka-go's
//     ReaderStats.Fetches, summed); faults/pass (faults/pass-plain) the
//     process's minor page faults during our (the plain reader's)
//     passes: memory touched for the first time, zeroed by the kernel
//     in system CPU time.
//   - whole (BenchmarkSandboxes/whole/...): the earlier measure, a topic
//     of -kafkamw.bench.sandboxes.messages read from its beginning by
//     readers started afresh in every pass, so that it counts their
//     start-up as much as their steady state. An op is one such pass next
//     to one pass of a plain reader started afresh.
//
// Both report the messages fetched from the broker (kafka-go's
// ReaderStats.Messages, summed over the readers) per message produced and
// per message owned, and the CPU per message owned. CPU is the process's
// (user and system), the in-process broker included: what the cluster
// and the consumers spend together.
//
//	go test ./kafkamw -run '^$' -bench 'Sandboxes/steady' -benchtime 3x
//	go test ./kafkamw -run '^$' -bench 'Sandboxes/whole' -benchtime 3x
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
	b.Run("steady", func(b *testing.B) {
		for _, m := range modes {
			for _, n := range []int{1, 4, 16} {
				b.Run(fmt.Sprintf("mode=%s/N=%d", m.name, n), func(b *testing.B) { benchSteady(b, n, m.split) })
			}
		}
	})
	b.Run("whole", func(b *testing.B) {
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
	})
}

// steadyPasses is how many passes an op of BenchmarkSandboxes/steady
// measures for each side.
const steadyPasses = 3

// steadyIdle is how long an op of BenchmarkSandboxes/steady measures each
// side idle.
const steadyIdle = 500 * time.Millisecond

// benchSteady is an op of BenchmarkSandboxes/steady: see there.
func benchSteady(b *testing.B, n int, split *Split) {
	addrs, stop, err := kafkatest.NewBroker()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(stop)
	table := sandboxesTable(b, n)
	size := *sandboxesMessages
	var plain, ours, joinPlain, joinOurs, idlePlain, idleOurs time.Duration
	var fetched, owned, dups, fetches, faults, faultsPlain int64
	for b.Loop() {
		pl := startFleet(b, addrs, table, n, nil, true)
		joinPlain += pl.join
		for range steadyPasses {
			c, _, _, _ := pl.pass(b, size)
			plain += c
		}
		faultsPlain += pl.faults
		idlePlain += pl.idle()
		pl.close()
		fl := startFleet(b, addrs, table, n, split, false)
		joinOurs += fl.join
		for range steadyPasses {
			c, f, o, d := fl.pass(b, size)
			ours, fetched, owned, dups = ours+c, fetched+f, owned+o, dups+d
			for _, st := range fl.stats {
				fetches += st.Fetches
			}
		}
		faults += fl.faults
		idleOurs += fl.idle()
		fl.close()
	}
	passes := float64(b.N * steadyPasses)
	b.ReportMetric(float64(ours)/float64(plain), "cpu/plain")
	b.ReportMetric(float64(fetched)/float64(size)/passes, "fetched/produced")
	b.ReportMetric(float64(ours.Nanoseconds())/1e3/float64(owned), "cpu-µs/owned")
	b.ReportMetric(float64(ours.Microseconds())/1e3/passes, "cpu-ms/pass")
	b.ReportMetric(float64(plain.Microseconds())/1e3/passes, "cpu-ms/pass-plain")
	b.ReportMetric(float64(joinOurs.Microseconds())/1e3/float64(b.N), "join-ms")
	b.ReportMetric(float64(joinPlain.Microseconds())/1e3/float64(b.N), "join-ms-plain")
	b.ReportMetric(float64(idleOurs.Microseconds())/1e3/float64(b.N)/steadyIdle.Seconds(), "idle-ms/s")
	b.ReportMetric(float64(idlePlain.Microseconds())/1e3/float64(b.N)/steadyIdle.Seconds(), "idle-ms/s-plain")
	b.ReportMetric(float64(dups)/passes, "dups/pass")
	b.ReportMetric(float64(fetches)/passes, "fetches/pass")
	b.ReportMetric(float64(faults)/passes, "faults/pass")
	b.ReportMetric(float64(faultsPlain)/passes, "faults/pass-plain")
}

// sandboxesTable returns a route table in which n sandboxes, pr-0 to
// pr-<n-1>, override the service.
func sandboxesTable(b testing.TB, n int) *routes.Table {
	sbs := make([]routes.Sandbox, n)
	for i := range sbs {
		sbs[i] = routes.Sandbox{ID: fmt.Sprintf("pr-%d", i), Services: map[string]routes.Route{
			benchService: {Upstream: "10.0.0.1:9090", ActiveFrom: time.Now().Add(-time.Hour)},
		}}
	}
	table, err := routes.NewStatic(sbs)
	if err != nil {
		b.Fatal(err)
	}
	return table
}

// sandboxesBatch returns size messages, every third tagged for one of n
// sandboxes (pr-0 ...) in turn, without a topic.
func sandboxesBatch(b testing.TB, n, size int) []kafka.Message {
	w := mustWriter(b, &kafka.Writer{})
	msgs := make([]kafka.Message, 0, size)
	for i := range size {
		m := kafka.Message{Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Appendf(nil, "order %d", i)}
		if i%3 == 1 {
			var one [1]kafka.Message
			tagged, _, err := w.decorate(propagation.Sandbox{ID: fmt.Sprintf("pr-%d", (i/3)%n)}, []kafka.Message{m}, &one)
			if err != nil {
				b.Fatal(err)
			}
			m = tagged[0]
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// sandboxesShares returns how many of sandboxesBatch(n, size)'s messages
// each sandbox owns.
func sandboxesShares(n, size int) []int64 {
	s := make([]int64, n)
	for i := range size {
		if i%3 == 1 {
			s[(i/3)%n]++
		}
	}
	return s
}

// producer writes sandboxesBatch's messages to a topic of its own, from
// a process of its own (the test binary running TestSandboxesProducer):
// the producing client's CPU is not the readers', and the process's CPU
// time (getrusage's RUSAGE_SELF) leaves it out. The broker's work of
// storing the messages stays in, as in the plain reader's measure.
type producer struct {
	topic string
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   *bufio.Scanner
}

// newProducer creates a topic of three partitions and starts a producer
// process writing to it.
func newProducer(b testing.TB, addrs []string, n, size int) *producer {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	topic := kafkatest.UniqueName("steady")
	if err := kafkatest.CreateTopic(ctx, addrs, topic, 3); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSandboxesProducer$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %d %d", producerEnv, strings.Join(addrs, ","), topic, n, size))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	return &producer{topic: topic, cmd: cmd, in: in, out: bufio.NewScanner(out)}
}

// producerEnv names the environment variable that makes
// TestSandboxesProducer a producer process: "<brokers> <topic> <n> <size>".
const producerEnv = "SANDBOXKIT_BENCH_PRODUCER"

// write has the producer process write the batch's first size messages,
// and waits until the broker has acknowledged them.
func (p *producer) write(b testing.TB, size int) {
	if _, err := fmt.Fprintln(p.in, size); err != nil {
		b.Fatal(err)
	}
	for p.out.Scan() {
		if p.out.Text() == "done" {
			return
		}
	}
	b.Fatalf("the producer process ended: %v", p.out.Err())
}

// close ends the producer process.
func (p *producer) close() {
	p.in.Close()
	p.cmd.Wait()
}

// TestSandboxesProducer is BenchmarkSandboxes/steady's producer process
// (see [producer]); it skips unless run by it. It writes, for each line
// of its input (a count k), the first k messages of sandboxesBatch, and
// answers "done" once they are acknowledged.
func TestSandboxesProducer(t *testing.T) {
	spec := os.Getenv(producerEnv)
	if spec == "" {
		t.Skip("BenchmarkSandboxes/steady's producer process")
	}
	var brokers, topic string
	var n, size int
	if _, err := fmt.Sscan(spec, &brokers, &topic, &n, &size); err != nil {
		t.Fatal(err)
	}
	kw, closeWriter := kafkatest.NewWriter(strings.Split(brokers, ","), topic)
	defer closeWriter()
	kw.BatchSize = 5000
	msgs := sandboxesBatch(t, n, size)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		k, err := strconv.Atoi(in.Text())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err = kw.WriteMessages(ctx, slices.Clone(msgs[:k])...)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		fmt.Println("done")
	}
}

// fleet is a set of readers running over one topic of their own: the
// plain kafka-go reader alone, or the baseline reader and n sandbox
// readers, each fetching in a loop and committing every 100 messages it
// returns.
type fleet struct {
	p      *producer
	n      int
	split  bool
	plain  *kafka.Reader
	plainN atomic.Int64
	ours   []*Reader
	cancel context.CancelFunc
	wg     sync.WaitGroup
	errMu  sync.Mutex
	err    error
	join   time.Duration // CPU of the start, the warm-up included
	passes int
	faults int64               // the process's minor page faults during the passes
	stats  []kafka.ReaderStats // each reader's during the last pass
}

// startFleet starts a fleet on a new topic and waits until it has decided
// a warm-up of 3n messages (one for each sandbox).
func startFleet(b *testing.B, addrs []string, table *routes.Table, n int, split *Split, plain bool) *fleet {
	size := *sandboxesMessages
	fl := &fleet{p: newProducer(b, addrs, n, max(size, 3*n)), n: n, split: split != nil}
	ctx, cancel := context.WithCancel(context.Background())
	fl.cancel = cancel
	group := kafkatest.UniqueName("group")
	cfg := kafkatest.ReaderConfig(addrs, fl.p.topic, group)
	cfg.MaxWait, cfg.HeartbeatInterval = *sandboxesMaxWait, sandboxesHeartbeat
	start := cpuTime()
	if plain {
		fl.plain = kafka.NewReader(cfg)
		fl.wg.Go(func() {
			for k := 1; ; k++ {
				m, err := fl.plain.FetchMessage(ctx)
				if err == nil && k%commitEvery == 0 {
					err = fl.plain.CommitMessages(ctx, m)
				}
				if err != nil {
					fl.fail(ctx, err)
					return
				}
				fl.plainN.Add(1)
			}
		})
	} else {
		for i := range n + 1 {
			var opts []ReaderOption
			if i > 0 {
				opts = append(opts, AsSandbox(fmt.Sprintf("pr-%d", i-1)))
			}
			if split != nil {
				opts = append(opts, WithSplit(*split))
			}
			r, err := NewReader(cfg, table, benchService, opts...)
			if err != nil {
				b.Fatal(err)
			}
			fl.ours = append(fl.ours, r)
			fl.wg.Go(func() {
				for k := 1; ; k++ {
					_, m, err := r.FetchMessage(ctx)
					if err == nil && k%commitEvery == 0 {
						err = r.CommitMessages(ctx, m)
					}
					if err != nil {
						fl.fail(ctx, err)
						return
					}
				}
			})
		}
	}
	fl.p.write(b, 3*n)
	fl.wait(b, 3*n)
	fl.join = cpuTime() - start
	return fl
}

// fail records a reader loop's error, unless the fleet is closing.
func (fl *fleet) fail(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	fl.errMu.Lock()
	defer fl.errMu.Unlock()
	if fl.err == nil {
		fl.err = err
	}
}

// done reports whether every reader of the fleet has decided what want
// ([fleet.targets]) gives it.
func (fl *fleet) done(want []int64) bool {
	if fl.plain != nil {
		return fl.plainN.Load() >= want[0]
	}
	for i, r := range fl.ours {
		c := r.Counts()
		got := c.Delivered + c.Skipped
		if fl.split && i > 0 {
			got = c.Delivered // it may also skip duplicates
		}
		if got < want[i] {
			return false
		}
	}
	return true
}

// targets is what each reader will have decided once the topic holds
// total messages: the plain reader and the baseline every message; a
// sandbox reader every message in the filter mode, its share in the
// split mode.
func (fl *fleet) targets(total int) []int64 {
	want := make([]int64, 1+len(fl.ours))
	for i := range want {
		want[i] = int64(total)
	}
	if fl.split {
		// Each pass and the warm-up start their cycle of sandboxes at pr-0.
		for i := 1; i < len(want); i++ {
			want[i] = 0
		}
		for _, size := range fl.sizes(total) {
			for j, s := range sandboxesShares(fl.n, size) {
				want[1+j] += s
			}
		}
	}
	return want
}

// sizes returns the sizes of the writes that made a topic of total
// messages: the warm-up, then passes.
func (fl *fleet) sizes(total int) []int {
	sizes := []int{3 * fl.n}
	for total -= 3 * fl.n; total > 0; total -= *sandboxesMessages {
		sizes = append(sizes, *sandboxesMessages)
	}
	return sizes
}

// wait waits until the fleet has decided the topic's first total
// messages.
func (fl *fleet) wait(b testing.TB, total int) {
	want := fl.targets(total)
	deadline := time.Now().Add(2 * time.Minute)
	for !fl.done(want) {
		fl.errMu.Lock()
		err := fl.err
		fl.errMu.Unlock()
		if err != nil {
			b.Fatal(err)
		}
		if time.Now().After(deadline) {
			b.Fatalf("the readers did not decide %d messages in two minutes", total)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// produced is how many messages the fleet's topic holds.
func (fl *fleet) produced() int {
	total := 3 * fl.n
	return total + fl.passes*(*sandboxesMessages)
}

// pass produces size messages while the fleet runs and returns the
// process CPU time until every reader has decided them, the messages the
// readers fetched from the broker meanwhile, and those they owned and
// skipped as duplicates.
func (fl *fleet) pass(b testing.TB, size int) (cpu time.Duration, fetched, owned, dups int64) {
	var before []Counts
	for _, r := range fl.ours {
		r.Stats() // kafka-go's counters start again at each call
		before = append(before, r.Counts())
	}
	start, faults := cpuTime(), minorFaults()
	fl.p.write(b, size)
	fl.passes++
	fl.wait(b, fl.produced())
	cpu = cpuTime() - start
	fl.faults += minorFaults() - faults
	fl.stats = fl.stats[:0]
	for i, r := range fl.ours {
		c := r.Counts()
		st := r.Stats()
		fl.stats = append(fl.stats, st)
		fetched += st.Messages
		owned += c.Delivered - before[i].Delivered
		dups += c.Duplicates - before[i].Duplicates
	}
	return cpu, fetched, owned, dups
}

// idle returns the process CPU time of steadyIdle with the fleet running
// over a topic that receives nothing.
func (fl *fleet) idle() time.Duration {
	start := cpuTime()
	time.Sleep(steadyIdle)
	return cpuTime() - start
}

// close stops the fleet's loops and closes its readers and producer.
func (fl *fleet) close() {
	fl.cancel()
	fl.wg.Wait()
	var closing sync.WaitGroup
	if fl.plain != nil {
		closing.Go(func() { fl.plain.Close() })
	}
	for _, r := range fl.ours {
		closing.Go(func() { r.Close() })
	}
	closing.Wait()
	fl.p.close()
}

// plainPass reads the whole topic with a plain kafka-go group reader in a
// fresh group, committing every 100 messages, and returns the process CPU
// time spent.
func plainPass(b *testing.B, addrs []string, topic string) time.Duration {
	cfg := kafkatest.ReaderConfig(addrs, topic, fmt.Sprintf("plain-%d", time.Now().UnixNano()))
	cfg.MaxWait, cfg.HeartbeatInterval = *sandboxesMaxWait, sandboxesHeartbeat
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
		cfg.MaxWait, cfg.HeartbeatInterval = *sandboxesMaxWait, sandboxesHeartbeat
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

// minorFaults returns the process's minor page faults so far: memory
// touched for the first time (the broker's log growing, heaps growing),
// which the kernel zeroes and maps in system CPU time.
func minorFaults() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Minflt
}

// sandboxesMaxWait is the readers' MaxWait in BenchmarkSandboxes: how long
// the broker holds a fetch that finds nothing (kafka-go's default is 10s).
// A fetch returns as soon as there is a message, so it delays nothing; a
// short one would make every idle reader poll, which costs CPU per reader
// rather than per message. -kafkamw.bench.sandboxes.maxwait sets another
// (docs/performance.md has both, at N = 16).
var sandboxesMaxWait = flag.Duration("kafkamw.bench.sandboxes.maxwait", 500*time.Millisecond, "BenchmarkSandboxes: the readers' MaxWait")

// sandboxesHeartbeat is the readers' HeartbeatInterval in BenchmarkSandboxes
// (kafka-go's default is 3s; the test broker's session timeout is 2s).
const sandboxesHeartbeat = 500 * time.Millisecond
