package propagation

import "context"

type sandboxKey struct{}

// sandboxCtx carries a Sandbox. It is a context type of its own rather than
// context.WithValue so that storing a sandbox costs one allocation, and
// FromContext returns it without boxing.
type sandboxCtx struct {
	context.Context
	s Sandbox
}

func (c *sandboxCtx) Value(key any) any {
	if _, ok := key.(sandboxKey); ok {
		return c
	}
	return c.Context.Value(key)
}

func (c *sandboxCtx) String() string {
	return "propagation.ContextWithSandbox(" + c.s.ID + ")"
}

// ContextWithSandbox returns a copy of parent that carries s. It does not
// validate s; the middleware only stores sandboxes that passed
// [Sandbox.Validate], and callers constructing one by hand should do the
// same.
func ContextWithSandbox(parent context.Context, s Sandbox) context.Context {
	return &sandboxCtx{Context: parent, s: s}
}

// FromContext returns the sandbox carried by ctx, and false when ctx belongs
// to baseline (production) traffic. It does not allocate.
func FromContext(ctx context.Context) (Sandbox, bool) {
	if c, ok := ctx.Value(sandboxKey{}).(*sandboxCtx); ok {
		return c.s, true
	}
	return Sandbox{}, false
}
