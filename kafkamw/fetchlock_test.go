package kafkamw

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// TestFetchLockExcludes hammers the lock from several goroutines, some of
// which give up waiting: no two ever hold it at once, and every holder
// gets it in the end.
func TestFetchLockExcludes(t *testing.T) {
	var l fetchLock
	var (
		inside  int // guarded by the lock under test
		entered int
		wg      sync.WaitGroup
		mu      sync.Mutex // guards entered
	)
	const workers, rounds = 8, 2000
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				ctx := context.Background()
				cancel := context.CancelFunc(func() {})
				if (w+i)%5 == 0 {
					ctx, cancel = context.WithTimeout(ctx, time.Microsecond)
				}
				err := l.lock(ctx)
				cancel()
				if err != nil {
					if !errors.Is(err, context.DeadlineExceeded) {
						t.Errorf("lock: %v", err)
					}
					continue
				}
				inside++
				if inside != 1 {
					t.Errorf("%d holders at once", inside)
				}
				inside--
				mu.Lock()
				entered++
				mu.Unlock()
				l.unlock()
			}
		}()
	}
	wg.Wait()
	if s := l.state.Load(); s != 0 {
		t.Errorf("state after all unlocked = %d, want 0", s)
	}
	if entered < workers*rounds*4/5 {
		t.Errorf("%d entries, want at least the %d that never time out", entered, workers*rounds*4/5)
	}
}

// TestFetchLockWaitCancels: a caller waiting for a held lock returns its
// context's error when the context ends, and leaves no trace; the next
// caller after the unlock gets the lock at once.
func TestFetchLockWaitCancels(t *testing.T) {
	var l fetchLock
	if err := l.lock(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- l.lock(ctx) }()
	for l.state.Load() != fetchHeld+fetchWaiter {
		time.Sleep(time.Millisecond) // until the waiter waits
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("waiting lock after cancel = %v, want context.Canceled", err)
	}
	if s := l.state.Load(); s != fetchHeld {
		t.Fatalf("state = %d, want held without waiters", s)
	}
	// A waiter is woken by the unlock.
	go func() { done <- l.lock(context.Background()) }()
	for l.state.Load() != fetchHeld+fetchWaiter {
		time.Sleep(time.Millisecond)
	}
	l.unlock()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waiter not woken by the unlock")
	}
	l.unlock()
	if s := l.state.Load(); s != 0 {
		t.Fatalf("state = %d, want 0", s)
	}
}
