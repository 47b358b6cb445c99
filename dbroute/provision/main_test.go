package provision_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/dbroute/internal/pgtest"
	"github.com/sandboxkit/sandboxkit/dbroute/provision"
	"github.com/sandboxkit/sandboxkit/routes"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// countingProvider counts Open calls of the provider it wraps.
type countingProvider struct {
	reclaimCloser
	opens atomic.Int32
}

// reclaimCloser is what both provisioners are.
type reclaimCloser interface {
	dbroute.Reclaimer
	Name(id string) (string, error)
	Provisioned(ctx context.Context) ([]provision.Provisioned, error)
	Destroy(ctx context.Context, id string) error
	Reap(ctx context.Context, table *routes.Table) ([]string, error)
	Close()
}

func (c *countingProvider) Open(ctx context.Context, id, key string) (*pgxpool.Config, error) {
	c.opens.Add(1)
	return c.reclaimCloser.Open(ctx, id, key)
}
