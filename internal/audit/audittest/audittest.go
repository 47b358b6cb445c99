// Package audittest records audit records for tests.
package audittest

import (
	"context"
	"log/slog"
	"sync"

	"github.com/sandboxkit/sandboxkit/audit"
)

// Recorder is a slog.Handler that keeps every record it receives, each as
// a map of its attributes plus "level" and "msg". It is safe for
// concurrent use.
type Recorder struct {
	mu   sync.Mutex
	recs []map[string]string
}

// New returns a Recorder and a logger writing to it.
func New() (*Recorder, *slog.Logger) {
	r := &Recorder{}
	return r, slog.New(r)
}

// Enabled reports true for every level.
func (r *Recorder) Enabled(context.Context, slog.Level) bool { return true }

// Handle keeps rec.
func (r *Recorder) Handle(_ context.Context, rec slog.Record) error {
	m := map[string]string{"level": rec.Level.String(), "msg": rec.Message}
	rec.Attrs(func(at slog.Attr) bool {
		m[at.Key] = at.Value.String()
		return true
	})
	r.mu.Lock()
	r.recs = append(r.recs, m)
	r.mu.Unlock()
	return nil
}

// WithAttrs returns r: the middleware adds no logger attributes.
func (r *Recorder) WithAttrs([]slog.Attr) slog.Handler { return r }

// WithGroup returns r.
func (r *Recorder) WithGroup(string) slog.Handler { return r }

// Records returns a copy of the records so far.
func (r *Recorder) Records() []map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]map[string]string(nil), r.recs...)
}

// Decisions returns the decision of every record, in order.
func (r *Recorder) Decisions() []string {
	var out []string
	for _, rec := range r.Records() {
		out = append(out, rec[audit.KeyDecision])
	}
	return out
}
