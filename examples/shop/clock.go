package main

import (
	"sync"
	"time"
)

// budgetClock is the clock of the gateway's budgets. It runs with
// time.Now, except while the runaway step holds it: then it stands still
// at a moment past a full refill of every bucket, so that the step serves
// exactly a sandbox's burst however fast or slow this machine is. It
// never goes back: released, it runs on from where it stood.
type budgetClock struct {
	mu     sync.Mutex
	offset time.Duration // added to time.Now while running
	held   bool
	at     time.Time // the time while held
}

func (c *budgetClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.held {
		return c.at
	}
	return time.Now().Add(c.offset)
}

// hold moves the clock ahead by skip and stops it there.
func (c *budgetClock) hold(skip time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.held {
		c.at = time.Now().Add(c.offset)
	}
	c.at = c.at.Add(skip)
	c.held = true
}

// release lets the clock run again from where it stood.
func (c *budgetClock) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.held {
		c.offset = time.Until(c.at)
		c.held = false
	}
}
