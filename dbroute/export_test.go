package dbroute

// WithStepHook makes a provider call f after each provisioning step, so
// that the tests can interrupt it there.
func WithStepHook(f func(step string)) Option {
	return optionFunc(func(c *config) { c.step = f })
}
