package kafkamw

import (
	"context"
	"errors"
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
