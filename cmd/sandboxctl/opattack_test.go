package main

// Attacks on sandboxctl as an operator runs it (atkctl): the file it
// rewrites keeps what the operator set on it (permissions, owner, a
// symbolic link to the real document), and a flag given the wrong way
// round never deletes live sandboxes.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sandboxkit/sandboxkit/routes"
)

// TestRewriteKeepsFileMode: a routes file holds test database DSNs, with
// their passwords; an operator who made it 0600 (or 0640, for the
// service's group) must not find it world-readable after the next
// extend.
func TestRewriteKeepsFileMode(t *testing.T) {
	now := time.Now()
	for _, mode := range []os.FileMode{0o600, 0o640, 0o664} {
		t.Run(mode.String(), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "routes.json")
			store := "file:" + path
			mustCtl(t, store, now, "create", "pr-1", "-actor", "a", "-database", "postgres://u:secret@db/x")
			if err := os.Chmod(path, mode); err != nil {
				t.Fatal(err)
			}
			mustCtl(t, store, now, "extend", "pr-1", "-ttl", "10h")
			mustCtl(t, store, now, "create", "pr-2", "-actor", "a")
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if got := fi.Mode().Perm(); got != mode {
				t.Fatalf("after rewrites the file is %v, want %v as the operator set it", got, mode)
			}
		})
	}
}

// TestRewriteKeepsOwner: a routes file owned by the service's user and
// group stays theirs when root rewrites it, or a 0600 file would lock its
// readers out.
func TestRewriteKeepsOwner(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("changing a file's owner needs root")
	}
	now := time.Now()
	path := filepath.Join(t.TempDir(), "routes.json")
	store := "file:" + path
	mustCtl(t, store, now, "create", "pr-1", "-actor", "a")
	if err := os.Chown(path, 4242, 4343); err != nil {
		t.Fatal(err)
	}
	mustCtl(t, store, now, "extend", "pr-1", "-ttl", "10h")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != 4242 || st.Gid != 4343 {
		t.Fatalf("after a rewrite the file belongs to %d:%d, want 4242:4343", st.Uid, st.Gid)
	}
}

// TestSymlinkedFile: the store named through a symbolic link to the
// document (a path kept stable across deployments) is the document: a
// change through the link lands in the file the link names, the link
// stays a link, and changes through the link and through the file at
// once are serialized on one lock, none lost.
func TestSymlinkedFile(t *testing.T) {
	now := time.Now()
	dir := t.TempDir()
	real := filepath.Join(dir, "data", "routes.json")
	if err := os.Mkdir(filepath.Dir(real), 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "routes.json")
	if err := os.Symlink(filepath.Join("data", "routes.json"), link); err != nil {
		t.Fatal(err)
	}
	mustCtl(t, "file:"+real, now, "create", "pr-0", "-actor", "a")
	const n = 8
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(2)
		go func() {
			defer wg.Done()
			mustCtl(t, "file:"+link, now, "create", fmt.Sprintf("link-%d", i), "-actor", "a")
		}()
		go func() {
			defer wg.Done()
			mustCtl(t, "file:"+real, now, "create", fmt.Sprintf("real-%d", i), "-actor", "a")
		}()
	}
	wg.Wait()
	fi, err := os.Lstat(link)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("%s is %v after the changes, want the symbolic link it was", link, fi.Mode())
	}
	for _, store := range []string{"file:" + link, "file:" + real} {
		if got := listed(t, store, now); len(got) != 2*n+1 {
			t.Fatalf("%s lists %d sandboxes, want %d: %v", store, len(got), 2*n+1, got)
		}
	}
}

// TestSymlinkToNothing: a link whose document is missing (a volume not
// mounted) is an error, not a new document written over the link, nor
// an empty list.
func TestSymlinkToNothing(t *testing.T) {
	now := time.Now()
	dir := t.TempDir()
	link := filepath.Join(dir, "routes.json")
	if err := os.Symlink(filepath.Join(dir, "unmounted", "routes.json"), link); err != nil {
		t.Fatal(err)
	}
	if code, out := ctl(t, "file:"+link, now, "create", "pr-1", "-actor", "a"); code != exitFailed {
		t.Fatalf("create through a dangling link: exit %d, want %d: %s", code, exitFailed, out)
	}
	if code, out := ctl(t, "file:"+link, now, "list"); code != exitFailed {
		t.Fatalf("list through a dangling link: exit %d, want %d: %s", code, exitFailed, out)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the dangling link was replaced: %v, %v", fi, err)
	}
}

