package propagation

import (
	"testing"
	"unsafe"
)

// TestSandboxCtxSize: a context carrying a sandbox stays 64 bytes, one
// cache line (see sandboxCtx). A field added to it or to Sandbox fails
// this test: then measure what a breaker call costs at many keys again.
func TestSandboxCtxSize(t *testing.T) {
	if n := unsafe.Sizeof(sandboxCtx{}); n != 64 {
		t.Fatalf("sandboxCtx is %d bytes, want 64", n)
	}
}
