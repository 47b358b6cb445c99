package routes_test

// Attack on the file source by an operator's copy (atkctl): a document
// rewritten in place, keeping its size and modification time.

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/routes"
)

// TestFileRewrittenInPlaceSameSizeAndTime: `cp -p` or `install -p` of a
// document from a reproducible build (every mtime set to one constant)
// rewrites the file in place (same inode) with the same mtime; a change
// of one digit keeps the size. The source must still see the new
// document: a removal that never takes effect routes to a sandbox that
// ended.
func TestFileRewrittenInPlaceSameSizeAndTime(t *testing.T) {
	mtime := time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC) // SOURCE_DATE_EPOCH style
	path := filepath.Join(t.TempDir(), "routes.json")
	write := func(content string) {
		t.Helper()
		// os.WriteFile truncates and writes the same file, as cp does.
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	write(doc("pr-1", "h:1"))
	tbl := routes.New()
	src := routes.File(path)
	if err := tbl.Load(context.Background(), src); err != nil {
		t.Fatal(err)
	}
	write(doc("pr-2", "h:1")) // pr-1 removed, pr-2 created: same length
	if err := tbl.Load(context.Background(), src); err != nil {
		t.Fatal(err)
	}
	if up, ok := tbl.Lookup("pr-1", "cart"); ok {
		t.Fatalf("after the rewrite pr-1 still routes to %q", up)
	}
	if _, ok := tbl.Lookup("pr-2", "cart"); !ok {
		t.Fatal("after the rewrite pr-2 does not route")
	}
}
