package breaker

import (
	"testing"
	"unsafe"
)

// TestEntryLayout: what a call reads of its key fills the entry's first two
// cache lines, and the entry stays 192 bytes, a size class whose objects
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
	for name, off := range map[string]uintptr{"id": unsafe.Offsetof(e.id), "cur": unsafe.Offsetof(e.cur), "g": unsafe.Offsetof(e.g)} {
		if off < 128 {
			t.Errorf("%s at byte %d, among what every call reads", name, off)
		}
	}
}
