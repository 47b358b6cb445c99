package kafkamw

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	pub "github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/internal/audit/audittest"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// TestOrphanAuditClipped: the record of an orphaned message (not admitted:
// rejected by the baseline reader, skipped by a sandbox reader) clips the
// sender's actor and origin to audit.MaxValueLen, as the HTTP and gRPC
// records of markers that were not admitted do.
func TestOrphanAuditClipped(t *testing.T) {
	table, err := routes.NewStatic(nil)
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("a", propagation.MaxActorLen)
	var c carrier
	propagation.Default().InjectSandbox(propagation.Sandbox{ID: "pr-1", Actor: long, Origin: long}, &c)
	for _, sandbox := range []string{"", "pr-1"} {
		rec, logger := audittest.New()
		r := bareReader(t, table, "orders", side(sandbox), WithLogger(logger))
		msg := kafka.Message{Topic: "t", Time: time.Now().Add(-time.Minute), Headers: c.list}
		if _, v, err := r.decide(context.Background(), &msg); err != nil || v.fate != fateSkip {
			t.Fatalf("reader %q: decide = %v, %v; want an orphan, skipped", sandbox, v, err)
		}
		recs := rec.Records()
		if len(recs) != 1 {
			t.Fatalf("reader %q: %d records, want 1: %v", sandbox, len(recs), recs)
		}
		for _, k := range []string{pub.KeyActor, pub.KeyOrigin} {
			if got := recs[0][k]; len(got) != pub.MaxValueLen+len("...") {
				t.Errorf("reader %q: %s is %d bytes, want it clipped to %d and \"...\"", sandbox, k, len(got), pub.MaxValueLen)
			}
		}
	}
}
