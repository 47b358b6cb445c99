package provision

import "time"

// WithStepHook makes a provisioner call f after each provisioning step, so
// that the tests can interrupt it there.
func WithStepHook(f func(step string)) ProvisionerOption {
	return optionFunc(func(c *config) { c.step = f })
}

// WithClock sets the clock that dates the markers and judges the reap
// grace (default time.Now).
func WithClock(now func() time.Time) ProvisionerOption {
	return optionFunc(func(c *config) { c.now = now })
}
