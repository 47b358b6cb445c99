package kafkamw_test

import (
	"testing"

	"github.com/sandboxkit/sandboxkit/internal/compiletest"
)

// TestOptionRoles: each constructor takes the options of its role and
// refuses, at compile time, those of another.
func TestOptionRoles(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	const head = `package snippet

import (
	"context"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/kafkamw"
	"github.com/sandboxkit/sandboxkit/routes"
)

func f(ctx context.Context, kw *kafka.Writer, cfg kafka.ReaderConfig, tab *routes.Table, r *kafkamw.Reader, h kafkamw.Handler) {
	_ = time.Second
`
	c := compiletest.New(t, "github.com/sandboxkit/sandboxkit/kafkamw", "github.com/sandboxkit/sandboxkit/routes",
		"github.com/segmentio/kafka-go", "context", "time")
	for _, tc := range []struct {
		name, body, want string // want: "" compiles, else in the error
	}{
		{"control", `
	kafkamw.NewWriter(kw, kafkamw.WithCodec(nil), kafkamw.WithLogger(nil), kafkamw.WithBreaker(nil))
	kafkamw.NewReader(cfg, tab, "orders", kafkamw.WithCodec(nil), kafkamw.WithLogger(nil), kafkamw.AsSandbox("pr-1"),
		kafkamw.WithDeadLetter(kw), kafkamw.WithRouteWait(time.Second), kafkamw.WithSkipCommitInterval(time.Second),
		kafkamw.WithMeterProvider(nil))
	r.Run(ctx, h, kafkamw.WithRetries(3), kafkamw.OnError(nil))
	var opts []kafkamw.Option
	kafkamw.NewWriter(kw, opts[0])
	kafkamw.NewReader(cfg, tab, "orders", opts[0])`, ""},
		{"sandbox to a writer", `kafkamw.NewWriter(kw, kafkamw.AsSandbox("pr-1"))`, "does not implement kafkamw.WriterOption"},
		{"dead letter to a writer", `kafkamw.NewWriter(kw, kafkamw.WithDeadLetter(kw))`, "does not implement kafkamw.WriterOption"},
		{"route wait to a writer", `kafkamw.NewWriter(kw, kafkamw.WithRouteWait(time.Second))`, "does not implement kafkamw.WriterOption"},
		{"skip commits to a writer", `kafkamw.NewWriter(kw, kafkamw.WithSkipCommitInterval(time.Second))`, "does not implement kafkamw.WriterOption"},
		{"meters to a writer", `kafkamw.NewWriter(kw, kafkamw.WithMeterProvider(nil))`, "does not implement kafkamw.WriterOption"},
		{"breaker to a reader", `kafkamw.NewReader(cfg, tab, "orders", kafkamw.WithBreaker(nil))`, "does not implement kafkamw.ReaderOption"},
		{"run option to a reader", `kafkamw.NewReader(cfg, tab, "orders", kafkamw.WithRetries(3))`, "does not implement kafkamw.ReaderOption"},
		{"reader option to Run", `r.Run(ctx, h, kafkamw.WithCodec(nil))`, "does not implement kafkamw.RunOption"},
		{"a reader option is not an Option", `var _ kafkamw.Option = kafkamw.AsSandbox("pr-1")`, "does not implement kafkamw.Option"},
		{"no route table option", `kafkamw.NewReader(cfg, tab, "orders", kafkamw.WithRoutes(tab))`, "undefined: kafkamw.WithRoutes"},
		{"no service option", `kafkamw.NewReader(cfg, tab, "orders", kafkamw.WithService("orders"))`, "undefined: kafkamw.WithService"},
		{"table and service are arguments", `kafkamw.NewReader(cfg, kafkamw.AsSandbox("pr-1"))`, "not enough arguments"},
		{"NewWriter returns an error", `var _ *kafkamw.Writer = kafkamw.NewWriter(kw)`, "single-value context"},
	} {
		c.Expect(tc.name, head+tc.body+"\n}\n", tc.want)
	}
}
