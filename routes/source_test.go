package routes_test

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/internal/clocktest"
	"github.com/sandboxkit/sandboxkit/routes"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil { // atomic, as config management does
		t.Fatal(err)
	}
}

func doc(id, upstream string) string {
	return fmt.Sprintf(`{"sandboxes":[{"id":%q,"services":{"cart":%q}}]}`, id, upstream)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestFileSync(t *testing.T) {
	path := filepath.Join(t.TempDir(), "routes.json")
	writeFile(t, path, doc("pr-1", "h:1"))

	tbl := routes.New()
	if err := tbl.Load(context.Background(), routes.File(path)); err != nil {
		t.Fatal(err)
	}
	if up, _ := tbl.Lookup("pr-1", "cart"); up != "h:1" {
		t.Fatalf("initial load: %q", up)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var errs atomic.Int32
	done := make(chan error, 1)
	go func() {
		done <- tbl.Sync(ctx, routes.File(path), routes.Every(5*time.Millisecond), routes.MaxBackoff(10*time.Millisecond),
			routes.OnError(func(error) { errs.Add(1) }))
	}()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Sync returned %v", err)
		}
	}()

	// Reload on change.
	changed := tbl.Changed()
	writeFile(t, path, doc("pr-1", "h:2")+"\n")
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("file change not picked up")
	}
	if up, _ := tbl.Lookup("pr-1", "cart"); up != "h:2" {
		t.Fatalf("after change: %q", up)
	}

	// A bad file is rejected whole; the last good table stays.
	writeFile(t, path, `{"sandboxes":[{"id":"pr-2","services":{"cart":"h:9"}},{"id":"BAD"}]}`)
	waitFor(t, "the bad file to be reported", func() bool { return tbl.Err() != nil && errs.Load() > 0 })
	if !errors.Is(tbl.Err(), routes.ErrInvalid) {
		t.Fatalf("Err() = %v", tbl.Err())
	}
	if _, ok := tbl.Lookup("pr-2", "cart"); ok {
		t.Fatal("part of a bad file was applied")
	}
	if up, _ := tbl.Lookup("pr-1", "cart"); up != "h:2" {
		t.Fatalf("last good table lost: %q", up)
	}

	// A missing file too; then recovery.
	os.Remove(path)
	waitFor(t, "the missing file to be reported", func() bool { return errors.Is(tbl.Err(), os.ErrNotExist) })
	writeFile(t, path, doc("pr-3", "h:3"))
	waitFor(t, "recovery", func() bool { _, ok := tbl.Lookup("pr-3", "cart"); return ok })
	if tbl.Err() != nil {
		t.Fatalf("Err() after recovery = %v", tbl.Err())
	}
	if _, ok := tbl.Lookup("pr-1", "cart"); ok {
		t.Fatal("pr-1 still routes after it left the file")
	}
}

func TestHTTPSync(t *testing.T) {
	var (
		mu      sync.Mutex
		body    = doc("pr-1", "h:1")
		fail    bool
		hits    int
		notMods int
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		hits++
		if fail {
			http.Error(w, "boom", http.StatusInternalServerError)
			return
		}
		etag := fmt.Sprintf(`"%08x"`, crc32.ChecksumIEEE([]byte(body)))
		if r.Header.Get("If-None-Match") == etag {
			notMods++
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("ETag", etag)
		fmt.Fprint(w, body)
	}))
	defer srv.Close()
	set := func(f func()) { mu.Lock(); f(); mu.Unlock() }
	get := func(f func() bool) bool { mu.Lock(); defer mu.Unlock(); return f() }

	tbl := routes.New()
	before := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- tbl.Sync(ctx, routes.HTTP(srv.URL, srv.Client()), routes.Every(5*time.Millisecond), routes.MaxBackoff(20*time.Millisecond))
	}()
	defer func() { cancel(); <-done }()

	waitFor(t, "first sync", func() bool { _, ok := tbl.Lookup("pr-1", "cart"); return ok })
	waitFor(t, "a 304", func() bool { return get(func() bool { return notMods > 0 }) })
	if tbl.SyncedAt().Before(before) {
		t.Fatalf("SyncedAt %v before the first fetch", tbl.SyncedAt())
	}

	// The endpoint fails: last good kept, SyncedAt stops advancing.
	set(func() { fail = true })
	waitFor(t, "the failure", func() bool { return tbl.Err() != nil })
	stale := tbl.SyncedAt()
	h := 0
	set(func() { h = hits })
	waitFor(t, "retries", func() bool { return get(func() bool { return hits >= h+3 }) })
	if !tbl.SyncedAt().Equal(stale) {
		t.Fatal("SyncedAt advanced while the source was failing")
	}
	if _, ok := tbl.Lookup("pr-1", "cart"); !ok {
		t.Fatal("last good table lost on failure")
	}

	set(func() { fail = false; body = doc("pr-2", "h:2") })
	waitFor(t, "recovery", func() bool { _, ok := tbl.Lookup("pr-2", "cart"); return ok })
	if !tbl.SyncedAt().After(stale) {
		t.Fatal("SyncedAt did not advance after recovery")
	}
}

