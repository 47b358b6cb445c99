package etcdtest_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/sandboxkit/sandboxkit/routes"
	"github.com/sandboxkit/sandboxkit/routes/etcdroutes"
	"github.com/sandboxkit/sandboxkit/routes/etcdroutes/etcdtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const prefix = "/sandboxkit/routes/"

// fast are the options of the tests: quick proofs and retries.
var fast = []etcdroutes.Option{
	etcdroutes.ProgressEvery(20 * time.Millisecond),
	etcdroutes.Timeout(time.Second),
	etcdroutes.MaxBackoff(200 * time.Millisecond),
}

func startServer(t testing.TB) *etcdtest.Server {
	t.Helper()
	srv, err := etcdtest.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return srv
}

func client(t testing.TB, endpoints ...string) *clientv3.Client {
	t.Helper()
	c, err := etcdtest.Client(endpoints...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func source(t testing.TB, c *clientv3.Client, opts ...etcdroutes.Option) *etcdroutes.Source {
	t.Helper()
	src, err := etcdroutes.New(c, prefix, append(append([]etcdroutes.Option{}, fast...), opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// syncing runs src.Sync for tbl until the test ends.
func syncing(t testing.TB, src *etcdroutes.Source, tbl *routes.Table) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Sync(ctx, tbl) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Sync returned %v", err)
		}
	})
}

func sandbox(id, upstream string) routes.Sandbox {
	return routes.Sandbox{ID: id, Actor: "alice", Services: map[string]routes.Route{"cart": {Upstream: upstream}}}
}

func put(t testing.TB, c *clientv3.Client, sb routes.Sandbox) {
	t.Helper()
	v, err := etcdroutes.Marshal(sb)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Put(ctx, prefix+sb.ID, string(v)); err != nil {
		t.Fatal(err)
	}
}

func del(t testing.TB, c *clientv3.Client, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Delete(ctx, prefix+id); err != nil {
		t.Fatal(err)
	}
}

// synced waits until tbl is synced up to now, and fails the test if that
// takes a minute.
func synced(t *testing.T, tbl *routes.Table) {
	t.Helper()
	syncedAt(t, tbl, time.Now())
}

// syncedAt waits until tbl is synced up to at.
func syncedAt(t *testing.T, tbl *routes.Table, at time.Time) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := tbl.WaitSynced(ctx, at); err != nil {
		t.Fatalf("WaitSynced: %v (Err: %v)", err, tbl.Err())
	}
}

// settled waits until tbl is synced up to now, and checks that it routes
// sandbox id to want and reports no error.
func settled(t *testing.T, tbl *routes.Table, id, want, when string) {
	t.Helper()
	synced(t, tbl)
	if got := lookup(tbl, id); got != want || tbl.Err() != nil {
		t.Fatalf("%s: %s routes to %q, want %q; Err %v", when, id, got, want, tbl.Err())
	}
}

// recovered waits until id routes to want and the table reports no error:
// after a server came back, the source may still fail a round trip that
// was in flight (on a loaded machine, a revision read may pass the short
// timeout these tests set), and recovers from that on its next load.
func recovered(t *testing.T, tbl *routes.Table, id, want, when string) {
	t.Helper()
	synced(t, tbl)
	deadline := time.Now().Add(time.Minute)
	for lookup(tbl, id) != want || tbl.Err() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s routes to %q, want %q; Err %v", when, id, lookup(tbl, id), want, tbl.Err())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func lookup(tbl *routes.Table, id string) string {
	up, _ := tbl.Lookup(id, "cart")
	return up
}

// TestSyncedMeansSynced: once a write has completed, waiting for the
// table to be synced up to that moment finds the write in it, every time:
// SyncedAt never runs ahead of the store. It holds with progress
// notifications (the server here is new enough to be trusted with them)
// and with proofs by reading, which servers too old for that get.
func TestSyncedMeansSynced(t *testing.T) {
	srv := startServer(t)
	c := client(t, srv.Endpoint())
	st, err := c.Status(context.Background(), srv.Endpoint())
	if err != nil {
		t.Fatal(err)
	}
	if !etcdroutes.ProgressNotifyTrusted(st.Version) {
		t.Fatalf("the test server, etcd %s, is not trusted with progress notifications", st.Version)
	}
	for name, opts := range map[string][]etcdroutes.Option{
		"progress notifications": nil,
		"proof by reading":       {etcdroutes.ProveByReading()},
	} {
		t.Run(name, func(t *testing.T) { syncedMeansSynced(t, c, opts) })
	}
}

