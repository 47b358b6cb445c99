package breaker_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/breaker"
	"github.com/sandboxkit/sandboxkit/internal/audit/audittest"
	"github.com/sandboxkit/sandboxkit/propagation"
)

func sandboxCtx(id string) context.Context {
	return propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: id, Actor: id + "-owner"})
}

// call makes one call through g that ends with outcome, and returns the
// refusal, if any.
func call(g *breaker.Group, ctx context.Context, outcome error) error {
	done, err := g.Allow(ctx)
	if err != nil {
		return err
	}
	done(outcome)
	return nil
}

// auditLog collects the audit records a group writes, through the one
// audit-capture helper every package's tests use.
type auditLog struct {
	once sync.Once
	rec  *audittest.Recorder
	l    *slog.Logger
}

func (a *auditLog) init() { a.once.Do(func() { a.rec, a.l = audittest.New() }) }

func (a *auditLog) logger() *slog.Logger { a.init(); return a.l }

func (a *auditLog) records(*testing.T) []map[string]string { a.init(); return a.rec.Records() }

func (a *auditLog) reasons(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, r := range a.records(t) {
		out = append(out, r[audit.KeyReason])
	}
	return out
}

func wantRefusal(t *testing.T, err, sentinel error, retry time.Duration) {
	t.Helper()
	if !errors.Is(err, sentinel) {
		t.Fatalf("err = %v, want %v", err, sentinel)
	}
	d, ok := breaker.RetryAfter(err)
	if !ok || d != retry {
		t.Fatalf("RetryAfter(%v) = %v, %v; want %v", err, d, ok, retry)
	}
}
