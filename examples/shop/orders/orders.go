package orders

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/kafkamw"
)

// Topic is the Kafka topic of order-placed events.
const Topic = "order-placed"

// Schema creates the orders table.
const Schema = `CREATE TABLE orders (
	id          bigserial PRIMARY KEY,
	item        text NOT NULL,
	qty         integer NOT NULL,
	total_cents bigint NOT NULL,
	priced_by   text NOT NULL,
	placed_at   timestamptz NOT NULL DEFAULT now()
)`

// Order is what POST /orders takes.
type Order struct {
	Item       string `json:"item"`
	Qty        int    `json:"qty"`
	TotalCents int64  `json:"totalCents"`
	// PricedBy is the cart deployment that priced the order.
	PricedBy string `json:"pricedBy"`
}

// Placed is what POST /orders answers: the order's ID and the database
// that holds it, as the database server itself reports it.
type Placed struct {
	ID       int64  `json:"id"`
	Database string `json:"database"`
}

// Event is the value of an order-placed message. Its key is the order ID.
type Event struct {
	OrderID int64  `json:"orderId"`
	Item    string `json:"item"`
	Qty     int    `json:"qty"`
}

// NewHandler returns the order service: POST /orders, wrapped in
// [httpmw.NewHandler] with opts (the trust policy and the audit logger).
// Its error is httpmw's, for misconfigured options.
func NewHandler(db *dbroute.Router, events *kafkamw.Writer, opts ...httpmw.HandlerOption) (http.Handler, error) {
	s := &service{db: db, events: events}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /orders", s.place)
	return httpmw.NewHandler(mux, opts...)
}

type service struct {
	db     *dbroute.Router
	events *kafkamw.Writer
}

func (s *service) place(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context() // carries the sandbox, if httpmw admitted one
	var o Order
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&o); err != nil {
		http.Error(w, "orders: bad order: "+err.Error(), http.StatusBadRequest)
		return
	}
	if o.Item == "" || o.Qty < 1 || o.TotalCents < 0 {
		http.Error(w, "orders: an order needs an item, a positive quantity and a total", http.StatusBadRequest)
		return
	}

	// Production database or the sandbox's test database: the router
	// decides from ctx, and never sends a sandbox to production.
	var p Placed
	err := s.db.QueryRow(ctx,
		`INSERT INTO orders (item, qty, total_cents, priced_by) VALUES ($1, $2, $3, $4)
		 RETURNING id, current_database()`,
		o.Item, o.Qty, o.TotalCents, o.PricedBy).Scan(&p.ID, &p.Database)
	switch {
	case errors.Is(err, dbroute.ErrNoTestDatabase), errors.Is(err, dbroute.ErrUnavailable):
		// No test database for the sandbox, or the database is down for
		// now: either way the caller may retry later.
		http.Error(w, "orders: "+err.Error(), http.StatusServiceUnavailable)
		return
	case err != nil:
		http.Error(w, "orders: storing the order: "+err.Error(), http.StatusInternalServerError)
		return
	}

	// The event carries the sandbox in its record headers.
	ev, _ := json.Marshal(Event{OrderID: p.ID, Item: o.Item, Qty: o.Qty})
	msg := kafka.Message{Key: strconv.AppendInt(nil, p.ID, 10), Value: ev}
	if err := s.events.WriteMessages(ctx, msg); err != nil {
		http.Error(w, "orders: publishing order-placed: "+err.Error(), http.StatusBadGateway)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(p)
}

// Error is a refusal of the order service: its status and message.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("orders answered %d: %s", e.Status, e.Message)
}

// Client calls the order service.
type Client struct {
	url string
	hc  *http.Client
}

// NewClient returns a client of the order service at baseURL
// ("http://host:port") sending requests with hc. Give hc an
// [httpmw.NewTransport] so that the request's sandbox goes along (and, if
// a sandbox runs its own orders, there).
func NewClient(baseURL string, hc *http.Client) *Client {
	return &Client{url: strings.TrimSuffix(baseURL, "/") + "/orders", hc: hc}
}

// Place places o. A refusal of the service is an *[Error].
func (c *Client) Place(ctx context.Context, o Order) (Placed, error) {
	body, _ := json.Marshal(o)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return Placed{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return Placed{}, fmt.Errorf("orders: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		return Placed{}, &Error{Status: resp.StatusCode, Message: strings.TrimSpace(string(msg))}
	}
	var p Placed
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		return Placed{}, fmt.Errorf("orders: reading the answer: %w", err)
	}
	return p, nil
}
