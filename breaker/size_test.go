package breaker

import (
	"testing"
	"unsafe"
)

// TestEntryLayout: what a call reads of its key fills the entry's first two
// cache lines, each holding a field the call reads before its first atomic
// write, and the entry stays 192 bytes, a size class whose objects
// start on a cache line (see entry). A field added or moved fails this
// test: then measure BenchmarkAllowKeys at 100,000 keys again.
func TestEntryLayout(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("the entry's layout is laid out for 64-bit platforms; on 32-bit ones its fields are smaller")
	}
	var e entry
	if n := unsafe.Sizeof(e); n != 192 {
		t.Errorf("entry is %d bytes, want 192", n)
	}
	// Every field an admitted call in the first phase reads, each
	// checked on its own: that the last of them ends by byte 128 says
	// nothing of one moved past it (done0 swapped with slow, say, keeps
	// every other offset and puts a line more on every call).
	for name, end := range map[string]uintptr{
		"idLen":    unsafe.Offsetof(e.idLen) + unsafe.Sizeof(e.idLen),
		"idBuf":    unsafe.Offsetof(e.idBuf) + unsafe.Sizeof(e.idBuf),
		"pol":      unsafe.Offsetof(e.pol) + unsafe.Sizeof(e.pol),
		"done0":    unsafe.Offsetof(e.done0) + unsafe.Sizeof(e.done0),
		"lim":      unsafe.Offsetof(e.lim) + unsafe.Sizeof(e.lim),
		"lastUsed": unsafe.Offsetof(e.lastUsed) + unsafe.Sizeof(e.lastUsed),
		"inflight": unsafe.Offsetof(e.inflight) + unsafe.Sizeof(e.inflight),
		"flags":    unsafe.Offsetof(e.flags) + unsafe.Sizeof(e.flags),
	} {
		if end > 128 {
			t.Errorf("%s, which every call reads, ends at byte %d of the entry, want at most 128", name, end)
		}
	}
	// Read before the call's first atomic write, one in each line, so
	// that the two lines are fetched together.
	if off := unsafe.Offsetof(e.idBuf); off >= 64 {
		t.Errorf("idBuf at byte %d, want it in the entry's first cache line", off)
	}
	if off := unsafe.Offsetof(e.lastUsed); off < 64 || off >= 128 {
		t.Errorf("lastUsed at byte %d, want it in the entry's second cache line", off)
	}
	for name, off := range map[string]uintptr{"id": unsafe.Offsetof(e.id), "cur": unsafe.Offsetof(e.cur), "g": unsafe.Offsetof(e.g)} {
		if off < 128 {
			t.Errorf("%s at byte %d, among what every call reads", name, off)
		}
	}
}
