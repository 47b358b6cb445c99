package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/sandboxkit/sandboxkit/routes"
	"github.com/sandboxkit/sandboxkit/routes/etcdroutes"
	"github.com/sandboxkit/sandboxkit/routes/etcdroutes/etcdtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// ctl runs sandboxctl at the given moment and returns its exit status and
// output.
func ctl(t *testing.T, store string, now time.Time, args ...string) (int, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), append([]string{"-store", store, "-margin", "5s"}, args...),
		func(string) string { return "" }, func() time.Time { return now }, &out, &errOut)
	return code, out.String() + errOut.String()
}

func mustCtl(t *testing.T, store string, now time.Time, args ...string) string {
	t.Helper()
	code, out := ctl(t, store, now, args...)
	if code != exitOK {
		t.Fatalf("sandboxctl %s: exit %d: %s", strings.Join(args, " "), code, out)
	}
	return out
}

// follower is a route table kept in sync with the store; synced returns
// once the table reflects everything written before it was called.
type follower struct {
	table  *routes.Table
	synced func()
}

func TestFileStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "routes.json")
	tbl := routes.New()
	src := routes.File(path)
	lifecycle(t, "file:"+path, follower{tbl, func() {
		if err := tbl.Load(context.Background(), src); err != nil {
			t.Fatal(err)
		}
	}})
}

// startEtcd starts an etcd server for the test, and returns a client of
// it and the store spec naming its routes prefix.
func startEtcd(t *testing.T) (*clientv3.Client, string) {
	t.Helper()
	srv, err := etcdtest.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	c, err := etcdtest.Client(srv.Endpoint())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, "etcd://" + srv.Endpoint() + "/sandboxkit/routes/"
}

