package routes_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sandboxkit/sandboxkit/routes"
)

// TestMarkSyncedClearsErrBeforeWaking: a proof that heals a failing
// source clears Err before it wakes WaitSynced, so that a caller that
// waited for the table to be synced never reads the old failure
// (etcdtest's TestForeignKeyUnderPrefix read it once under -race in CI:
// MarkSynced moved SyncedAt and woke the waiters, then cleared Err).
func TestMarkSyncedClearsErrBeforeWaking(t *testing.T) {
	t0 := time.Now()
	for i := range 2000 {
		tbl := routes.New()
		tbl.MarkFailed(t0, errors.New("the store failed"))
		at := t0.Add(time.Duration(i+1) * time.Millisecond)
		go tbl.MarkSynced(at)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := tbl.WaitSynced(ctx, at); err != nil {
			cancel()
			t.Fatal(err)
		}
		cancel()
		if err := tbl.Err(); err != nil {
			t.Fatalf("round %d: synced up to %v, yet Err = %v", i, at, err)
		}
	}
}
