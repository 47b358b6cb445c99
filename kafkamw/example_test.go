package kafkamw_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
	"github.com/sandboxkit/sandboxkit/kafkamw"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// exampleTopic starts the embedded broker with an "orders" topic of one
// partition and returns its address and a function that stops it. The
// examples run against a real Kafka protocol server; the test broker is
// reached only from here and exampleProduce, in test files, so that
// package kafkamw itself never imports it (go list -deps ./kafkamw).
func exampleTopic() ([]string, func()) {
	addrs, stop, err := kafkatest.NewBroker()
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := kafkatest.CreateTopic(ctx, addrs, "orders", 1); err != nil {
		log.Fatal(err)
	}
	return addrs, stop
}

// exampleProduce writes an untagged order and one of each sandbox.
func exampleProduce(addrs []string, sandboxes ...string) {
	kw, closeWriter := kafkatest.NewWriter(addrs, "orders") // kafka-go Writer, BatchTimeout 2ms
	defer closeWriter()
	w, err := kafkamw.NewWriter(kw)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	if err := w.WriteMessages(ctx, kafka.Message{Value: []byte("order 1")}); err != nil {
		log.Fatal(err)
	}
	for i, id := range sandboxes {
		sctx := propagation.ContextWithSandbox(ctx, propagation.Sandbox{ID: id, Actor: "alice"})
		if err := w.WriteMessages(sctx, kafka.Message{Value: fmt.Appendf(nil, "order %d", i+2)}); err != nil {
			log.Fatal(err)
		}
	}
}

func ExampleNewWriter() {
	brokers, stop := exampleTopic()
	defer stop()

	tr := &kafka.Transport{} // of its own, so that its connections close with the example
	defer tr.CloseIdleConnections()
	kw := &kafka.Writer{
		Addr:         kafka.TCP(brokers...),
		Topic:        "orders",
		BatchTimeout: 5 * time.Millisecond, // kafka-go's default is 1s
		Transport:    tr,
	}
	w, err := kafkamw.NewWriter(kw)
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()

	// The request's context carries its sandbox (httpmw puts it there).
	ctx := propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "pr-42", Actor: "alice"})
	msg := kafka.Message{Value: []byte("order 1"), Headers: []kafka.Header{{Key: "content-type", Value: []byte("text/plain")}}}
	if err := w.WriteMessages(ctx, msg); err != nil {
		log.Fatal(err)
	}
	fmt.Println("caller's message keeps", len(msg.Headers), "header")

	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: "orders", GroupID: "inspect", MaxWait: 50 * time.Millisecond})
	defer r.Close()
	got, err := r.FetchMessage(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	for _, h := range got.Headers {
		fmt.Printf("%s: %s\n", h.Key, h.Value)
	}
	// Output:
	// caller's message keeps 1 header
	// content-type: text/plain
	// sandbox-id: pr-42
	// baggage: sandbox.id=pr-42,sandbox.actor=alice
}

// The baseline reader processes untagged messages and the messages of
// sandboxes that do not override its service, with the sandbox in the
// context so that their database writes go to the test database. Messages
// of sandboxes that run their own consumer are skipped and committed.
func ExampleNewReader() {
	brokers, stop := exampleTopic()
	defer stop()
	exampleProduce(brokers, "pr-42", "pr-7")

	// pr-42 runs its own version of the orders consumer; pr-7 does not.
	table, err := routes.NewStatic([]routes.Sandbox{
		{ID: "pr-42", Services: map[string]routes.Route{"orders": {Upstream: "10.0.3.8:9090", ActiveFrom: time.Now().Add(-time.Hour)}}},
		{ID: "pr-7"},
	})
	if err != nil {
		log.Fatal(err)
	}
	r, err := kafkamw.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: "orders", GroupID: "orders-consumer", MaxWait: 50 * time.Millisecond},
		table, "orders")
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()

	for range 2 {
		ctx, msg, err := r.FetchMessage(context.Background())
		if err != nil {
			log.Fatal(err)
		}
		if s, ok := propagation.FromContext(ctx); ok {
			fmt.Printf("%s (sandbox %s)\n", msg.Value, s.ID)
		} else {
			fmt.Printf("%s (production)\n", msg.Value)
		}
		if err := r.CommitMessages(ctx, msg); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Printf("%+v\n", r.Counts())
	// Output:
	// order 1 (production)
	// order 3 (sandbox pr-7)
	// {Delivered:2 Skipped:1 Unreadable:0 Orphaned:0 DeadLettered:0 DeadLetterFailed:0 Failed:0 Retries:0 Waits:0 Future:0 Forwarded:0 Unforwardable:0 Duplicates:0}
}

