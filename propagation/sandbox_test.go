package propagation_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/sandboxkit/sandboxkit/propagation"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		s    propagation.Sandbox
		want error
	}{
		{propagation.Sandbox{ID: "a"}, nil},
		{propagation.Sandbox{ID: "pr-42", Actor: "alice@example.com", Origin: "https://github.com/acme/shop/pull/42"}, nil},
		{propagation.Sandbox{ID: strings.Repeat("a", 63)}, nil},
		{propagation.Sandbox{ID: "0-9"}, nil},
		{propagation.Sandbox{ID: "Zoë", Actor: "Zoë"}, propagation.ErrInvalidID},
		{propagation.Sandbox{ID: "ok", Actor: "Zoë Ärger"}, nil},
		{propagation.Sandbox{}, propagation.ErrInvalidID},
		{propagation.Sandbox{ID: strings.Repeat("a", 64)}, propagation.ErrInvalidID},
		{propagation.Sandbox{ID: "a-"}, propagation.ErrInvalidID},
		{propagation.Sandbox{ID: "a.b"}, propagation.ErrInvalidID},
		{propagation.Sandbox{ID: "ok", Actor: "tab\there"}, propagation.ErrInvalidActor},
		{propagation.Sandbox{ID: "ok", Actor: "\xff"}, propagation.ErrInvalidActor},
		{propagation.Sandbox{ID: "ok", Actor: "bidi\u202e"}, propagation.ErrInvalidActor},
		{propagation.Sandbox{ID: "ok", Actor: strings.Repeat("a", 257)}, propagation.ErrInvalidActor},
		{propagation.Sandbox{ID: "ok", Origin: "line\nbreak"}, propagation.ErrInvalidOrigin},
	}
	for _, tt := range tests {
		if err := tt.s.Validate(); !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
			t.Errorf("%+v.Validate() = %v, want %v", tt.s, err, tt.want)
		}
	}
}

func TestContext(t *testing.T) {
	type otherKey struct{}
	parent, cancel := context.WithCancel(context.WithValue(context.Background(), otherKey{}, "v"))
	defer cancel()
	if _, ok := propagation.FromContext(parent); ok {
		t.Fatal("sandbox in a context that has none")
	}
	s := propagation.Sandbox{ID: "pr-1", Actor: "alice"}
	ctx := propagation.ContextWithSandbox(parent, s)
	if got, ok := propagation.FromContext(ctx); !ok || got != s {
		t.Fatalf("FromContext = %+v, %v", got, ok)
	}
	if ctx.Value(otherKey{}) != "v" {
		t.Fatal("parent values lost")
	}
	// Cancellation flows through, and derived contexts keep the sandbox.
	child, cancelChild := context.WithCancel(ctx)
	defer cancelChild()
	cancel()
	<-child.Done()
	if got, ok := propagation.FromContext(child); !ok || got != s {
		t.Fatal("derived context lost the sandbox")
	}
	inner := propagation.ContextWithSandbox(ctx, propagation.Sandbox{ID: "pr-2"})
	if got, _ := propagation.FromContext(inner); got.ID != "pr-2" {
		t.Fatal("inner sandbox does not shadow the outer one")
	}

	bg := context.Background()
	if n := testing.AllocsPerRun(100, func() { propagation.FromContext(bg) }); n != 0 {
		t.Errorf("FromContext on a baseline context: %v allocs", n)
	}
	if n := testing.AllocsPerRun(100, func() { propagation.FromContext(ctx) }); n != 0 {
		t.Errorf("FromContext on a sandbox context: %v allocs", n)
	}
}

func TestContextWithoutSandbox(t *testing.T) {
	bg := context.Background()
	if propagation.ContextWithoutSandbox(bg) != bg {
		t.Fatal("ContextWithoutSandbox wrapped a context without a sandbox")
	}
	type k struct{}
	ctx := propagation.ContextWithSandbox(context.WithValue(bg, k{}, 1), propagation.Sandbox{ID: "pr-1"})
	masked := propagation.ContextWithoutSandbox(ctx)
	if _, ok := propagation.FromContext(masked); ok {
		t.Fatal("sandbox visible through ContextWithoutSandbox")
	}
	if masked.Value(k{}) != 1 {
		t.Fatal("other values lost")
	}
	again := propagation.ContextWithSandbox(masked, propagation.Sandbox{ID: "pr-2"})
	if s, ok := propagation.FromContext(again); !ok || s.ID != "pr-2" {
		t.Fatal("cannot set a sandbox below a mask")
	}
}
