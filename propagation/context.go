package propagation

import "context"

type sandboxKey struct{}

// sandboxCtx carries a Sandbox. It is a context type of its own rather than
// context.WithValue so that storing a sandbox costs one allocation, and
// FromContext returns it without boxing. It is 64 bytes, a size class
// whose objects each lie in one cache line: a caller that finds the
// context out of the processor's caches (a group of breakers holding
// many keys reads it on every call) fetches one line for it, not two.
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

// noSandboxCtx masks a sandbox further up the chain.
type noSandboxCtx struct {
	context.Context
}

func (c *noSandboxCtx) Value(key any) any {
	if _, ok := key.(sandboxKey); ok {
		return nil
	}
	return c.Context.Value(key)
}

func (c *noSandboxCtx) String() string {
	return "propagation.ContextWithoutSandbox"
}

// ContextWithSandbox returns a copy of parent that carries s. It does not
// validate s; the middleware only stores sandboxes that passed
// [Sandbox.Validate], and callers constructing one by hand should do the
// same. Like the standard library's constructors it panics when parent is
// nil, rather than return a context whose Done, Deadline and Value of
// other keys panic later, far from the mistake.
func ContextWithSandbox(parent context.Context, s Sandbox) context.Context {
	if parent == nil {
		panic("propagation: cannot create context from nil parent")
	}
	return &sandboxCtx{Context: parent, s: s}
}

// ContextWithoutSandbox returns a copy of parent that carries no sandbox,
// even when parent does ([FromContext] reports none). It returns parent
// itself when parent carries no sandbox.
//
// It leaves the context's OpenTelemetry baggage as it is: members naming
// the sandbox there (put by OpenTelemetry's Baggage propagator, or by
// [WithBaggageMirror]) are still sent on by an outgoing Baggage
// propagator, and the next hop reads them as the sandbox. To drop markers
// an earlier layer already extracted, as the library's middleware does,
// use [Codec.StripContext], which removes both.
func ContextWithoutSandbox(parent context.Context) context.Context {
	if _, ok := FromContext(parent); !ok {
		return parent
	}
	return &noSandboxCtx{Context: parent}
}

// FromContext returns the sandbox carried by ctx, and false when ctx belongs
// to baseline (production) traffic. It does not allocate.
func FromContext(ctx context.Context) (Sandbox, bool) {
	if c, ok := ctx.Value(sandboxKey{}).(*sandboxCtx); ok {
		return c.s, true
	}
	return Sandbox{}, false
}
