package orders

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/kafkamw"
	"github.com/sandboxkit/sandboxkit/redisroute"
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

// LedgerSchema creates the ledger table, in MySQL or MariaDB: one row per
// order placed, written through database/sql.
const LedgerSchema = `CREATE TABLE ledger (
	id          BIGINT AUTO_INCREMENT PRIMARY KEY,
	order_id    BIGINT NOT NULL,
	item        VARCHAR(64) NOT NULL,
	qty         INT NOT NULL,
	total_cents BIGINT NOT NULL,
	priced_by   VARCHAR(64) NOT NULL,
	booked_at   TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
)`

// Stores are where the order service keeps its data, each reached through
// the sandbox-aware handle of its client library.
type Stores struct {
	// Orders holds the orders table (PostgreSQL through pgx). Required.
	Orders *dbroute.Router
	// Ledger holds the ledger table ([LedgerSchema]) in a second database
	// reached through database/sql: a *sqlroute.Router over a guarded
	// baseline *sql.DB. Nil: the service keeps no ledger.
	Ledger Ledger
	// Prices caches the last price quoted for each item, in Redis: a
	// client that redisroute.New routes, so that a sandbox's prices land
	// in the sandbox's own database. Nil: the service caches nothing.
	Prices *redis.Client
	// PricePrefix starts the cache keys: an item's key is
	// PricePrefix+"price:"+item (see [PriceKey]).
	PricePrefix string
}

// Ledger is what the service needs of a database/sql handle: the
// method *sql.DB and *sqlroute.Router share.
type Ledger interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// PriceKey returns the cache key of item's price under prefix: a hash
// with the fields totalCents, qty, pricedBy and order.
func PriceKey(prefix, item string) string { return prefix + "price:" + item }

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
// An order is stored in st.Orders, booked in st.Ledger, its price cached
// in st.Prices, and published to events. Its error is httpmw's, for
// misconfigured options, or a missing st.Orders or events.
func NewHandler(st Stores, events *kafkamw.Writer, opts ...httpmw.HandlerOption) (http.Handler, error) {
	if st.Orders == nil || events == nil {
		return nil, errors.New("orders: NewHandler needs an orders database router and an events writer")
	}
	s := &service{db: st.Orders, ledger: st.Ledger, prices: st.Prices, prefix: st.PricePrefix, events: events}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /orders", s.place)
	return httpmw.NewHandler(mux, opts...)
}

type service struct {
	db     *dbroute.Router
	ledger Ledger
	prices *redis.Client
	prefix string
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

	// The ledger, a second database through database/sql: the router
	// sends a sandbox's row to the sandbox's test database.
	if s.ledger != nil {
		_, err := s.ledger.ExecContext(ctx,
			`INSERT INTO ledger (order_id, item, qty, total_cents, priced_by) VALUES (?, ?, ?, ?, ?)`,
			p.ID, o.Item, o.Qty, o.TotalCents, o.PricedBy)
		switch {
		case errors.Is(err, dbroute.ErrNoTestDatabase), errors.Is(err, dbroute.ErrUnavailable):
			http.Error(w, "orders: ledger: "+err.Error(), http.StatusServiceUnavailable)
			return
		case err != nil:
			http.Error(w, "orders: booking the order in the ledger: "+err.Error(), http.StatusInternalServerError)
			return
		}
	}

	// The price cache: with a sandbox in ctx, redisroute runs these
	// commands in the sandbox's own Redis database, never production's.
	if s.prices != nil {
		_, err := s.prices.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
			pipe.HSet(ctx, PriceKey(s.prefix, o.Item), "totalCents", o.TotalCents, "qty", o.Qty, "pricedBy", o.PricedBy, "order", p.ID)
			pipe.Expire(ctx, PriceKey(s.prefix, o.Item), time.Hour)
			return nil
		})
		switch {
		case errors.Is(err, redisroute.ErrNoSandboxDatabase):
			http.Error(w, "orders: price cache: "+err.Error(), http.StatusServiceUnavailable)
			return
		case err != nil:
			http.Error(w, "orders: caching the price: "+err.Error(), http.StatusInternalServerError)
			return
		}
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
