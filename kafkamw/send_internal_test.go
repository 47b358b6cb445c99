package kafkamw

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// TestSendReusesItsContext: a synchronous commit waits on a context that
// Close also ends (see Reader.send). Building that context for every
// commit (a child of the caller's, and a callback on the reader's end)
// cost six allocations and about as much CPU as kafka-go's own
// CommitMessages, for each commit, which the -eqcommits rows of
// BenchmarkReaderRatio make every 100 messages. A caller that commits
// with the same context each time (a consume loop's) now reuses the one
// built for the previous commit: no allocation. What send must keep
// holds on the reused context too: a commit never answered returns
// errClosedWhileCommitting at Close, a caller's cancellation is its own
// error, and a new caller context after one that ended is honoured.
func TestSendReusesItsContext(t *testing.T) {
	msgs := []kafka.Message{{Topic: "t", Offset: 1}}
	answered := func(ctx context.Context, _ ...kafka.Message) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		default:
			return nil
		}
	}

	r := goneReader(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	if err := r.send(ctx, answered, msgs); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() {
		if err := r.send(ctx, answered, msgs); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("a commit with the previous commit's context: %v allocations, want 0", n)
	}
	// A context that shares the previous one's end (values added) too.
	vctx := context.WithValue(ctx, ctxKey14p{}, 1)
	if n := testing.AllocsPerRun(100, func() {
		if err := r.send(vctx, answered, msgs); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("a commit with a value context over the previous one: %v allocations, want 0", n)
	}

	// The caller's context ends: its own error, and the next commit with
	// another context is not refused for it.
	cancel()
	if err := r.send(ctx, answered, msgs); !errors.Is(err, context.Canceled) {
		t.Errorf("commit with an ended context: %v, want context.Canceled", err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), time.Hour)
	defer cancel2()
	if err := r.send(ctx2, answered, msgs); err != nil {
		t.Errorf("commit with a new context after the previous one ended: %v", err)
	}

	// Never answered, on the reused context: Close ends it.
	done := make(chan error, 1)
	queued := make(chan struct{})
	go func() {
		done <- r.send(ctx2, func(ctx context.Context, m ...kafka.Message) error {
			close(queued)
			return fakeCommit(nil)(ctx, m...)
		}, msgs)
	}()
	<-queued
	r.markGone()
	select {
	case err := <-done:
		if !errors.Is(err, errClosedWhileCommitting) {
			t.Errorf("unanswered commit on a reused context after Close: %v, want %v", err, errClosedWhileCommitting)
		}
	case <-time.After(time.Minute):
		t.Fatal("an unanswered commit on a reused context did not return once the reader was gone")
	}
	if err := r.send(ctx2, fakeCommit(nil), msgs); !errors.Is(err, errClosedWhileCommitting) {
		t.Errorf("commit after Close: %v, want %v", err, errClosedWhileCommitting)
	}
}
