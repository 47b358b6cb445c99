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
// state is 1 while the lock is held, plus 2 for each caller waiting.
// Waiters wait on wake, which an unlock that sees a waiter closes and
// replaces: every waiter then tries again, and those that lose wait on the
// new channel.
type fetchLock struct {
	state atomic.Int64
	mu    sync.Mutex    // guards wake
	wake  chan struct{} // nil until the first waiter
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
	l.state.Add(fetchWaiter)
	defer l.state.Add(-fetchWaiter)
	for {
		// Take the channel before trying: an unlock after the try
		// closes this very channel (it sees this waiter, counted
		// above).
		l.mu.Lock()
		if l.wake == nil {
			l.wake = make(chan struct{})
		}
		wake := l.wake
		l.mu.Unlock()
		for s := l.state.Load(); s&fetchHeld == 0; s = l.state.Load() {
			if l.state.CompareAndSwap(s, s|fetchHeld) {
				return nil
			}
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// unlock releases the lock, which the caller holds.
func (l *fetchLock) unlock() {
	if l.state.CompareAndSwap(fetchHeld, 0) {
		return
	}
	l.state.Add(-fetchHeld)
	l.mu.Lock()
	if l.wake != nil {
		close(l.wake)
		l.wake = nil
	}
	l.mu.Unlock()
}