// A sandbox reader consumes, in a group of its own, exactly the messages of
// its sandbox produced while its route for the service is active; it starts
// at the route's activation, not at the end of the topic.
func ExampleNewReader_sandbox() {
	brokers, stop := exampleTopic()
	defer stop()
	exampleProduce(brokers, "pr-42", "pr-7")

	table, err := routes.NewStatic([]routes.Sandbox{
		{ID: "pr-42", Services: map[string]routes.Route{"orders": {Upstream: "10.0.3.8:9090", ActiveFrom: time.Now().Add(-time.Hour)}}},
	})
	if err != nil {
		log.Fatal(err)
	}
	r, err := kafkamw.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: "orders", GroupID: "orders-consumer", MaxWait: 50 * time.Millisecond},
		table, "orders", kafkamw.AsSandbox("pr-42"))
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	fmt.Println("group:", r.Config().GroupID)

	ctx, msg, err := r.FetchMessage(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	s, _ := propagation.FromContext(ctx)
	fmt.Printf("%s (sandbox %s, actor %s)\n", msg.Value, s.ID, s.Actor)
	if err := r.CommitMessages(ctx, msg); err != nil {
		log.Fatal(err)
	}
	// Output:
	// group: orders-consumer.sandbox.pr-42
	// order 2 (sandbox pr-42, actor alice)
}

// Run calls the handler for each message the reader owns and commits it
// once handled. A message of a sandbox the route table does not know
// (pr-99 here) belongs to no one: it is skipped, counted as orphaned,
// audited and, with WithDeadLetter, dead-lettered, and the production
// message behind it is processed.
func ExampleReader_Run() {
	brokers, stop := exampleTopic()
	defer stop()
	exampleProduce(brokers, "pr-99", "pr-7")

	table, err := routes.NewStatic([]routes.Sandbox{{ID: "pr-7"}}) // pr-7 exists, pr-99 does not
	if err != nil {
		log.Fatal(err)
	}
	r, err := kafkamw.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: "orders", GroupID: "orders-consumer", MaxWait: 50 * time.Millisecond},
		table, "orders")
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()

	ctx, cancel := context.WithCancel(context.Background())
	handled := 0
	err = r.Run(ctx, func(ctx context.Context, msg kafka.Message) error {
		// ctx carries the message's sandbox: writes through dbroute go
		// to its test database. Make the handler idempotent: Kafka
		// delivers at least once.
		if s, ok := propagation.FromContext(ctx); ok {
			fmt.Printf("%s (sandbox %s)\n", msg.Value, s.ID)
		} else {
			fmt.Printf("%s (production)\n", msg.Value)
		}
		if handled++; handled == 2 {
			cancel() // a clean shutdown: what was handled is committed
		}
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	c := r.Counts()
	fmt.Printf("delivered %d, orphaned %d\n", c.Delivered, c.Orphaned)
	// Output:
	// order 1 (production)
	// order 3 (sandbox pr-7)
	// delivered 2, orphaned 1
}

// In the split mode the baseline reader forwards each message of a
// sandbox that overrides the service to the sandbox's own topic, once the
// broker has acknowledged the copy it commits the original, and the
// sandbox's reader reads that topic alone.
func ExampleWithSplit() {
	brokers, stop := exampleTopic()
	defer stop()
	exampleProduce(brokers, "pr-42", "pr-7")

	table, err := routes.NewStatic([]routes.Sandbox{
		{ID: "pr-42", Services: map[string]routes.Route{"orders": {Upstream: "10.0.3.8:9090", ActiveFrom: time.Now().Add(-time.Hour)}}},
		{ID: "pr-7"},
	})
	if err != nil {
		log.Fatal(err)
	}
	cfg := kafka.ReaderConfig{Brokers: brokers, Topic: "orders", GroupID: "orders-consumer", MaxWait: 50 * time.Millisecond}
	split := kafkamw.WithSplit(kafkamw.Split{})
	base, err := kafkamw.NewReader(cfg, table, "orders", split)
	if err != nil {
		log.Fatal(err)
	}
	defer base.Close()
	for range 2 {
		_, msg, err := base.FetchMessage(context.Background())
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("baseline: %s\n", msg.Value)
		// The commit stops short of order 2 until its copy is written
		// (within WithSkipCommitInterval), then goes on to msg.
		if err := base.CommitMessages(context.Background(), msg); err != nil {
			log.Fatal(err)
		}
	}

	sb, err := kafkamw.NewReader(cfg, table, "orders", split, kafkamw.AsSandbox("pr-42"))
	if err != nil {
		log.Fatal(err)
	}
	defer sb.Close()
	ctx, msg, err := sb.FetchMessage(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	s, _ := propagation.FromContext(ctx)
	fmt.Printf("pr-42: %s (sandbox %s) from %s\n", msg.Value, s.ID, msg.Topic)
	base.Close()
	fmt.Println("forwarded:", base.Counts().Forwarded)
	// Output:
	// baseline: order 1
	// baseline: order 3
	// pr-42: order 2 (sandbox pr-42) from orders.orders-consumer.sandbox.pr-42
	// forwarded: 1
}
