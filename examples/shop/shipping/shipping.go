package shipping

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/kafkamw"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// Schema creates the shipments table. It refers to the orders table, so
// a shipment can only be recorded in the database that holds its order.
const Schema = `CREATE TABLE shipments (
	order_id   bigint PRIMARY KEY REFERENCES orders (id),
	shipped_by text NOT NULL,
	shipped_at timestamptz NOT NULL DEFAULT now()
)`

// event is the part of an order-placed event shipping reads.
type event struct {
	OrderID int64 `json:"orderId"`
}

// Consumer ships the orders of the events its reader owns.
type Consumer struct {
	name    string
	r       *kafkamw.Reader
	db      *dbroute.Router
	shipped atomic.Int64

	mu      sync.Mutex
	lastErr error
}

// NewConsumer returns a consumer named name (recorded with each shipment)
// that reads r and writes through db. It does not start reading: call
// [Consumer.Run].
func NewConsumer(name string, r *kafkamw.Reader, db *dbroute.Router) *Consumer {
	return &Consumer{name: name, r: r, db: db}
}

// Run consumes until ctx is done or the reader is closed, and returns nil
// then, with every shipped order committed. It runs [kafkamw.Reader.Run]:
// a production order whose shipment fails is retried until it succeeds
// (the default for production data); an order of a sandbox that cannot be
// served (no test database, the sandbox on the baseline pool, its budget
// spent) is dead-lettered at once, and one that keeps failing after a few
// tries, so that production orders behind it still ship.
func (c *Consumer) Run(ctx context.Context) error {
	return c.r.Run(ctx, func(ctx context.Context, msg kafka.Message) error {
		if err := c.ship(ctx, msg.Value); err != nil { // ctx carries the event's sandbox
			return err
		}
		c.shipped.Add(1)
		return nil
	},
		kafkamw.WithSandboxErrors(append(kafkamw.DefaultSandboxErrors(), dbroute.ErrNoTestDatabase, dbroute.ErrSandboxOnBaseline)...),
		kafkamw.WithRetries(3),
		kafkamw.WithBackoff(50*time.Millisecond, time.Second),
		kafkamw.OnError(c.fail),
	)
}

func (c *Consumer) ship(ctx context.Context, value []byte) error {
	var ev event
	if err := json.Unmarshal(value, &ev); err != nil {
		return nil // not an order: nothing to ship
	}
	// Production database, or the test database of the event's sandbox.
	_, err := c.db.Exec(ctx,
		`INSERT INTO shipments (order_id, shipped_by) VALUES ($1, $2) ON CONFLICT (order_id) DO NOTHING`,
		ev.OrderID, c.name)
	if err != nil {
		sb, _ := propagation.FromContext(ctx)
		return fmt.Errorf("shipping: order %d (sandbox %q): %w", ev.OrderID, sb.ID, err)
	}
	return nil
}

func (c *Consumer) fail(err error) {
	c.mu.Lock()
	c.lastErr = err
	c.mu.Unlock()
}

// Name returns the consumer's name.
func (c *Consumer) Name() string { return c.name }

// Shipped returns how many orders the consumer has shipped.
func (c *Consumer) Shipped() int64 { return c.shipped.Load() }

// Counts returns the counts of the consumer's reader: delivered to this
// consumer, skipped (left to their owner, unreadable or orphaned),
// dead-lettered, failed.
func (c *Consumer) Counts() kafkamw.Counts { return c.r.Counts() }

// Err returns the last error the consumer met, or nil.
func (c *Consumer) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastErr
}

// Status is what a Consumer reports over HTTP: its shipments and its
// reader's counts.
type Status struct {
	Name         string `json:"name"`
	Group        string `json:"group"`
	Shipped      int64  `json:"shipped"`
	Delivered    int64  `json:"delivered"`
	Skipped      int64  `json:"skipped"`
	Unreadable   int64  `json:"unreadable"`
	Orphaned     int64  `json:"orphaned"`
	DeadLettered int64  `json:"deadLettered"`
	// DeadLetterFailed: given up on, but the dead-letter write failed
	// (audited with the message's coordinates).
	DeadLetterFailed int64  `json:"deadLetterFailed"`
	Failed           int64  `json:"failed"`
	LastError        string `json:"lastError,omitempty"`
}

// Status returns the consumer's counters.
func (c *Consumer) Status() Status {
	n := c.r.Counts()
	s := Status{Name: c.name, Group: c.r.Config().GroupID, Shipped: c.Shipped(),
		Delivered: n.Delivered, Skipped: n.Skipped, Unreadable: n.Unreadable,
		Orphaned: n.Orphaned, DeadLettered: n.DeadLettered, DeadLetterFailed: n.DeadLetterFailed, Failed: n.Failed}
	if err := c.Err(); err != nil {
		s.LastError = err.Error()
	}
	return s
}

// ServeHTTP answers with the consumer's [Status] as JSON.
func (c *Consumer) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(c.Status())
}