func TestEtcdStore(t *testing.T) {
	c, store := startEtcd(t)
	src, err := etcdroutes.New(c, "/sandboxkit/routes/", etcdroutes.ProgressEvery(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	tbl := routes.New()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Sync(ctx, tbl) }()
	defer func() { cancel(); <-done }()
	lifecycle(t, store, follower{tbl, func() {
		wctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := tbl.WaitSynced(wctx, time.Now()); err != nil {
			t.Fatalf("WaitSynced: %v (Err %v)", err, tbl.Err())
		}
	}})
}

// lifecycle runs a sandbox's life through sandboxctl against store, and
// checks at each step that a table following the store holds the windows
// sandboxctl stamped, from its clock plus the margin.
func lifecycle(t *testing.T, store string, f follower) {
	// A moment from now, not a fixed date: the table follows the store on
	// the real clock, and the sandbox created at a fixed t0 with -ttl 48h
	// expired for it 48 hours after t0 (on 2026-12-08 03:00 UTC).
	t0 := time.Now().UTC().Truncate(time.Second)
	margin := 5 * time.Second

	code, out := ctl(t, store, t0, "-json", "create", "pr-42", "-actor", "alice", "-origin", "github.com/acme/shop/pull/42",
		"-ttl", "48h", "-service", "cart=http://127.0.0.1:8081")
	if code != exitOK {
		t.Fatalf("create: %d %s", code, out)
	}
	var created struct {
		Sandbox       routes.Sandbox
		TicketCommand string
	}
	if err := json.Unmarshal([]byte(out), &created); err != nil {
		t.Fatalf("create -json: %v: %s", err, out)
	}
	if want := "sandboxticket -id pr-42 -actor alice -origin github.com/acme/shop/pull/42 -ttl 24h0m0s"; created.TicketCommand != want {
		t.Fatalf("ticket command %q, want %q", created.TicketCommand, want)
	}
	if code, out := ctl(t, store, t0, "create", "pr-42", "-actor", "bob"); code != exitExists {
		t.Fatalf("create of an existing sandbox: exit %d: %s", code, out)
	}

	f.synced()
	r, ok := f.table.Route("pr-42", "cart")
	if !ok || !r.ActiveFrom.Equal(t0.Add(margin)) {
		t.Fatalf("route %+v, want active from %v", r, t0.Add(margin))
	}
	if f.table.ActiveAt("pr-42", "cart", t0.Add(margin-time.Millisecond)) || !f.table.ActiveAt("pr-42", "cart", t0.Add(margin)) {
		t.Fatal("the window does not start at the stamped moment")
	}
	if sb, _ := f.table.Sandbox("pr-42"); !sb.Expires.Equal(t0.Add(48 * time.Hour)) {
		t.Fatalf("expires %v", sb.Expires)
	}

	t1 := t0.Add(time.Hour)
	mustCtl(t, store, t1, "route", "pr-42", "-service", "orders=127.0.0.1:9090", "-service", "cart=http://127.0.0.1:8082")
	mustCtl(t, store, t1, "extend", "pr-42", "-ttl", "72h")
	f.synced()
	if r, _ := f.table.Route("pr-42", "cart"); r.Upstream != "http://127.0.0.1:8082" || !r.ActiveFrom.Equal(t0.Add(margin)) {
		t.Fatalf("re-pointed cart: %+v, want the new upstream in the old window", r)
	}
	if r, _ := f.table.Route("pr-42", "orders"); !r.ActiveFrom.Equal(t1.Add(margin)) {
		t.Fatalf("orders: %+v", r)
	}
	if sb, _ := f.table.Sandbox("pr-42"); !sb.Expires.Equal(t1.Add(72 * time.Hour)) {
		t.Fatalf("extended to %v", sb.Expires)
	}

	t2 := t1.Add(time.Hour)
	mustCtl(t, store, t2, "remove", "pr-42", "-service", "orders")
	f.synced()
	if r, _ := f.table.Route("pr-42", "orders"); !r.RemovedAt.Equal(t2.Add(margin)) {
		t.Fatalf("orders removed at %v, want %v", r.RemovedAt, t2.Add(margin))
	}
	if !f.table.ActiveAt("pr-42", "orders", t2.Add(margin-time.Millisecond)) || f.table.ActiveAt("pr-42", "orders", t2.Add(margin)) {
		t.Fatal("the window does not end at the stamped moment")
	}

	t3 := t2.Add(time.Hour)
	mustCtl(t, store, t3, "remove", "pr-42")
	f.synced()
	if r, _ := f.table.Route("pr-42", "cart"); !r.RemovedAt.Equal(t3.Add(margin)) {
		t.Fatalf("cart removed at %v, want %v", r.RemovedAt, t3.Add(margin))
	}
	code, out = ctl(t, store, t3, "-json", "list")
	var listed []routes.Sandbox
	if err := json.Unmarshal([]byte(out), &listed); code != exitOK || err != nil || len(listed) != 1 || !listed[0].Expires.Equal(t3.Add(margin)) {
		t.Fatalf("list: exit %d, %v: %s", code, err, out)
	}
	if code, out := ctl(t, store, t3.Add(time.Minute), "extend", "pr-42"); code != exitNotFound {
		t.Fatalf("extend of a removed sandbox: exit %d: %s", code, out)
	}

	// Within the grace the stamped sandbox stays, for late readers.
	if out := mustCtl(t, store, t3.Add(30*time.Minute), "purge"); out != "" {
		t.Fatalf("purged within the grace: %s", out)
	}
	if out := mustCtl(t, store, t3.Add(2*time.Hour), "purge"); out != "purged pr-42\n" {
		t.Fatalf("purge: %q", out)
	}
	f.synced()
	if _, ok := f.table.Sandbox("pr-42"); ok {
		t.Fatal("purged sandbox still in the table")
	}
	if out := mustCtl(t, store, t3, "-json", "list"); strings.TrimSpace(out) != "[]" {
		t.Fatalf("list after purge: %s", out)
	}
}

func TestUsage(t *testing.T) {
	store := "file:" + filepath.Join(t.TempDir(), "routes.json")
	now := time.Now()
	for name, args := range map[string][]string{
		"no command":      {},
		"unknown command": {"frobnicate"},
		"no id":           {"create", "-actor", "a"},
		"no actor":        {"create", "pr-1"},
		"bad id":          {"create", "PR_1", "-actor", "a"},
		"bad upstream":    {"create", "pr-1", "-actor", "a", "-service", "cart=ftp://x"},
		"bad service":     {"create", "pr-1", "-actor", "a", "-service", "cart"},
		"stray argument":  {"list", "x"},
		"no services":     {"route", "pr-1"},
	} {
		t.Run(name, func(t *testing.T) {
			if code, out := ctl(t, store, now, args...); code != exitUsage {
				t.Fatalf("exit %d, want %d: %s", code, exitUsage, out)
			}
		})
	}
	if code, out := ctl(t, "", now, "list"); code != exitUsage {
		t.Fatalf("no store: exit %d: %s", code, out)
	}
	if code, out := ctl(t, store, now, "remove", "pr-404"); code != exitNotFound {
		t.Fatalf("remove of a missing sandbox: exit %d: %s", code, out)
	}
}

// TestHelpListsCommands: -h says what the commands are and take, not only
// the global flags: a user who runs sandboxctl -h learns how to create a
// sandbox. Each command's -h lists its own flags.
func TestHelpListsCommands(t *testing.T) {
	store := "file:" + filepath.Join(t.TempDir(), "routes.json")
	code, out := ctl(t, store, time.Now(), "-h")
	if code != exitOK {
		t.Fatalf("-h: exit %d: %s", code, out)
	}
	for _, want := range []string{
		"create ID -actor A", "route  ID -service name=upstream", "list", "extend ID -ttl", "remove ID", "purge",
		"-store", "-json", "-margin", "-timeout", "COMMAND -h",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("-h does not say %q:\n%s", want, out)
		}
	}
	if code, out := ctl(t, store, time.Now(), "create", "pr-1", "-h"); code != exitOK || !strings.Contains(out, "-actor") {
		t.Errorf("create -h: exit %d: %s", code, out)
	}
}
