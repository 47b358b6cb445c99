package routes_test

// Review of the file source's abandoned reads (rvround).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/routes"
)

// bigDoc is a document of n sandboxes, large enough that reading and
// parsing it outlasts a fetch given a moment.
func bigDoc(n int) string {
	var b strings.Builder
	b.WriteString(`{"sandboxes":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":"pr-%d","services":{"cart":"h%d:1","orders":"h%d:2"}}`, i, i, i)
	}
	b.WriteString(`]}`)
	return b.String()
}

// TestFileFetchAfterAnAbandonedReadIsNotNotModified: Fetch answers
// ErrNotModified when the document has not changed since the last
// successful fetch. A read abandoned when its fetch's context ended goes
// on, and installed the new document as the source's: the next Fetch
// compared against it and answered ErrNotModified, and a caller of Fetch
// (a Table given the source through a wrapper, SourceFunc) kept the old
// sandboxes as synced until the file changed again.
func TestFileFetchAfterAnAbandonedReadIsNotNotModified(t *testing.T) {
	path := filepath.Join(t.TempDir(), "routes.json")
	if err := os.WriteFile(path, []byte(doc("pr-old", "h:1")), 0o644); err != nil {
		t.Fatal(err)
	}
	src := routes.File(path)
	if _, err := src.Fetch(context.Background()); err != nil {
		t.Fatal(err)
	}
	const n = 100000
	abandoned := false
	for i := 0; i < 5 && !abandoned; i++ {
		if err := os.WriteFile(path, []byte(bigDoc(n+i)), 0o644); err != nil {
			t.Fatal(err)
		}
		// A moment: the read and parse of the document outlast it, and
		// the fetch gives up while the read goes on.
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		_, err := src.Fetch(ctx)
		cancel()
		abandoned = errors.Is(err, context.DeadlineExceeded)
	}
	if !abandoned {
		t.Fatal("no read was abandoned: the document was read within a millisecond five times")
	}
	// Wait for the abandoned read to end: while it runs, a fetch whose
	// context has ended says so.
	done, stop := context.WithCancel(context.Background())
	stop()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
		_, err := src.Fetch(done)
		if err == nil || !strings.Contains(err.Error(), "has not returned") {
			break
		}
		if time.Now().After(deadline) { // a guard against hanging the suite, not a measure
			t.Fatal("the abandoned read never returned")
		}
	}
	sbs, err := src.Fetch(context.Background())
	if err != nil {
		t.Fatalf("the fetch after an abandoned read: %v; want the new document, never fetched successfully", err)
	}
	if len(sbs) < n {
		t.Fatalf("%d sandboxes, want the new document's %d or more", len(sbs), n)
	}
}

// TestFetchAfterATableLoadReturnsTheDocument: a built-in source given to
// a table and also fetched by hand (a health check, a wrapper) answered
// the first Fetch with ErrNotModified, comparing against the document
// the table had read: the caller of Fetch never had it.
func TestFetchAfterATableLoadReturnsTheDocument(t *testing.T) {
	path := filepath.Join(t.TempDir(), "routes.json")
	if err := os.WriteFile(path, []byte(doc("pr-1", "h:1")), 0o644); err != nil {
		t.Fatal(err)
	}
	src := routes.File(path)
	if err := routes.New().Load(context.Background(), src); err != nil {
		t.Fatal(err)
	}
	sbs, err := src.Fetch(context.Background())
	if err != nil || len(sbs) != 1 || sbs[0].ID != "pr-1" {
		t.Fatalf("the first Fetch after a table's load: %v, %v; want pr-1", sbs, err)
	}
	if _, err := src.Fetch(context.Background()); !errors.Is(err, routes.ErrNotModified) {
		t.Fatalf("the second Fetch of an unchanged file: %v; want ErrNotModified", err)
	}
}
