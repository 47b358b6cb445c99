//go:build unix

package routes_test

// Attack on the file source by a mount that hangs (atkctl).

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/routes"
)

// TestFileHangingReadIsReported: a read of the document that never
// returns (a hung NFS or FUSE mount; here a named pipe no one writes,
// whose open blocks the same way) must not stop the sync unseen:
// FetchTimeout abandons it, Err says so, and the last good table and
// its SyncedAt stay. Later fetches do not pile up behind it.
func TestFileHangingReadIsReported(t *testing.T) {
	path := filepath.Join(t.TempDir(), "routes.json")
	if err := os.WriteFile(path, []byte(doc("pr-1", "h:1")), 0o644); err != nil {
		t.Fatal(err)
	}
	tbl := routes.New()
	src := routes.File(path)
	if err := tbl.Load(context.Background(), src); err != nil {
		t.Fatal(err)
	}
	synced := tbl.SyncedAt()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tbl.Sync(ctx, src, routes.Every(time.Millisecond), routes.MaxBackoff(time.Millisecond),
			routes.FetchTimeout(20*time.Millisecond), routes.OnError(func(err error) {
				select {
				case errs <- err:
				default:
				}
			}))
	}()
	defer func() {
		cancel()
		// Let the hung open return: a writer comes, and goes.
		if w, err := os.OpenFile(path, os.O_WRONLY, 0); err == nil {
			w.Close()
		}
		<-done
	}()
	for range 2 { // the hung fetch, and one behind it
		select {
		case err := <-errs:
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("the hung read failed with %v, want the fetch timeout", err)
			}
		case <-time.After(30 * time.Second): // a guard against hanging the suite, not a measure
			t.Fatal("a hung read stopped the sync unseen: no error after 30s")
		}
	}
	if tbl.Err() == nil {
		t.Fatal("Err is nil while the read hangs")
	}
	if !tbl.SyncedAt().Equal(synced) {
		t.Fatalf("SyncedAt moved from %v to %v while the read hangs", synced, tbl.SyncedAt())
	}
	if up, _ := tbl.Lookup("pr-1", "cart"); up != "h:1" {
		t.Fatalf("pr-1 routes to %q, want the last good h:1", up)
	}
}
