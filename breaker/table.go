package breaker

import (
	"math/bits"
	"sync/atomic"
)

// table is the key index of one shard: an open-addressing hash table with
// linear probing, keyed by the 64-bit hash of each key's ID (see
// Group.hash), the ID itself checked in the entry on a hit.
//
// A call finds its key without a lock and without writing to any shared
// cache line: it reads the shard's table pointer, then the slot of its hash
// (a slot is 16 bytes, four to a cache line), then the entry. At 100,000
// keys that is one cold cache line before the entry, where a Go
// map[string]*entry behind an RWMutex costs the lock's two atomic writes
// (which also keep the processor from overlapping the misses around them),
// the map group's control word and slot, and the key string the map
// compares.
//
// Writers (inserting a key, evicting one, growing or shrinking the table)
// hold the shard's mu. A reader racing a writer may miss a key that is
// there (a deletion shifts keys back, a growth publishes a new table); it
// then looks again under mu, so a miss without the lock is never taken for
// an absent key. A hit is always a key with that ID: the ID is compared.
type table struct {
	slots []slot
	shift uint8 // home slot of hash h: h >> shift
}

type slot struct {
	h atomic.Uint64 // hash of the key's ID; 0: empty
	e atomic.Pointer[entry]
}

// minSlots is the size of a new shard's table.
const minSlots = 8

func newTable(size int) *table {
	size = 1 << bits.Len(uint(max(size, minSlots)-1))
	return &table{slots: make([]slot, size), shift: uint8(64 - bits.TrailingZeros(uint(size)))}
}

func (t *table) home(h uint64) int { return int(h >> t.shift) }

func (t *table) next(i int) int { return (i + 1) & (len(t.slots) - 1) }

// find returns the key of hash h and ID id, nil when it finds none (see
// table for when a miss is certain).
func (t *table) find(h uint64, id string) *entry {
	i := t.home(h)
	for range len(t.slots) {
		s := &t.slots[i]
		sh := s.h.Load()
		if sh == 0 {
			return nil
		}
		if sh == h {
			if e := s.e.Load(); e != nil && e.hasID(id) {
				return e
			}
		}
		i = t.next(i)
	}
	return nil
}

// insert puts e, of hash h, into the first empty slot from its home; the
// table has one (the shard keeps it at most 3/4 full). The shard's mu is
// held.
func (t *table) insert(h uint64, e *entry) {
	i := t.home(h)
	for t.slots[i].h.Load() != 0 {
		i = t.next(i)
	}
	// The entry first: a reader that sees the hash and an older entry
	// compares IDs and goes on.
	t.slots[i].e.Store(e)
	t.slots[i].h.Store(h)
}

// remove empties slot i and shifts the keys after it back, so that no key
// lies beyond an empty slot from its home. The shard's mu is held.
func (t *table) remove(i int) {
	j := i
	for {
		j = t.next(j)
		hj := t.slots[j].h.Load()
		if hj == 0 {
			break
		}
		// The key at j may fill the hole at i unless its home lies
		// cyclically in (i, j].
		k := t.home(hj)
		if i <= j && i < k && k <= j || i > j && (i < k || k <= j) {
			continue
		}
		t.slots[i].e.Store(t.slots[j].e.Load())
		t.slots[i].h.Store(hj)
		i = j
	}
	t.slots[i].h.Store(0)
	t.slots[i].e.Store(nil)
}

// rehash returns a table of size slots holding the keys of t.
func (t *table) rehash(size int) *table {
	nt := newTable(size)
	for i := range t.slots {
		if h := t.slots[i].h.Load(); h != 0 {
			nt.insert(h, t.slots[i].e.Load())
		}
	}
	return nt
}
