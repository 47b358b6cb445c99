package breaker

import (
	"testing"
	"unsafe"
)

// TestEntryLayout: what a call reads of its key lies in the entry's first
// three cache lines, each of them holds a field the call reads before its
// first atomic write (so that the three load at once), and the entry stays
// 192 bytes, a size class whose objects start on a cache line (see entry).
// A field added or moved fails this test: then measure BenchmarkAllowKeys
// at 100,000 keys again.
func TestEntryLayout(t *testing.T) {
	var e entry
	if n := unsafe.Sizeof(e); n != 192 {
		t.Errorf("entry is %d bytes, want 192", n)
	}
	line := func(off uintptr) uintptr { return off / 64 }
	hot := map[string]uintptr{
		"idBuf": unsafe.Offsetof(e.idBuf), "fin": unsafe.Offsetof(e.fin) + unsafe.Sizeof(e.fin) - 1,
		"lim": unsafe.Offsetof(e.lim) + unsafe.Sizeof(e.lim) - 1, "lastUsed": unsafe.Offsetof(e.lastUsed),
		"pol": unsafe.Offsetof(e.pol), "inflight": unsafe.Offsetof(e.inflight), "flags": unsafe.Offsetof(e.flags),
	}
	for name, off := range hot {
		if line(off) > 2 {
			t.Errorf("%s ends at byte %d of the entry, beyond its first three cache lines", name, off)
		}
	}
	// Read before the call's first atomic write: idBuf (finding the key),
	// lastUsed and flags (allow, before inflight.Add).
	early := map[uintptr]string{}
	for _, name := range []string{"idBuf", "lastUsed", "flags"} {
		early[line(hot[name])] = name
	}
	for l := uintptr(0); l < 3; l++ {
		if _, ok := early[l]; !ok {
			t.Errorf("cache line %d of the entry holds no field a call reads before its first atomic write: %v", l, early)
		}
	}
}

// TestDone0InEntry: the done function of a call admitted in the first
// phase is the entry's own closure, which finishes that entry, not another
// object. It fails when the runtime lays out a method value's closure
// otherwise than closure (then done0 still works, but allocates).
func TestDone0InEntry(t *testing.T) {
	if finish0Code == 0 {
		t.Fatal("a method value's closure is not laid out as closure: done0 allocates one per call")
	}
	e := &entry{}
	e.fin = closure{code: finish0Code, e: e}
	done := e.done0()
	if p := *(*unsafe.Pointer)(unsafe.Pointer(&done)); p != unsafe.Pointer(&e.fin) {
		t.Fatalf("done0 is a closure at %p, want the entry's own at %p", p, &e.fin)
	}
	e.inflight.Store(1)
	done(nil)
	if n := e.inflight.Load(); n != 0 {
		t.Fatalf("after done0()(nil) the entry has %d calls in flight, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { e.inflight.Add(1); e.done0()(nil) }); n != 0 {
		t.Fatalf("done0 allocates %v times per call", n)
	}
}
