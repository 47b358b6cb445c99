package shipping_test

import (
	"context"
	"log"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/examples/shop/orders"
	"github.com/sandboxkit/sandboxkit/examples/shop/shipping"
	"github.com/sandboxkit/sandboxkit/kafkamw"
	"github.com/sandboxkit/sandboxkit/routes"
)

// A baseline consumer and sandbox pr-42's own consumer of the same topic.
// The baseline consumer joins the group "shipping"; pr-42's joins
// "shipping.sandbox.pr-42" and starts where pr-42's route for shipping
// became active. Each order-placed event is shipped by one of them, into
// the database its sandbox (or production) owns. (Not run: it needs Kafka
// and PostgreSQL; go run ./examples/shop runs it.)
func ExampleNewConsumer() {
	ctx := context.Background()
	var db *dbroute.Router // dbroute.New(baseline, testDatabases, dbroute.WithRoutes(table))
	table, err := routes.NewStatic([]routes.Sandbox{{
		ID:       "pr-42",
		Services: map[string]routes.Route{"shipping": {Upstream: "http://10.0.3.9:8080", ActiveFrom: time.Now()}},
	}})
	if err != nil {
		log.Fatal(err)
	}
	cfg := kafka.ReaderConfig{Brokers: []string{"kafka:9092"}, Topic: orders.Topic, GroupID: "shipping"}

	baseline, err := kafkamw.NewReader(cfg, table, "shipping")
	if err != nil {
		log.Fatal(err)
	}
	defer baseline.Close()
	go shipping.NewConsumer("shipping", baseline, db).Run(ctx)

	// In the sandbox's own deployment:
	sandbox, err := kafkamw.NewReader(cfg, table, "shipping", kafkamw.AsSandbox("pr-42"))
	if err != nil {
		log.Fatal(err)
	}
	defer sandbox.Close()
	go shipping.NewConsumer("shipping@pr-42", sandbox, db).Run(ctx)
}
