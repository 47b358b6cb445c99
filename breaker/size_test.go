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
	var e entry
	if n := unsafe.Sizeof(e); n != 192 {
		t.Errorf("entry is %d bytes, want 192", n)
	}
	hot := unsafe.Offsetof(e.flags) + unsafe.Sizeof(e.flags)
	if hot > 128 {
		t.Errorf("what a call reads ends at byte %d of the entry, want at most 128", hot)
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
