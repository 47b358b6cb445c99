package kafkamw

import (
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/segmentio/kafka-go"
)

// TestLedgerConcurrentSafety drives the ledger as a reader does: one
// fetcher at a time records returned and skipped messages of several
// partitions in offset order, callers commit the returned ones in any
// order from several goroutines, and a flusher commits skipped ones. A
// shadow of what was returned and what the callers committed checks every
// skipped offset the ledger adds: no message returned before it may lie
// between what the callers have committed and it (committing it would
// commit past a message no one processed). At the end, with every
// returned message committed, the flush must commit the last skipped
// offset of every partition (nothing wedged).
func TestLedgerConcurrentSafety(t *testing.T) {
	for seed := range uint64(40) {
		if ledgerRound(t, seed); t.Failed() {
			return
		}
	}
}

func ledgerRound(t *testing.T, seed uint64) {
	const parts, perPart = 3, 400
	rng := rand.New(rand.NewPCG(seed, 7))
	l := newLedger()
	var (
		commitMu sync.Mutex // the reader's commitMu
		shadowMu sync.Mutex
		returned = map[int][]int64{}
		caller   = map[int]int64{0: -1, 1: -1, 2: -1} // highest offset callers committed
		lastSkip = map[int]int64{0: -1, 1: -1, 2: -1}
	)
	check := func(added []kafka.Message, batch []kafka.Message) {
		shadowMu.Lock()
		defer shadowMu.Unlock()
		c := map[int]int64{}
		for p, v := range caller {
			c[p] = v
		}
		for _, m := range batch {
			c[m.Partition] = max(c[m.Partition], m.Offset)
		}
		for _, m := range added {
			for _, r := range returned[m.Partition] {
				if r < m.Offset && r > c[m.Partition] {
					t.Errorf("seed %d: skipped %d/%d committed past returned %d, callers committed up to %d", seed, m.Partition, m.Offset, r, c[m.Partition])
					return
				}
			}
		}
	}
	commit := func(msgs []kafka.Message) {
		commitMu.Lock()
		defer commitMu.Unlock()
		all := l.withSkipped(msgs)
		check(all[len(msgs):], msgs)
		shadowMu.Lock()
		for _, m := range msgs {
			caller[m.Partition] = max(caller[m.Partition], m.Offset)
		}
		shadowMu.Unlock()
		l.committed(all)
	}
	flush := func() {
		commitMu.Lock()
		defer commitMu.Unlock()
		all := l.committable()
		check(all, nil)
		l.committed(all)
	}

	work := make(chan kafka.Message, 64)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range work {
				commit([]kafka.Message{m})
			}
		}()
	}
	stopFlush := make(chan struct{})
	flushed := make(chan struct{})
	go func() {
		defer close(flushed)
		for {
			select {
			case <-stopFlush:
				return
			default:
				flush()
			}
		}
	}()
	next := map[int]int64{}
	for range parts * perPart {
		p := rng.IntN(parts)
		run := 1 + rng.IntN(5) // kafka-go hands out runs of one partition
		for range run {
			m := kafka.Message{Topic: "t", Partition: p, Offset: next[p]}
			next[p]++
			if rng.IntN(3) == 0 {
				l.skip(&m)
				shadowMu.Lock()
				lastSkip[p] = m.Offset
				shadowMu.Unlock()
				continue
			}
			l.deliver(&m)
			shadowMu.Lock()
			returned[p] = append(returned[p], m.Offset)
			shadowMu.Unlock()
			work <- m
		}
	}
	close(work)
	wg.Wait()
	close(stopFlush)
	<-flushed
	flush()
	for p := range parts {
		st := l.state("t", p)
		want := max(lastSkip[p], caller[p])
		if st.committed != want {
			t.Fatalf("seed %d: partition %d committed %d at the end, want %d (last skipped %d, callers %d)", seed, p, st.committed, want, lastSkip[p], caller[p])
		}
	}
}
