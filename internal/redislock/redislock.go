// Package redislock serialises the test binaries that use the databases of
// the local Redis server. redisroute's tests own databases 1 to 15 while
// they run, and the shop example's put their sandboxes in 8 to 15; `go test
// ./...` runs the two packages at once, and a test that found a database it
// needs holding another binary's keys skipped itself, or shared it.
// Each binary holds the lock for its whole run (from its TestMain).
package redislock

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// Hold takes the machine-wide lock, waiting for another binary that holds
// it, and returns its release.
func Hold() (release func(), err error) {
	path := filepath.Join(os.TempDir(), "sandboxkit-redis-tests.lock")
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o666)
	if err != nil {
		return nil, fmt.Errorf("redislock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("redislock: locking %s: %w", path, err)
	}
	return func() { f.Close() }, nil // closing the file releases the lock
}

// Run is m.Run with the lock held: TestMain(m) { goleak.VerifyTestMain(redislock.Run(m)) }.
func Run(m interface{ Run() int }) interface{ Run() int } { return held{m} }

type held struct{ m interface{ Run() int } }

func (h held) Run() int {
	release, err := Hold()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer release()
	return h.m.Run()
}
