package breaker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/breaker"
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

// auditLog collects the audit records a group writes.
type auditLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (a *auditLog) Write(p []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.buf.Write(p)
}

func (a *auditLog) logger() *slog.Logger { return slog.New(slog.NewJSONHandler(a, nil)) }

func (a *auditLog) records(t *testing.T) []map[string]any {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []map[string]any
	dec := json.NewDecoder(bytes.NewReader(a.buf.Bytes()))
	for dec.More() {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("audit record: %v", err)
		}
		out = append(out, m)
	}
	return out
}

func (a *auditLog) reasons(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, r := range a.records(t) {
		s, _ := r[audit.KeyReason].(string)
		out = append(out, s)
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