// TestPurgeNegativeGrace: -grace -72h (a sign slipped in) must not purge
// the sandboxes that expire in the next 72 hours, live ones, with no
// tombstone left for the readers.
func TestPurgeNegativeGrace(t *testing.T) {
	now := time.Now()
	for name, store := range stores(t) {
		t.Run(name, func(t *testing.T) {
			mustCtl(t, store, now, "create", "pr-live", "-actor", "a", "-service", "cart=h:1")
			if code, out := ctl(t, store, now, "purge", "-grace", "-1000h"); code != exitUsage {
				t.Fatalf("purge -grace -1000h: exit %d, want %d (usage): %s", code, exitUsage, out)
			}
			if _, ok := listed(t, store, now)["pr-live"]; !ok {
				t.Fatal("purge with a negative grace deleted a live sandbox")
			}
		})
	}
}

// TestHelperCtl is not a test: TestRewriteRefusedWhenOwnerCannotBeKept
// runs the test binary as sandboxctl under another user.
func TestHelperCtl(t *testing.T) {
	store := os.Getenv("SANDBOXCTL_HELPER_STORE")
	if store == "" {
		t.Skip("helper process only")
	}
	if limit := os.Getenv("SANDBOXCTL_HELPER_FSIZE"); limit != "" {
		n, err := strconv.ParseUint(limit, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: n, Max: n}); err != nil {
			t.Fatal(err)
		}
	}
	code, out := ctl(t, store, time.Now(), strings.Fields(os.Getenv("SANDBOXCTL_HELPER_ARGS"))...)
	os.Stdout.WriteString(out)
	os.Exit(code)
}

// asUser prepares a directory another user may write, with a copy of
// the test binary in it, and returns the directory and a function that
// runs sandboxctl ARGS on the file store there as uid:gid, returning its
// exit status and output.
func asUser(t *testing.T) (string, func(uid, gid uint32, args string) (int, string)) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("running as another user needs root")
	}
	dir := t.TempDir()
	// The other user may traverse the test's directories and write this one.
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "sandboxctl.test")
	exe, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, exe, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, func(uid, gid uint32, args string) (int, string) {
		t.Helper()
		cmd := exec.Command(bin, "-test.run=^TestHelperCtl$")
		cmd.Env = append(os.Environ(), "SANDBOXCTL_HELPER_STORE=file:"+filepath.Join(dir, "routes.json"), "SANDBOXCTL_HELPER_ARGS="+args)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		switch {
		case err == nil:
			return exitOK, string(out)
		case errors.As(err, &exit):
			return exit.ExitCode(), string(out)
		}
		t.Fatal(err)
		return 0, ""
	}
}

// TestSharedByAGroupOfOperators: operators in one group share a
// group-writable document; the lock file the first one left (0644, hers)
// must not lock the others out of every change.
func TestSharedByAGroupOfOperators(t *testing.T) {
	const alice, bob, group = 4244, 4245, 4343
	dir, runAs := asUser(t)
	path := filepath.Join(dir, "routes.json")
	if code, out := runAs(alice, group, "create pr-1 -actor alice"); code != exitOK {
		t.Fatalf("alice: create: exit %d: %s", code, out)
	}
	if err := os.Chmod(path, 0o664); err != nil {
		t.Fatal(err)
	}
	if code, out := runAs(bob, group, "create pr-2 -actor bob"); code != exitOK {
		t.Fatalf("bob: create beside alice's lock file: exit %d: %s", code, out)
	}
	if code, out := runAs(alice, group, "list"); code != exitOK || !strings.Contains(out, "pr-2") {
		t.Fatalf("alice: list: exit %d: %s", code, out)
	}
}

