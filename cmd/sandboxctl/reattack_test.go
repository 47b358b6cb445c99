package main

// Second attack on sandboxctl (#15): a command killed holding the lock, a
// command stuck holding it, and stamps at the edge of the margin.

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestHelperHoldLock is not a test: TestKilledWhileLocked runs the test
// binary as a sandboxctl that takes the store's lock and is killed
// before its rename.
func TestHelperHoldLock(t *testing.T) {
	path := os.Getenv("SANDBOXCTL_HOLD_LOCK")
	if path == "" {
		t.Skip("helper process only")
	}
	lock, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	// Half a change: the temporary file written, not renamed.
	if err := os.WriteFile(filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".sandboxctl-killed"), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("locked\n")
	time.Sleep(time.Hour)
}

// holdLock starts a process that holds the lock of the file store at
// path, and returns it once it does.
func holdLock(t *testing.T, path string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperHoldLock$")
	cmd.Env = append(os.Environ(), "SANDBOXCTL_HOLD_LOCK="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "locked\n" {
		t.Fatalf("helper: %q, %v", line, err)
	}
	return cmd
}

// TestKilledWhileLocked: a sandboxctl killed (SIGKILL, a CI runner
// cancelled) between taking the lock and the rename leaves the lock file
// behind; the next command must not wait for it, and the document is
// the one before the killed change.
func TestKilledWhileLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "routes.json")
	store := "file:" + path
	now := time.Now()
	mustCtl(t, store, now, "create", "pr-1", "-actor", "ci")
	cmd := holdLock(t, path)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if _, err := os.Stat(path + ".lock"); err != nil {
		t.Fatalf("the lock file: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		mustCtl(t, store, now, "-timeout", "5s", "create", "pr-2", "-actor", "ci")
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("create waits for the lock of a killed process")
	}
	got := listed(t, store, now)
	if len(got) != 2 {
		t.Fatalf("after the kill: %v, want pr-1 and pr-2", got)
	}
	// The killed change's temporary file is cleaned up by the next
	// change; another document's in the same directory is not.
	other := filepath.Join(filepath.Dir(path), ".other.json.sandboxctl-1")
	if err := os.WriteFile(other, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	mustCtl(t, store, now, "extend", "pr-1", "-ttl", "1h")
	left, err := filepath.Glob(filepath.Join(filepath.Dir(path), ".*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || left[0] != other {
		t.Fatalf("temporary files left: %v, want only %s", left, other)
	}
}

// TestLockHeldTimeout: a sandboxctl stuck holding the lock (a stopped CI
// job, a hung NFS client) must not hang the next command past -timeout:
// it fails with exit 1 and says why.
func TestLockHeldTimeout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "routes.json")
	store := "file:" + path
	holdLock(t, path)
	type result struct {
		code int
		out  string
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		code, out := ctl(t, store, time.Now(), "-timeout", "300ms", "create", "pr-1", "-actor", "ci")
		done <- result{code, out}
	}()
	select {
	case r := <-done:
		if r.code != exitFailed || !strings.Contains(r.out, "lock") {
			t.Fatalf("exit %d: %s; want exit %d naming the lock", r.code, r.out, exitFailed)
		}
		if d := time.Since(start); d < 300*time.Millisecond {
			t.Fatalf("gave up after %v, before -timeout", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("create ignores -timeout while another process holds the lock")
	}
}

// TestTTLWithinAMillisecondOfMargin: stamps are truncated to the
// millisecond, so a -ttl a fraction of a millisecond longer than -margin
// passes the check yet gives a sandbox that expires the moment its routes
// start: an empty window. It must be refused as a -ttl equal to -margin
// is.
func TestTTLWithinAMillisecondOfMargin(t *testing.T) {
	store := "file:" + filepath.Join(t.TempDir(), "routes.json")
	// A clock just before a millisecond boundary.
	now := time.Date(2026, 1, 1, 0, 0, 0, 999_700_000, time.UTC)
	for _, ttl := range []string{"5s", "5.0001s", "-1s", "0s"} {
		if code, out := ctl(t, store, now, "create", "pr-1", "-actor", "ci", "-service", "cart=h:1", "-ttl", ttl); code != exitUsage {
			t.Fatalf("create -ttl %s with -margin 5s: exit %d, want %d: %s", ttl, code, exitUsage, out)
		}
	}
	mustCtl(t, store, now, "create", "pr-1", "-actor", "ci", "-service", "cart=h:1", "-ttl", "5.001s")
	for _, ttl := range []string{"5s", "5.0001s", "-1s"} {
		if code, out := ctl(t, store, now, "extend", "pr-1", "-ttl", ttl); code != exitUsage {
			t.Fatalf("extend -ttl %s with -margin 5s: exit %d, want %d: %s", ttl, code, exitUsage, out)
		}
	}
	sb := listed(t, store, now)["pr-1"]
	if !sb.Expires.After(sb.Services["cart"].ActiveFrom) {
		t.Fatalf("expires %v, routes from %v: an empty window", sb.Expires, sb.Services["cart"].ActiveFrom)
	}
}

// TestListJSONSchema: the output of list -json is what CI scripts parse:
// its field names and formats stay as they are (this pins them).
func TestListJSONSchema(t *testing.T) {
	store := "file:" + filepath.Join(t.TempDir(), "a [b]*", "routes.json")
	if err := os.MkdirAll(strings.TrimSuffix(strings.TrimPrefix(store, "file:"), "/routes.json"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got := mustCtl(t, store, time.Now(), "-json", "list"); got != "[]\n" {
		t.Fatalf("empty list -json: %q, want []", got)
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	mustCtl(t, store, now, "create", "pr-1", "-actor", "ci", "-origin", "https://x/pr/1", "-ttl", "1h",
		"-database", "postgres://db/pr1", "-service", "cart=h:1", "-service", "orders=h:2")
	mustCtl(t, store, now, "remove", "pr-1", "-service", "orders")
	const want = `[
  {
    "id": "pr-1",
    "actor": "ci",
    "origin": "https://x/pr/1",
    "expires": "2026-01-02T04:04:05Z",
    "database": "postgres://db/pr1",
    "services": {
      "cart": {
        "upstream": "h:1",
        "activeFrom": "2026-01-02T03:04:10Z"
      },
      "orders": {
        "upstream": "h:2",
        "activeFrom": "2026-01-02T03:04:10Z",
        "removedAt": "2026-01-02T03:04:10Z"
      }
    }
  }
]
`
	if got := mustCtl(t, store, now, "-json", "list"); got != want {
		t.Fatalf("list -json:\n%s\nwant:\n%s", got, want)
	}
}