func TestSyncedAtOfHandFilledTable(t *testing.T) {
	clk := clocktest.New()
	tbl := routes.New(routes.WithClock(clk.Now))
	if got := tbl.SyncedAt(); !got.IsZero() {
		t.Fatalf("a table neither filled nor given a source is synced up to nothing; SyncedAt = %v", got)
	}
	if err := tbl.Update([]routes.Sandbox{{ID: "pr-1"}}); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Hour)
	if !tbl.SyncedAt().Equal(clk.Now()) {
		t.Fatalf("a table filled by hand is its own source, always current; SyncedAt = %v", tbl.SyncedAt())
	}
	static, err := routes.NewStatic(nil, routes.WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	if !static.SyncedAt().Equal(clk.Now()) {
		t.Fatalf("NewStatic(nil): SyncedAt = %v, want now", static.SyncedAt())
	}
}

// TestConcurrentLookups runs lookups while the table reloads. Update number
// g (from 1) holds sandboxes s-0 … s-((g-1)%10), every one routing cart to
// "h:g": a snapshot from one update is a single generation, so each
// Sandboxes() result must be exactly such a set, lookups must never see a
// sandbox the generation they return does not hold, and no reader may see
// the table go back in time.
func TestConcurrentLookups(t *testing.T) {
	const generations = 300
	tbl := routes.New()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	var found atomic.Int64
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			if err := readConcurrently(ctx, tbl, &found); err != nil {
				errs <- err
			}
		})
	}
	for g := 1; g <= generations; g++ {
		sbs := make([]routes.Sandbox, (g-1)%10+1)
		for i := range sbs {
			sbs[i] = routes.Sandbox{ID: fmt.Sprintf("s-%d", i), Services: map[string]routes.Route{"cart": {Upstream: fmt.Sprintf("h:%d", g)}}}
		}
		if err := tbl.Update(sbs); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "a successful lookup", func() bool { return found.Load() > 0 || len(errs) > 0 })
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if found.Load() == 0 {
		t.Error("no lookup succeeded")
	}
	if g, err := generation(tbl.Sandboxes()); err != nil || g != generations {
		t.Errorf("after the last update: generation %d, %v; want %d", g, err, generations)
	}
}

// readConcurrently looks up and lists tbl until ctx ends, counting the
// successful lookups in found. It returns the first inconsistency it sees.
func readConcurrently(ctx context.Context, tbl *routes.Table, found *atomic.Int64) error {
	last := 0 // the newest generation seen
	for ctx.Err() == nil {
		for i := range 10 {
			up, ok := tbl.Lookup(fmt.Sprintf("s-%d", i), "cart")
			if !ok {
				continue
			}
			g, err := strconv.Atoi(strings.TrimPrefix(up, "h:"))
			switch {
			case err != nil || !strings.HasPrefix(up, "h:"):
				return fmt.Errorf("Lookup(s-%d) = %q, not an upstream the test set", i, up)
			case i > (g-1)%10:
				return fmt.Errorf("Lookup(s-%d) = %q, but generation %d has no s-%d", i, up, g, i)
			case g < last:
				return fmt.Errorf("Lookup(s-%d) = %q after generation %d was seen", i, up, last)
			}
			last = g
			found.Add(1)
		}
		g, err := generation(tbl.Sandboxes())
		switch {
		case err != nil:
			return err
		case g < last:
			return fmt.Errorf("Sandboxes() shows generation %d after generation %d was seen", g, last)
		}
		last = g
	}
	return nil
}

// generation returns the update a Sandboxes() result comes from (0 for the
// empty table), or an error when it mixes updates or is not one of them.
func generation(sbs []routes.Sandbox) (int, error) {
	if len(sbs) == 0 {
		return 0, nil
	}
	g, err := strconv.Atoi(strings.TrimPrefix(sbs[0].Services["cart"].Upstream, "h:"))
	if err != nil || len(sbs) != (g-1)%10+1 {
		return 0, fmt.Errorf("Sandboxes() = %s: not the content of one update", upstreams(sbs))
	}
	for i, sb := range sbs {
		if sb.ID != fmt.Sprintf("s-%d", i) || len(sb.Services) != 1 || sb.Services["cart"].Upstream != fmt.Sprintf("h:%d", g) {
			return 0, fmt.Errorf("Sandboxes() = %s: mixes updates (generation %d expected throughout)", upstreams(sbs), g)
		}
	}
	return g, nil
}

// upstreams describes sbs briefly: "[s-0:cart=h:1 …]".
func upstreams(sbs []routes.Sandbox) string {
	parts := make([]string, 0, len(sbs))
	for _, sb := range sbs {
		for _, svc := range slices.Sorted(maps.Keys(sb.Services)) {
			parts = append(parts, sb.ID+":"+svc+"="+sb.Services[svc].Upstream)
		}
	}
	return "[" + strings.Join(parts, " ") + "]"
}