// TestRewriteRefusedWhenOwnerCannotBeKept: an operator who is not root
// changes a 0640 document of the service's user through its group; the
// rewritten file could only be the operator's, and the service would
// lose it: the change is refused and the document stays the service's.
func TestRewriteRefusedWhenOwnerCannotBeKept(t *testing.T) {
	const service, operator, group = 4242, 4244, 4343
	now := time.Now()
	dir, runAs := asUser(t)
	path := filepath.Join(dir, "routes.json")
	mustCtl(t, "file:"+path, now, "create", "pr-1", "-actor", "a", "-database", "postgres://u:secret@db/x")
	for _, f := range []string{path, path + ".lock"} {
		if err := os.Chown(f, service, group); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	code, out := runAs(operator, group, "extend pr-1 -ttl 10h")
	if code != exitFailed || !strings.Contains(out, "4242:4343") {
		t.Fatalf("extend as %d:%d: exit %d, want %d and an error naming the owner it could not keep: %s", operator, group, code, exitFailed, out)
	}
	after, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := after.Sys().(*syscall.Stat_t)
	if st.Uid != service || st.Gid != group || after.Mode().Perm() != 0o640 {
		t.Fatalf("the document is now %d:%d %v, want %d:%d -rw-r-----", st.Uid, st.Gid, after.Mode().Perm(), service, group)
	}
	if now, _ := os.ReadFile(path); string(now) != string(before) {
		t.Fatalf("the refused change was written:\n%s", now)
	}
}

// TestFileStoreWithoutPath: SANDBOXCTL_STORE=file:$ROUTES with ROUTES
// unset names no document; list must not answer that no sandbox exists
// (a CI job would create one beside the real store), and no command may
// leave files in the working directory.
func TestFileStoreWithoutPath(t *testing.T) {
	now := time.Now()
	t.Chdir(t.TempDir())
	for _, args := range [][]string{{"list"}, {"purge"}, {"create", "pr-1", "-actor", "a"}, {"remove", "pr-1"}} {
		if code, out := ctl(t, "file:", now, args...); code != exitUsage {
			t.Errorf("-store file: %s: exit %d, want %d (usage): %s", strings.Join(args, " "), code, exitUsage, out)
		}
	}
	if left, _ := filepath.Glob("*"); len(left) > 0 { // dot files included
		t.Errorf("left in the working directory: %v", left)
	}
}

// TestFileStoreInMissingDirectory: a store path with a typo in its
// directory (or a volume not mounted) is not an empty store: list and
// purge fail rather than report that there are no sandboxes.
func TestFileStoreInMissingDirectory(t *testing.T) {
	now := time.Now()
	store := "file:" + filepath.Join(t.TempDir(), "no-such-dir", "routes.json")
	for _, args := range [][]string{{"list"}, {"purge"}, {"create", "pr-1", "-actor", "a"}} {
		if code, out := ctl(t, store, now, args...); code != exitFailed || !strings.Contains(out, "no-such-dir") {
			t.Errorf("%s: exit %d, want %d naming the missing directory: %s", strings.Join(args, " "), code, exitFailed, out)
		}
	}
}

// TestReaderNeverSeesHalfADocument: a table polling the document while
// CI jobs change it reads a whole document every time, the one before a
// change or the one after: never an error, and never fewer sandboxes
// than it read before (the jobs only create).
func TestReaderNeverSeesHalfADocument(t *testing.T) {
	const n = 30
	now := time.Now()
	path := filepath.Join(t.TempDir(), "routes.json")
	store := "file:" + path
	mustCtl(t, store, now, "create", "pr-0", "-actor", "a")
	stop := make(chan struct{})
	result := make(chan error, 1)
	go func() {
		tbl := routes.New()
		src := routes.File(path)
		last := 0
		for {
			if err := tbl.Load(context.Background(), src); err != nil {
				result <- err
				return
			}
			got := len(tbl.Sandboxes())
			if got < last {
				result <- fmt.Errorf("the table went from %d sandboxes to %d", last, got)
				return
			}
			last = got
			select {
			case <-stop:
				result <- nil
				return
			default:
			}
		}
	}()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mustCtl(t, store, now, "create", fmt.Sprintf("pr-%d", i+1), "-actor", "a", "-service", "cart=h:1")
		}()
	}
	wg.Wait()
	close(stop)
	if err := <-result; err != nil {
		t.Fatalf("a table reading while sandboxctl wrote: %v", err)
	}
	if got := listed(t, store, now); len(got) != n+1 {
		t.Fatalf("%d sandboxes, want %d", len(got), n+1)
	}
}

// TestFullDiskKeepsTheOldDocument: a write that fails half way (a full
// disk; here the file size limit, ulimit -f) leaves the old document
// whole and no temporary file, and says why.
func TestFullDiskKeepsTheOldDocument(t *testing.T) {
	now := time.Now()
	path := filepath.Join(t.TempDir(), "routes.json")
	store := "file:" + path
	mustCtl(t, store, now, "create", "pr-1", "-actor", "a")
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperCtl$")
	cmd.Env = append(os.Environ(), "SANDBOXCTL_HELPER_STORE="+store,
		"SANDBOXCTL_HELPER_ARGS=create pr-2 -actor a -origin "+strings.Repeat("x", 200),
		fmt.Sprintf("SANDBOXCTL_HELPER_FSIZE=%d", len(before)+64))
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != exitFailed || !strings.Contains(string(out), "file too large") {
		t.Fatalf("create past the size limit: %v, want exit %d saying the file is too large: %s", err, exitFailed, out)
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Fatalf("the document after the failed write:\n%s\nwant the old one:\n%s", after, before)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".routes.json.sandboxctl-*")); len(left) > 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

