package httpmw

import (
	"context"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// WithEgressHook fills the slot the breaker package will fill, for tests.
func WithEgressHook(f func(ctx context.Context, s propagation.Sandbox, target string) (func(error), error)) Option {
	return optionFunc(func(c *config) { c.egress = f })
}

// ForwardedClient exposes the X-Forwarded-For rule to the fuzz test.
func ForwardedClient(lines []string, hops int) (addr string, entry string, n int, ok bool) {
	a, e, n, p := forwardedClient(lines, hops)
	if p != trusted {
		return "", e, n, false
	}
	return a.String(), e, n, true
}
