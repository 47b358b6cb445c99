package main

import (
	"database/sql"
	"net/http"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/sandboxkit/sandboxkit/examples/shop/orders"
	"github.com/sandboxkit/sandboxkit/httpmw"
)

// newReports returns a small internal service with deliberate bugs, the
// kind the guards are for. Each endpoint writes a sample straight through
// a production handle, with the request's context, instead of through the
// store's router:
//
//   - POST /reports/sample: an order, through the production pool
//     (dbroute.Guard);
//   - POST /reports/ledger: a ledger row, through the production *sql.DB
//     of the ledger (sqlroute.Guard);
//   - POST /reports/price: a cached price, through a client of the
//     production cache that no redisroute.Router routes (redisroute.Guard).
//
// For production requests that is only untidy; for a sandbox's request it
// would write test data into production. The guard on each handle refuses
// the statement or command before anything is sent, and the handler
// answers 500 with that error.
func newReports(production *pgxpool.Pool, ledger *sql.DB, prices *redis.Client, pricePrefix string, opts ...httpmw.HandlerOption) (http.Handler, error) {
	mux := http.NewServeMux()
	answer := func(w http.ResponseWriter, err error) {
		if err != nil {
			http.Error(w, "reports: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusCreated)
	}
	mux.HandleFunc("POST /reports/sample", func(w http.ResponseWriter, r *http.Request) {
		// BUG: production instead of the router (sh.db).
		_, err := production.Exec(r.Context(),
			`INSERT INTO orders (item, qty, total_cents, priced_by) VALUES ('sample', 1, 0, 'reports')`)
		answer(w, err)
	})
	mux.HandleFunc("POST /reports/ledger", func(w http.ResponseWriter, r *http.Request) {
		// BUG: the production *sql.DB instead of the router (sh.ledger).
		_, err := ledger.ExecContext(r.Context(),
			`INSERT INTO ledger (order_id, item, qty, total_cents, priced_by) VALUES (0, 'sample', 1, 0, 'reports')`)
		answer(w, err)
	})
	mux.HandleFunc("POST /reports/price", func(w http.ResponseWriter, r *http.Request) {
		// BUG: a client of the production cache that no router routes.
		err := prices.HSet(r.Context(), orders.PriceKey(pricePrefix, "mug"), "totalCents", 0, "qty", 1, "pricedBy", "reports").Err()
		answer(w, err)
	})
	return httpmw.NewHandler(mux, opts...)
}