func syncedMeansSynced(t *testing.T, c *clientv3.Client, opts []etcdroutes.Option) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Delete(ctx, prefix, clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	put(t, c, sandbox("pr-0", "h:999"))
	tbl := routes.New()
	syncing(t, source(t, c, opts...), tbl)

	for i := range 50 {
		id := fmt.Sprintf("pr-%d", i%5)
		want := fmt.Sprintf("h:%d", 1000+i)
		if i%7 == 6 {
			del(t, c, id)
			want = ""
		} else {
			put(t, c, sandbox(id, want))
		}
		// Another key under no prefix of ours moves the revision on
		// without an event for the watch: a progress notification (or
		// a read) has to prove it.
		if _, err := c.Put(context.Background(), "/elsewhere", want); err != nil {
			t.Fatal(err)
		}
		synced(t, tbl)
		if got := lookup(tbl, id); got != want {
			t.Fatalf("write %d: synced up to after it, the table routes %s to %q, want %q", i, id, got, want)
		}
		if err := tbl.Err(); err != nil {
			t.Fatalf("Err = %v", err)
		}
	}
	if r, ok := tbl.Route("pr-6", "cart"); ok {
		t.Fatalf("pr-6 was never written: %+v", r)
	}
}

// proxied starts a server and returns a client of it, a proxy in front
// of it, and a client that goes through the proxy.
func proxied(t *testing.T) (direct *clientv3.Client, proxy *etcdtest.Proxy, viaProxy *clientv3.Client) {
	t.Helper()
	srv := startServer(t)
	direct = client(t, srv.Endpoint())
	proxy, err := etcdtest.NewProxy(srv.Endpoint())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	return direct, proxy, client(t, proxy.Addr())
}

// TestCompaction: a watch that falls behind a compaction is answered by a
// fresh read, which also removes what was deleted meanwhile.
func TestCompaction(t *testing.T) {
	bothModes(t, testCompaction)
}

