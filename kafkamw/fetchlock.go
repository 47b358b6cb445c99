package kafkamw

import (
	"context"
	"sync"
	"sync/atomic"
)

// fetchLock serialises a reader's fetches. Taking and releasing it when no
// one else wants it costs one compare-and-swap each: it is taken for every
// message of the topic, where a semaphore's two mutex round trips showed
// in the reader's profile. A caller that has to wait does so on a channel,
// so that its context still cancels the wait.
//
// Waiters are served first come, first served, as the semaphore served
// them: an unlock that finds a waiter hands the lock to the first one
// directly (it stays held), so that a caller that takes the lock again
// right after releasing it (a loop of fetches) cannot keep the others out.
//
// state is 1 while the lock is held, plus 2 for each caller queued. Both
// change under mu once a caller queues, so that an unlock that sees a
// waiter finds it in the queue.
type fetchLock struct {
	state atomic.Int64
	mu    sync.Mutex      // guards queue, and the slow paths' changes of state
	queue []chan struct{} // the waiters, first first; each is handed the lock by a send
}

const (
	fetchHeld   = 1
	fetchWaiter = 2
)

// lock takes the lock, or returns ctx's error if ctx ends first.
func (l *fetchLock) lock(ctx context.Context) error {
	if l.state.CompareAndSwap(0, fetchHeld) {
		return nil
	}
	return l.lockSlow(ctx)
}

func (l *fetchLock) lockSlow(ctx context.Context) error {
	l.mu.Lock()
	if s := l.state.Add(fetchWaiter); s&fetchHeld == 0 {
		// Released in the meantime. The lock is never free while a
		// waiter is queued (an unlock hands it on), so no one is
		// passed over: take it. A fast-path CAS fails meanwhile (state
		// counts this caller).
		l.state.Add(fetchHeld - fetchWaiter)
		l.mu.Unlock()
		return nil
	}
	ch := make(chan struct{}, 1)
	l.queue = append(l.queue, ch)
	l.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
	}
	l.mu.Lock()
	for i, c := range l.queue {
		if c == ch {
			l.queue = append(l.queue[:i], l.queue[i+1:]...)
			l.state.Add(-fetchWaiter)
			l.mu.Unlock()
			return ctx.Err()
		}
	}
	l.mu.Unlock()
	// Handed the lock as the context ended: pass it on.
	<-ch
	l.unlock()
	return ctx.Err()
}

// unlock releases the lock, which the caller holds, or hands it to the
// first waiter. Inlined: the common case is one compare-and-swap.
func (l *fetchLock) unlock() {
	if !l.state.CompareAndSwap(fetchHeld, 0) {
		l.unlockSlow()
	}
}

// unlockSlow is unlock when a caller is queued, or was.
func (l *fetchLock) unlockSlow() {
	l.mu.Lock()
	if len(l.queue) == 0 {
		// The waiters counted gave up before their turn.
		l.state.Add(-fetchHeld)
		l.mu.Unlock()
		return
	}
	ch := l.queue[0]
	l.queue[0] = nil
	l.queue = l.queue[1:]
	l.state.Add(-fetchWaiter) // still held: now by the waiter
	l.mu.Unlock()
	ch <- struct{}{}
}
