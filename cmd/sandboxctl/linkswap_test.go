//go:build linux

package main

// Review of the symbolic-link store (rvround).

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// lockHolders counts this process's open descriptors on path.
func lockHolders(t *testing.T, path string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if p, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && p == path {
			n++
		}
	}
	return n
}

// TestLinkSwappedWhileWaitingForTheLock: the store named through a link
// resolves the link, then waits for the lock of the file it names. A
// link swapped meanwhile (a deployment that writes each version beside
// the last and flips the link, as kubelet does) left the change to the
// file the link no longer names: sandboxctl reported success for a
// sandbox no reader of the link ever saw. The link is resolved again
// under the lock.
func TestLinkSwappedWhileWaitingForTheLock(t *testing.T) {
	now := time.Now()
	dir := t.TempDir()
	for _, v := range []string{"v1", "v2"} {
		if err := os.Mkdir(filepath.Join(dir, v), 0o755); err != nil {
			t.Fatal(err)
		}
		mustCtl(t, "file:"+filepath.Join(dir, v, "routes.json"), now, "create", "pr-"+v, "-actor", "a")
	}
	link := filepath.Join(dir, "routes.json")
	if err := os.Symlink(filepath.Join("v1", "routes.json"), link); err != nil {
		t.Fatal(err)
	}
	lockPath := filepath.Join(dir, "v1", "routes.json.lock")
	held, err := os.Open(lockPath)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if err := syscall.Flock(int(held.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	done := make(chan string, 1)
	go func() {
		code, out := ctl(t, "file:"+link, now, "create", "pr-new", "-actor", "a")
		if code != exitOK {
			out = "exit " + out
		}
		done <- out
	}()
	// Wait until the change has resolved the link and opened v1's lock.
	for deadline := time.Now().Add(30 * time.Second); lockHolders(t, lockPath) < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) { // a guard against hanging the suite, not a measure
			t.Fatal("the change never opened v1's lock")
		}
	}
	tmp := filepath.Join(dir, "routes.json.new")
	if err := os.Symlink(filepath.Join("v2", "routes.json"), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, link); err != nil {
		t.Fatal(err)
	}
	syscall.Flock(int(held.Fd()), syscall.LOCK_UN)
	if out := <-done; strings.HasPrefix(out, "exit ") {
		t.Fatalf("create through the swapped link: %s", out)
	}
	got := listed(t, "file:"+link, now)
	if _, ok := got["pr-new"]; !ok {
		t.Errorf("create through the link succeeded, but the document the link names lists %v without pr-new", keys(got))
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