func testCompaction(t *testing.T, mode []etcdroutes.Option) {
	direct, proxy, viaProxy := proxied(t)
	put(t, direct, sandbox("pr-a", "h:1"))
	put(t, direct, sandbox("pr-b", "h:1"))
	tbl := routes.New()
	syncing(t, source(t, viaProxy, mode...), tbl)
	synced(t, tbl)

	proxy.Freeze()
	put(t, direct, sandbox("pr-c", "h:1"))
	del(t, direct, "pr-b")
	put(t, direct, sandbox("pr-a", "h:2"))
	resp, err := direct.Get(context.Background(), "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := direct.Compact(context.Background(), resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	// The events sent on the frozen link are lost: the client's watch
	// resumes from a revision etcd no longer has.
	proxy.Reset()
	proxy.Thaw()
	synced(t, tbl)
	if got := [3]string{lookup(tbl, "pr-a"), lookup(tbl, "pr-b"), lookup(tbl, "pr-c")}; got != [3]string{"h:2", "", "h:1"} {
		t.Fatalf("after compaction: pr-a, pr-b, pr-c route to %q", got)
	}
}

// TestServerRestart: while etcd is down the table keeps its content and
// its SyncedAt, and Err says the store is failing; after the restart it
// follows the store again.
func TestServerRestart(t *testing.T) {
	bothModes(t, testServerRestart)
}

func testServerRestart(t *testing.T, mode []etcdroutes.Option) {
	srv := startServer(t)
	c := client(t, srv.Endpoint())
	put(t, c, sandbox("pr-1", "h:1"))
	tbl := routes.New()
	syncing(t, source(t, c, mode...), tbl)
	synced(t, tbl)

	srv.Stop()
	stopped := time.Now()
	waitFor(t, "Err while etcd is down", func() bool { return tbl.Err() != nil })
	if msg := tbl.Err().Error(); !strings.Contains(msg, "source failing since") {
		t.Fatalf("Err = %q", msg)
	}
	if lookup(tbl, "pr-1") != "h:1" {
		t.Fatal("lost the last good content")
	}
	if tbl.SyncedAt().After(stopped) {
		t.Fatalf("SyncedAt %v is after etcd stopped (%v)", tbl.SyncedAt(), stopped)
	}

	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	put(t, c, sandbox("pr-2", "h:2"))
	synced(t, tbl)
	if lookup(tbl, "pr-2") != "h:2" || lookup(tbl, "pr-1") != "h:1" || tbl.Err() != nil {
		t.Fatalf("after the restart: pr-1 %q, pr-2 %q, Err %v", lookup(tbl, "pr-1"), lookup(tbl, "pr-2"), tbl.Err())
	}
}

// TestFrozenServer: a server that keeps its connections but answers
// nothing is a failure once the timeout passes: the table keeps its last
// good content, SyncedAt stays before the freeze, and Err says so.
func TestFrozenServer(t *testing.T) {
	bothModes(t, testFrozenServer)
}

func testFrozenServer(t *testing.T, mode []etcdroutes.Option) {
	direct, proxy, viaProxy := proxied(t)
	put(t, direct, sandbox("pr-1", "h:1"))
	tbl := routes.New()
	// Only the errors reported once the server is frozen are the test's:
	// on a loaded machine a round trip before the freeze may pass the
	// 300ms timeout too, be reported, and be followed by a good load
	// that clears Err: the test failed so, "Err = <nil>" right after the
	// first error reported, under -race with the machine overloaded.
	var frozenNow atomic.Bool
	var reported sync.Once
	errs := make(chan error, 1)
	syncing(t, source(t, viaProxy, append(mode, etcdroutes.Timeout(300*time.Millisecond), etcdroutes.OnError(func(err error) {
		if frozenNow.Load() {
			reported.Do(func() { errs <- err })
		}
	}))...), tbl)
	synced(t, tbl)

	proxy.Freeze()
	frozen := time.Now()
	frozenNow.Store(true)
	put(t, direct, sandbox("pr-1", "h:2"))
	var err1 error
	select {
	case err1 = <-errs:
	case <-time.After(time.Minute):
		t.Fatal("no error reported for a frozen server")
	}
	if !errors.Is(err1, context.DeadlineExceeded) && !strings.Contains(err1.Error(), "has not delivered") {
		t.Fatalf("reported %v", err1)
	}
	// A load in flight at the freeze may still have ended well after an
	// error was reported; none can once the server is frozen.
	deadline := time.Now().Add(time.Minute)
	for tbl.Err() == nil || !strings.Contains(tbl.Err().Error(), "source failing since") {
		if time.Now().After(deadline) {
			t.Fatalf("Err = %v", tbl.Err())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if lookup(tbl, "pr-1") != "h:1" {
		t.Fatal("lost the last good content, or saw a write through a frozen link")
	}
	if tbl.SyncedAt().After(frozen) {
		t.Fatalf("SyncedAt %v is after the freeze (%v)", tbl.SyncedAt(), frozen)
	}

	proxy.Thaw()
	recovered(t, tbl, "pr-1", "h:2", "after thawing")
}

// TestInvalidValue: a key whose value is not a valid sandbox keeps that
// sandbox as it was and holds SyncedAt back until it is fixed; Err names
// the key. On a fresh read it fails the whole read.
func TestInvalidValue(t *testing.T) {
	srv := startServer(t)
	c := client(t, srv.Endpoint())
	put(t, c, sandbox("pr-1", "h:1"))
	tbl := routes.New()
	syncing(t, source(t, c), tbl)
	synced(t, tbl)
	before := tbl.SyncedAt()

	for _, bad := range []string{
		`{"id":"pr-1","services":{"cart":"h:2"}},{"id":"pr-9"}`, // a second sandbox
		`{"id":"pr-2"}`,                         // another sandbox's key
		`{"id":"pr-1","id":"pr-1"}`,             // a repeated key
		`{"id":"pr-1","services":{"cart":"x"}}`, // a bad upstream
	} {
		if _, err := c.Put(context.Background(), prefix+"pr-1", bad); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "Err naming the key", func() bool {
			err := tbl.Err()
			return err != nil && strings.Contains(err.Error(), prefix+"pr-1") && errors.Is(err, routes.ErrInvalid)
		})
		if lookup(tbl, "pr-1") != "h:1" {
			t.Fatalf("value %s: the sandbox changed to %q", bad, lookup(tbl, "pr-1"))
		}
		if _, ok := tbl.Sandbox("pr-9"); ok {
			t.Fatalf("value %s: smuggled in another sandbox", bad)
		}
	}
	time.Sleep(100 * time.Millisecond) // several proofs' worth
	if !tbl.SyncedAt().Equal(before) {
		t.Fatalf("SyncedAt moved to %v while a key is invalid", tbl.SyncedAt())
	}
	other := routes.New()
	if err := other.Load(context.Background(), routes.SourceFunc(func(ctx context.Context) ([]routes.Sandbox, error) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- source(t, c).Sync(ctx, other) }()
		waitFor(t, "a fresh read to fail", func() bool { return other.Err() != nil })
		cancel()
		<-done
		return nil, other.Err()
	})); err == nil || !strings.Contains(err.Error(), prefix+"pr-1") {
		t.Fatalf("fresh read with an invalid key: %v", err)
	}

	put(t, c, sandbox("pr-1", "h:3"))
	settled(t, tbl, "pr-1", "h:3", "after the fix")
}

