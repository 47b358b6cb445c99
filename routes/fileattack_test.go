package routes_test

// Attacks on the file source as a ConfigMap volume (#15): what a kubelet,
// an operator or a broken volume does to the file under a table.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/routes"
)

// lastKnownGood loads src into tbl, which holds pr-1 → want, expecting
// the load to fail: the table keeps pr-1 → want and its SyncedAt, and Err
// reports the failure mentioning what.
func lastKnownGood(t *testing.T, tbl *routes.Table, src routes.Source, want, what string) {
	t.Helper()
	before := tbl.SyncedAt()
	err := tbl.Load(context.Background(), src)
	if err == nil {
		t.Fatalf("%s: Load succeeded", what)
	}
	if tbl.Err() == nil || !strings.Contains(tbl.Err().Error(), "source failing since") {
		t.Fatalf("%s: Err = %v", what, tbl.Err())
	}
	if up, _ := tbl.Lookup("pr-1", "cart"); up != want {
		t.Fatalf("%s: pr-1 routes to %q, want the last good %q", what, up, want)
	}
	if !tbl.SyncedAt().Equal(before) {
		t.Fatalf("%s: SyncedAt moved from %v to %v", what, before, tbl.SyncedAt())
	}
}

// TestFileConfigMapBadSwap: the kubelet swaps in a document that is not
// valid (an operator's typo in the ConfigMap): the table keeps its last
// good content and SyncedAt, Err says why, and the next good swap heals.
func TestFileConfigMapBadSwap(t *testing.T) {
	cm := newConfigMap(t, doc("pr-1", "h:1"))
	tbl := routes.New()
	src := routes.File(cm.path())
	if err := tbl.Load(context.Background(), src); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{
		"",                           // emptied
		`{"sandboxes":[{"id":"pr-1"`, // cut short
		`{"sandboxes":[{"id":"pr-1","services":{"cart":"h:2"}}],"sandboxes":[]}`, // a repeated key
		doc("PR_1", "h:2"), // an invalid ID
		doc("pr-1", "x"),   // a bad upstream
	} {
		cm.swap(bad, time.Time{})
		lastKnownGood(t, tbl, src, "h:1", fmt.Sprintf("swap to %q", bad))
	}
	cm.swap(doc("pr-1", "h:3"), time.Time{})
	if err := tbl.Load(context.Background(), src); err != nil || tbl.Err() != nil {
		t.Fatalf("good swap after bad ones: %v, Err %v", err, tbl.Err())
	}
	if up, _ := tbl.Lookup("pr-1", "cart"); up != "h:3" {
		t.Fatalf("after the good swap: %q", up)
	}
}

// TestFileVanishes: the file is deleted, the ..data link dangles, or the
// path becomes a directory: each is a failing source, never an empty
// table.
func TestFileVanishes(t *testing.T) {
	for name, break_ := range map[string]func(t *testing.T, cm *configMap){
		"file deleted": func(t *testing.T, cm *configMap) {
			if err := os.Remove(filepath.Join(cm.dir, "..data", "routes.json")); err != nil {
				t.Fatal(err)
			}
		},
		"..data dangles": func(t *testing.T, cm *configMap) {
			target, err := os.Readlink(filepath.Join(cm.dir, "..data"))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.RemoveAll(filepath.Join(cm.dir, target)); err != nil {
				t.Fatal(err)
			}
		},
		"link deleted": func(t *testing.T, cm *configMap) {
			if err := os.Remove(cm.path()); err != nil {
				t.Fatal(err)
			}
		},
		"path is a directory": func(t *testing.T, cm *configMap) {
			if err := os.Remove(cm.path()); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(cm.path(), 0o755); err != nil {
				t.Fatal(err)
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			cm := newConfigMap(t, doc("pr-1", "h:1"))
			tbl := routes.New()
			src := routes.File(cm.path())
			if err := tbl.Load(context.Background(), src); err != nil {
				t.Fatal(err)
			}
			break_(t, cm)
			lastKnownGood(t, tbl, src, "h:1", name)
			lastKnownGood(t, tbl, src, "h:1", name+", again")
		})
	}
}

// TestFileConfigMapSwapWhileReading: the kubelet swaps ..data again and
// again while tables read: every load sees one whole document or the
// other, never an error or a mix, and once the swaps stop every table
// ends on the last document.
func TestFileConfigMapSwapWhileReading(t *testing.T) {
	cm := newConfigMap(t, doc("pr-1", "h:1000"))
	src := routes.File(cm.path())
	const swaps = 300
	var (
		wg   sync.WaitGroup
		stop = make(chan struct{})
	)
	tbls := make([]*routes.Table, 4)
	for i := range tbls {
		tbls[i] = routes.New()
		wg.Add(1)
		go func(tbl *routes.Table) {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := tbl.Load(context.Background(), src); err != nil {
					t.Errorf("a load during the swaps: %v", err)
					return
				}
				sbs := tbl.Sandboxes()
				if len(sbs) != 1 || sbs[0].ID != "pr-1" {
					t.Errorf("a load during the swaps holds %+v", sbs)
					return
				}
			}
		}(tbls[i])
	}
	for i := range swaps {
		cm.swap(doc("pr-1", fmt.Sprintf("h:%d", 1001+i)), time.Time{})
	}
	close(stop)
	wg.Wait()
	want := fmt.Sprintf("h:%d", 1000+swaps)
	for _, tbl := range tbls {
		if err := tbl.Load(context.Background(), src); err != nil {
			t.Fatal(err)
		}
		if up, _ := tbl.Lookup("pr-1", "cart"); up != want {
			t.Fatalf("after the swaps: %q, want %q", up, want)
		}
	}
}