// TestRouteAgainWithinTheGrace: a route removed with remove -service
// stays stamped for the readers that lag (a Kafka consumer deciding a
// message of the route's window decides it from the window); routing the
// service again within the tombstone grace would overwrite that window
// with a new one, and a lagging baseline consumer would take the
// messages the sandbox's consumer already had. It is refused, as reviving
// a removed sandbox is; after the grace the route starts anew.
func TestRouteAgainWithinTheGrace(t *testing.T) {
	now := time.Now()
	for name, store := range stores(t) {
		t.Run(name, func(t *testing.T) {
			mustCtl(t, store, now, "create", "pr-1", "-actor", "a", "-service", "cart=h:1", "-service", "orders=h:2")
			mustCtl(t, store, now.Add(time.Minute), "remove", "pr-1", "-service", "cart")
			window := listed(t, store, now)["pr-1"].Services["cart"]
			code, out := ctl(t, store, now.Add(10*time.Minute), "route", "pr-1", "-service", "cart=h:3")
			if code != exitExists || !strings.Contains(out, "removed") {
				t.Fatalf("route of a service removed 9 minutes ago: exit %d, want %d saying it was removed: %s", code, exitExists, out)
			}
			if got := listed(t, store, now)["pr-1"].Services["cart"]; got != window {
				t.Fatalf("the removed route's window became %+v, want %+v kept", got, window)
			}
			later := now.Add(time.Minute + 5*time.Second + routes.DefaultTombstoneGrace)
			mustCtl(t, store, later, "route", "pr-1", "-service", "cart=h:3")
			got := listed(t, store, now)["pr-1"].Services["cart"]
			if got.Upstream != "h:3" || !got.RemovedAt.IsZero() || !got.ActiveFrom.After(window.RemovedAt) {
				t.Fatalf("routed after the grace: %+v, want a new window after %v", got, window.RemovedAt)
			}
		})
	}
}

// TestEtcdPrefixDoubleSlash: the spec written from the tables' own
// prefix, etcd://host:port/$PREFIX with PREFIX=/sandboxkit/routes/,
// wrote under "//sandboxkit/routes/", where no table looks: create said
// done, list showed the sandbox, and no service ever routed it. An empty
// segment in the prefix is a usage error, and nothing is written.
func TestEtcdPrefixDoubleSlash(t *testing.T) {
	c, store := startEtcd(t)
	host := strings.TrimSuffix(strings.TrimPrefix(store, "etcd://"), "/sandboxkit/routes/")
	for _, spec := range []string{"etcd://" + host + "//sandboxkit/routes/", "etcd://" + host + "/sandboxkit//routes/"} {
		if code, out := ctl(t, spec, time.Now(), "create", "pr-1", "-actor", "ci"); code != exitUsage || !strings.Contains(out, "//") {
			t.Errorf("%s: create: exit %d, want %d naming the empty segment: %s", spec, code, exitUsage, out)
		}
	}
	resp, err := c.Get(context.Background(), "", clientv3.WithFromKey(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != 0 {
		t.Fatalf("%d keys written", resp.Count)
	}
}

// TestReadOnlyMount: a document on a read-only mount (a ConfigMap
// volume) is not changed in part: the command fails saying the file
// system is read-only, and the document is as it was.
func TestReadOnlyMount(t *testing.T) {
	now := time.Now()
	dir := t.TempDir()
	path := filepath.Join(dir, "routes.json")
	mustCtl(t, "file:"+path, now, "create", "pr-1", "-actor", "a")
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount(dir, dir, "", syscall.MS_BIND, ""); err != nil {
		t.Skipf("bind mounts need CAP_SYS_ADMIN: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, 0) })
	if err := syscall.Mount(dir, dir, "", syscall.MS_BIND|syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"create", "pr-2", "-actor", "a"}, {"remove", "pr-1"}} {
		code, out := ctl(t, "file:"+path, now, args...)
		t.Logf("%s: %s", args[0], out)
		if code != exitFailed || !strings.Contains(out, "read-only file system") {
			t.Errorf("%s on a read-only mount: exit %d, want %d saying the file system is read-only: %s", args[0], code, exitFailed, out)
		}
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Fatalf("the document on the read-only mount changed:\n%s", after)
	}
}
