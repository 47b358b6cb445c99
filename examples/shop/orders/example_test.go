package orders_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/examples/shop/orders"
	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/kafkamw"
)

// The order service refuses, before any database or broker is touched,
// what it must not serve: markers it cannot read (400) and a sandbox that
// has no test database (503). Neither becomes a production order. (The
// pool and the writer connect lazily; nothing here reaches them.)
func ExampleNewHandler() {
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig("postgres://app@127.0.0.1:1/shop")
	if err != nil {
		panic(err)
	}
	dbroute.Guard(cfg) // the production pool refuses sandbox contexts itself
	baseline, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		panic(err)
	}
	defer baseline.Close()
	testDBs, err := dbroute.Static(map[string]string{}) // no sandbox has a test database
	if err != nil {
		panic(err)
	}
	db, err := dbroute.New(baseline, testDBs)
	if err != nil {
		panic(err)
	}
	defer db.Close()
	events, err := kafkamw.NewWriter(&kafka.Writer{Addr: kafka.TCP("127.0.0.1:1"), Topic: orders.Topic})
	if err != nil {
		panic(err)
	}
	defer events.Close()

	h, err := orders.NewHandler(orders.Stores{Orders: db}, events, httpmw.TrustAll())
	if err != nil {
		panic(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	for _, id := range []string{"PR_42", "pr-7"} {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/orders",
			strings.NewReader(`{"item":"mug","qty":1,"totalCents":1200,"pricedBy":"cart"}`))
		req.Header.Set("Sandbox-Id", id)
		resp, err := srv.Client().Do(req)
		if err != nil {
			panic(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Printf("%s: %d %s", id, resp.StatusCode, body)
	}
	srv.Client().CloseIdleConnections()
	// Output:
	// PR_42: 400 bad sandbox markers: propagation: invalid sandbox ID: "PR_42" (want a DNS label: lower-case letters, digits and inner hyphens, at most 63)
	// pr-7: 503 orders: dbroute: no test database for the sandbox: sandbox "pr-7" has none configured
}
