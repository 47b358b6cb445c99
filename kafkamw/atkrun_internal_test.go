package kafkamw

import (
	"context"
	"errors"
	"math"
	"net"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/routes"
)

// downTransport fails every request at once: the dead-letter broker is
// away.
type downTransport struct{}

func (downTransport) RoundTrip(context.Context, net.Addr, kafka.Request) (kafka.Response, error) {
	return nil, errors.New("dead-letter broker unreachable")
}

// TestDeadLetterPauseGrowsWhileTheWriterFails: each dead-letter write
// that fails in a row pauses the writer longer, up to deadLetterMaxPause.
// A dead-letter topic that hangs costs each write deadLetterTimeout
// (10s) in front of production; with a fixed five-second pause, a steady
// stream of failing sandbox messages held production 10s of every 15s for
// as long as the topic hung.
func TestDeadLetterPauseGrowsWhileTheWriterFails(t *testing.T) {
	table, err := routes.NewStatic(nil)
	if err != nil {
		t.Fatal(err)
	}
	dw := &kafka.Writer{Addr: kafka.TCP("127.0.0.1:1"), Topic: "dlq", RequiredAcks: kafka.RequireAll, MaxAttempts: 1, Transport: downTransport{}}
	r := bareReader(t, table, "orders", WithDeadLetter(dw))
	msg := &kafka.Message{Topic: "t", Value: []byte("v")}
	want := deadLetterPause
	for i := 1; i <= 8; i++ {
		r.deadLetterDown.Store(time.Now().Add(-time.Millisecond).UnixNano()) // the last pause is over
		if dl := r.deadLetterOrSkip(context.Background(), msg, "test"); dl == "" {
			t.Fatalf("write %d to a writer that is down reported success", i)
		}
		pause := time.Until(time.Unix(0, r.deadLetterDown.Load()))
		if pause < want-time.Second || pause > want {
			t.Fatalf("pause after %d failed writes in a row: %s, want %s", i, pause.Round(time.Second), want)
		}
		want = min(2*want, deadLetterMaxPause)
	}
	if c := r.deadLetterFailed.Load(); c != 8 {
		t.Fatalf("DeadLetterFailed %d, want 8", c)
	}
}

// TestRunBackoffNeverOverflows: the wait after each failure in a row
// grows up to the maximum and never wraps. An operator's "no maximum",
// WithBackoff(time.Second, math.MaxInt64), doubled the wait past the
// largest Duration after 34 failures: it wrapped negative, then to zero,
// and a production message under RetryForever (and a failing fetch) was
// retried in a tight loop against the failing dependency.
func TestRunBackoffNeverOverflows(t *testing.T) {
	for _, c := range []runConfig{
		newRunConfig([]RunOption{WithBackoff(time.Second, math.MaxInt64)}),
		newRunConfig([]RunOption{WithBackoff(3*time.Millisecond, math.MaxInt64-1)}),
		newRunConfig([]RunOption{WithBackoff(time.Millisecond, time.Hour)}),
	} {
		prev := time.Duration(0)
		for n := 1; n <= 200; n++ {
			d := c.wait(n)
			if d < prev || d <= 0 || d > c.max {
				t.Fatalf("WithBackoff(%s, %d): wait after failure %d is %d, after %d it was %d: want it growing, positive, at most the maximum", c.backoff, c.max, n, d, n-1, prev)
			}
			prev = d
		}
	}
}
