package shipping

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

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
// then. A failed shipment is retried until it succeeds or ctx is done; it
// is committed only once recorded.
func (c *Consumer) Run(ctx context.Context) error {
	for {
		mctx, msg, err := c.r.FetchMessage(ctx) // mctx carries the event's sandbox
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, io.EOF) {
				return nil
			}
			c.fail(err)
			if !sleep(ctx, 50*time.Millisecond) {
				return nil
			}
			continue
		}
		for {
			err := c.ship(mctx, msg.Value)
			if err == nil {
				break
			}
			c.fail(err)
			if !sleep(ctx, 100*time.Millisecond) {
				return nil
			}
		}
		c.shipped.Add(1)
		if err := c.r.CommitMessages(ctx, msg); err != nil && ctx.Err() == nil {
			c.fail(err)
		}
	}
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
// consumer, skipped (left to their owner), unreadable.
func (c *Consumer) Counts() kafkamw.Counts { return c.r.Counts() }

// Err returns the last error the consumer met, or nil.
func (c *Consumer) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastErr
}

// Status is what a Consumer reports over HTTP.
type Status struct {
	Name      string `json:"name"`
	Group     string `json:"group"`
	Shipped   int64  `json:"shipped"`
	Delivered int64  `json:"delivered"`
	Skipped   int64  `json:"skipped"`
	LastError string `json:"lastError,omitempty"`
}

// Status returns the consumer's counters.
func (c *Consumer) Status() Status {
	n := c.r.Counts()
	s := Status{Name: c.name, Group: c.r.Config().GroupID, Shipped: c.Shipped(), Delivered: n.Delivered, Skipped: n.Skipped}
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

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