// TestFleet: a hundred tables watching a thousand sandboxes at once, all
// on one client, all follow a write and a delete.
func TestFleet(t *testing.T) {
	srv := startServer(t)
	c := client(t, srv.Endpoint())
	const sandboxes, tables = 1000, 100
	for i := 0; i < sandboxes; i += 100 {
		ops := make([]clientv3.Op, 0, 100)
		for j := i; j < i+100; j++ {
			v, err := etcdroutes.Marshal(sandbox(fmt.Sprintf("pr-%d", j), fmt.Sprintf("h:%d", 1000+j)))
			if err != nil {
				t.Fatal(err)
			}
			ops = append(ops, clientv3.OpPut(prefix+fmt.Sprintf("pr-%d", j), string(v)))
		}
		if _, err := c.Txn(context.Background()).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	// A hundred reads of a thousand keys at once take a while on a busy
	// machine (or with -race): a timeout that fits.
	src := source(t, c, etcdroutes.ProgressEvery(100*time.Millisecond), etcdroutes.Timeout(30*time.Second))
	start := time.Now()
	tbls := make([]*routes.Table, tables)
	for i := range tbls {
		tbls[i] = routes.New()
		syncing(t, src, tbls[i])
	}
	for _, tbl := range tbls {
		syncedAt(t, tbl, start)
		if n := len(tbl.Sandboxes()); n != sandboxes {
			t.Fatalf("a table holds %d sandboxes, want %d", n, sandboxes)
		}
	}
	t.Logf("%d tables loaded %d sandboxes in %v", tables, sandboxes, time.Since(start))
	start = time.Now()
	put(t, c, sandbox("pr-new", "h:1"))
	del(t, c, "pr-7")
	written := time.Now()
	for _, tbl := range tbls {
		syncedAt(t, tbl, written)
		if lookup(tbl, "pr-new") != "h:1" || lookup(tbl, "pr-7") != "" || lookup(tbl, "pr-999") != "h:1999" {
			t.Fatalf("a table missed the change: pr-new %q, pr-7 %q", lookup(tbl, "pr-new"), lookup(tbl, "pr-7"))
		}
	}
	t.Logf("%d tables synced past a write and a delete in %v", tables, time.Since(start))
}

func TestNewConfig(t *testing.T) {
	srv := startServer(t)
	c := client(t, srv.Endpoint())
	for name, tc := range map[string]struct {
		c      *clientv3.Client
		prefix string
		opts   []etcdroutes.Option
		want   string
	}{
		"nil client":      {nil, prefix, nil, "nil client"},
		"empty prefix":    {c, "", nil, "empty prefix"},
		"zero interval":   {c, prefix, []etcdroutes.Option{etcdroutes.ProgressEvery(0)}, "ProgressEvery"},
		"negative wait":   {c, prefix, []etcdroutes.Option{etcdroutes.Timeout(-1)}, "Timeout"},
		"jitter too high": {c, prefix, []etcdroutes.Option{etcdroutes.Jitter(1)}, "Jitter"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := etcdroutes.New(tc.c, tc.prefix, tc.opts...)
			if !errors.Is(err, etcdroutes.ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want ErrConfig naming %s", err, tc.want)
			}
		})
	}
	if _, err := etcdroutes.New(c, prefix, nil, etcdroutes.Jitter(0)); err != nil {
		t.Fatalf("nil option: %v", err)
	}
}
