package routes_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/routes"
)

// configMap reproduces the layout the kubelet gives a ConfigMap volume:
//
//	dir/..2026_12_05_12_00_00.000000001/routes.json   the data
//	dir/..data -> ..2026_12_05_12_00_00.000000001      swapped atomically
//	dir/routes.json -> ..data/routes.json              what the pod reads
type configMap struct {
	t   *testing.T
	dir string
	gen int
}

func newConfigMap(t *testing.T, content string) *configMap {
	c := &configMap{t: t, dir: t.TempDir()}
	c.swap(content, time.Time{})
	if err := os.Symlink(filepath.Join("..data", "routes.json"), filepath.Join(c.dir, "routes.json")); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *configMap) path() string { return filepath.Join(c.dir, "routes.json") }

// swap writes content into a new timestamped directory, points ..data at it
// with a rename (atomic, as the kubelet's AtomicWriter does) and removes
// the old directory. A non-zero mtime is set on the new file.
func (c *configMap) swap(content string, mtime time.Time) {
	t := c.t
	c.gen++
	ts := "..2026_12_05_12_00_00." + time.Duration(c.gen).String()
	if err := os.Mkdir(filepath.Join(c.dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(c.dir, ts, "routes.json")
	if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if !mtime.IsZero() {
		if err := os.Chtimes(file, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	old, _ := os.Readlink(filepath.Join(c.dir, "..data"))
	tmp := filepath.Join(c.dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(c.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(c.dir, old)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFileConfigMap: the file source follows a ConfigMap volume through
// the kubelet's swaps, while syncing.
func TestFileConfigMap(t *testing.T) {
	cm := newConfigMap(t, doc("pr-1", "h:1"))
	tbl := routes.New()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tbl.Sync(ctx, routes.File(cm.path()), routes.Every(2*time.Millisecond)) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "first load", func() bool { _, ok := tbl.Lookup("pr-1", "cart"); return ok })

	for i, want := range []string{"h:2", "h:3", "h:4"} {
		changed := tbl.Changed()
		cm.swap(doc("pr-1", want), time.Time{})
		select {
		case <-changed:
		case <-time.After(10 * time.Second):
			t.Fatalf("swap %d not picked up", i)
		}
		if up, _ := tbl.Lookup("pr-1", "cart"); up != want {
			t.Fatalf("after swap %d: %q, want %q", i, up, want)
		}
		if tbl.Err() != nil {
			t.Fatalf("Err after swap %d: %v", i, tbl.Err())
		}
	}
}

// TestFileConfigMapSameSizeAndTime: a swap to a file of the same size and
// modification time (coarse clocks, or a tool that preserves times) is
// still seen: it is another file.
func TestFileConfigMapSameSizeAndTime(t *testing.T) {
	mtime := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	cm := newConfigMap(t, doc("pr-1", "h:1"))
	os.Chtimes(filepath.Join(cm.dir, "..data", "routes.json"), mtime, mtime)
	tbl := routes.New()
	src := routes.File(cm.path())
	if err := tbl.Load(context.Background(), src); err != nil {
		t.Fatal(err)
	}
	cm.swap(doc("pr-1", "h:2"), mtime) // same length as h:1, same mtime
	if err := tbl.Load(context.Background(), src); err != nil {
		t.Fatal(err)
	}
	if up, _ := tbl.Lookup("pr-1", "cart"); up != "h:2" {
		t.Fatalf("after the swap: %q", up)
	}
}
