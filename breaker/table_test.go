package breaker

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/internal/clocktest"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// tableID is the ID of key k of TestTableModel: one key in three has an
// ID too long to be held in its entry.
func tableID(k int) string {
	if k%3 == 0 {
		return fmt.Sprintf("k-%d-long-enough-not-to-fit", k)
	}
	return fmt.Sprintf("k-%d", k)
}

// TestEntryHasID: an entry matches its own ID and no other, whether the ID
// is held in the entry or not, including IDs of the same length and IDs
// one is a prefix of.
func TestEntryHasID(t *testing.T) {
	ids := []string{"", "a", "b", "ab", "pr-42", "pr-43", "123456789012345", "123456789012346",
		"1234567890123456", "1234567890123457", "12345678901234567", strings.Repeat("z", 63)}
	for _, id := range ids {
		e := &entry{}
		e.setID(strings.Clone(id))
		if e.id != id {
			t.Errorf("setID(%q): id = %q", id, e.id)
		}
		if inline := len(id) <= len(e.idBuf); inline != (e.idLen != longID) {
			t.Errorf("setID(%q): idLen = %d, want the ID held in the entry: %v", id, e.idLen, inline)
		}
		for _, other := range ids {
			if got := e.hasID(other); got != (other == id) {
				t.Errorf("entry of %q: hasID(%q) = %v", id, other, got)
			}
		}
	}
}

// TestTableModel drives a table through random inserts and removals with
// hashes from a small range (so that many keys share a hash or a home
// slot, and runs of keys wrap around the end of the table) and checks,
// after every step, that it finds exactly the keys a Go map holds.
func TestTableModel(t *testing.T) {
	for _, hashes := range []uint64{1, 3, 16, 1 << 62} {
		t.Run(fmt.Sprint(hashes), func(t *testing.T) {
			r := rand.New(rand.NewPCG(hashes, 7))
			sh := &shard{}
			sh.tab.Store(newTable(minSlots))
			model := map[string]uint64{}
			// hashes distinct values, spread over the high bits that
			// pick a home slot; never 0.
			hashOf := func(id string) uint64 {
				f := fnv.New64a()
				f.Write([]byte(id))
				return (f.Sum64()%hashes + 1) * 0x9e3779b97f4a7c15
			}
			for step := range 3000 {
				id := tableID(r.IntN(200))
				h := hashOf(id)
				if _, ok := model[id]; !ok && r.IntN(2) == 0 {
					e := &entry{}
					e.setID(id)
					sh.insert(h, e)
					model[id] = h
				} else if ok {
					tab := sh.tab.Load()
					i := tab.home(h)
					for tab.slots[i].e.Load() == nil || tab.slots[i].e.Load().id != id {
						i = tab.next(i)
					}
					tab.remove(i)
					sh.n--
					delete(model, id)
				}
				tab := sh.tab.Load()
				for k := range 200 {
					id := tableID(k)
					e := tab.find(hashOf(id), id)
					if _, ok := model[id]; ok != (e != nil) || e != nil && e.id != id {
						t.Fatalf("step %d: find(%s) = %v, model holds it: %v", step, id, e, ok)
					}
				}
				used := 0
				for i := range tab.slots {
					if tab.slots[i].h.Load() != 0 {
						used++
					}
				}
				if used != len(model) || sh.n != len(model) {
					t.Fatalf("step %d: %d slots used, n = %d, want %d", step, used, sh.n, len(model))
				}
			}
		})
	}
}

// TestHashCollisions: with every key's hash one of three values, each
// sandbox still has its own budget, and eviction takes only idle keys.
func TestHashCollisions(t *testing.T) {
	clk := clocktest.New()
	g := NewGroup(Settings{Budget: Budget{Rate: 1, Burst: 1}, IdleTimeout: time.Minute}, WithClock(clk.Now))
	g.hashMask = 3
	const keys = 300
	call := func(i int) error {
		done, err := g.AllowSandbox(context.Background(), propagation.Sandbox{ID: fmt.Sprintf("sb-%d", i)})
		if err == nil {
			done(nil)
		}
		return err
	}
	for i := range keys {
		if err := call(i); err != nil {
			t.Fatalf("first call of key %d: %v", i, err)
		}
	}
	for i := range keys {
		if err := call(i); err == nil {
			t.Fatalf("second call of key %d admitted: it shares another key's bucket", i)
		}
	}
	clk.Advance(40 * time.Second)
	for i := 0; i < keys; i += 2 {
		if err := call(i); err != nil { // refilled by now
			t.Fatalf("key %d after 40 s: %v", i, err)
		}
	}
	clk.Advance(40 * time.Second) // odd keys idle 80 s, even ones 40 s
	if n := g.Sweep(); n != keys/2 {
		t.Fatalf("Sweep evicted %d keys, want the %d idle ones", n, keys/2)
	}
	for i := range keys {
		e := g.lookup(fmt.Sprintf("sb-%d", i))
		if (e != nil) != (i%2 == 0) || e != nil && e.id != fmt.Sprintf("sb-%d", i) {
			t.Fatalf("key %d after the sweep: %v", i, e)
		}
	}
}

// TestTableConcurrentChanges: while the sweep evicts thousands of idle
// keys (shifting the keys after them back in their tables) and calls
// create thousands of new ones (growing the tables), every call of a new
// key finds the one entry of its key: with the clock standing still, each
// key admits exactly its burst, however the lock-free lookups and the
// changes interleave (a lookup that missed a key and made a second entry
// would admit more).
func TestTableConcurrentChanges(t *testing.T) {
	clk := clocktest.New()
	g := NewGroup(Settings{Budget: Budget{Rate: 1, Burst: 3}, IdleTimeout: time.Minute}, WithClock(clk.Now))
	const old, keys, callers = 20000, 2000, 4
	for i := range old {
		g.try(fmt.Sprintf("old-%d", i), nil)
	}
	clk.Advance(2 * time.Minute) // every old key idle; the clock stands still from here
	var admitted [keys]atomic.Int32
	stopSweeping := sweeping(g)
	var wg sync.WaitGroup
	for c := range callers {
		wg.Go(func() {
			for round := range 2 {
				for i := range keys {
					k := (i + c*keys/callers + round*keys/2) % keys
					if done, err := g.AllowSandbox(context.Background(), propagation.Sandbox{ID: fmt.Sprintf("new-%d", k)}); err == nil {
						admitted[k].Add(1)
						done(nil)
					}
				}
			}
		})
	}
	wg.Wait()
	stopSweeping()
	g.Sweep()
	// The sweep and the growth steps of new keys evicted every old key.
	if n := g.Len(); n != keys {
		t.Fatalf("the group holds %d keys, want the %d new ones", n, keys)
	}
	for i := range keys {
		if n := admitted[i].Load(); n != 3 {
			t.Errorf("key %d admitted %d calls, want its burst, 3", i, n)
		}
	}
}

// sweeping runs g.Sweep over and over, as a busy sweeper would, until the
// function it returns is called; that function waits for the last sweep.
func sweeping(g *Group) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
				g.Sweep()
			}
		}
	})
	return func() { close(done); wg.Wait() }
}
