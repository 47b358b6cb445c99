package kafkamw

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/segmentio/kafka-go"
)

// TestMarksAsAMap checks the split-mode sandbox reader's duplicate marks,
// which remember the last partition's mark, against a plain map of marks
// (what they were): random runs of copies of a few source partitions,
// offsets going forward, back (second copies) and below zero, decided
// (advanced) or not, from marks that start empty or at committed
// offsets.
func TestMarksAsAMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(20, 6))
	for trial := range 2000 {
		want := map[int]int64{}
		m := &marks{next: map[int]*int64{}, source: "t"}
		for p := range rng.IntN(3) {
			c := int64(rng.IntN(5))
			want[p], m.next[p] = c, &c
		}
		part := 0
		for step := range 60 {
			if rng.IntN(4) == 0 {
				part = rng.IntN(4)
			}
			off := int64(rng.IntN(24) - 2)
			msg := kafka.Message{Headers: []kafka.Header{{Key: HeaderSplitSource, Value: fmt.Appendf(nil, "%d/%d", part, off)}}}
			gp, goff, dup, ok := m.check(&msg)
			next, seen := want[part]
			if wdup := seen && off < next; gp != part || goff != off || dup != wdup || !ok {
				t.Fatalf("trial %d step %d: check(%d/%d) = %d, %d, dup %v, %v; a map of marks says dup %v", trial, step, part, off, gp, goff, dup, ok, wdup)
			}
			if rng.IntN(3) > 0 {
				m.advance(part, off)
				if off >= want[part] {
					want[part] = off + 1
				}
			}
		}
	}
}
