package orders_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/examples/shop/orders"
	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/kafkamw"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// server serves the order service over a database router whose sandboxes
// have no test database, and a Kafka writer nothing reaches.
func server(t *testing.T) *httptest.Server {
	t.Helper()
	baseline, err := pgxpool.New(context.Background(), "postgres://app@127.0.0.1:1/shop")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(baseline.Close)
	none, err := dbroute.Static(map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	db, err := dbroute.New(baseline, none)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	events, err := kafkamw.NewWriter(&kafka.Writer{Addr: kafka.TCP("127.0.0.1:1"), Topic: orders.Topic})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { events.Close() })
	h, err := orders.NewHandler(orders.Stores{Orders: db}, events, httpmw.TrustAll())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	t.Cleanup(srv.Client().CloseIdleConnections)
	return srv
}

// Orders that cannot be placed are refused before any database is used.
func TestRefusals(t *testing.T) {
	srv := server(t)
	for _, tc := range []struct {
		name, body string
		header     http.Header
		want       int
		wantBody   string
	}{
		{"not JSON", `item=mug`, nil, http.StatusBadRequest, "bad order"},
		{"no item", `{"qty":1,"totalCents":1}`, nil, http.StatusBadRequest, "needs an item"},
		{"zero quantity", `{"item":"mug","qty":0,"totalCents":1}`, nil, http.StatusBadRequest, "positive quantity"},
		{"malformed marker", `{"item":"mug","qty":1,"totalCents":1}`, http.Header{"Sandbox-Id": {"-x-"}}, http.StatusBadRequest, "invalid sandbox ID"},
		{"sandbox without test database", `{"item":"mug","qty":1,"totalCents":1}`, http.Header{"Sandbox-Id": {"pr-9"}}, http.StatusServiceUnavailable, "no test database"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/orders", strings.NewReader(tc.body))
			for k, v := range tc.header {
				req.Header[k] = v
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.want || !strings.Contains(string(b), tc.wantBody) {
				t.Errorf("%d %q, want %d containing %q", resp.StatusCode, b, tc.want, tc.wantBody)
			}
		})
	}
}

// The client carries the context's sandbox (through httpmw's transport) and
// returns refusals as *orders.Error with their status.
func TestClientRefusal(t *testing.T) {
	srv := server(t)
	tr, err := httpmw.NewTransport(srv.Client().Transport)
	if err != nil {
		t.Fatal(err)
	}
	c := orders.NewClient(srv.URL, &http.Client{Transport: tr})
	ctx := propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "pr-9"})
	_, err = c.Place(ctx, orders.Order{Item: "mug", Qty: 1, TotalCents: 1200, PricedBy: "cart"})
	var oe *orders.Error
	if !errors.As(err, &oe) || oe.Status != http.StatusServiceUnavailable || !strings.Contains(oe.Message, `sandbox "pr-9"`) {
		t.Fatalf("Place = %v, want a 503 *orders.Error naming pr-9", err)
	}
}
