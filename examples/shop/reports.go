package main

import (
	"net/http"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sandboxkit/sandboxkit/httpmw"
)

// newReports returns a small internal service with a deliberate bug, the
// kind dbroute.Guard is for: POST /reports/sample records a sample order
// straight through the production pool, with the request's context,
// instead of through the database router. For production requests that
// is only untidy; for a sandbox's request it would write test data into
// production. The guard on the production pool refuses the statement
// (dbroute.ErrSandboxOnBaseline) before anything is sent, and the handler
// answers 500 with that error.
func newReports(production *pgxpool.Pool, opts ...httpmw.HandlerOption) (http.Handler, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /reports/sample", func(w http.ResponseWriter, r *http.Request) {
		// BUG: production instead of the router (sh.db).
		_, err := production.Exec(r.Context(),
			`INSERT INTO orders (item, qty, total_cents, priced_by) VALUES ('sample', 1, 0, 'reports')`)
		if err != nil {
			http.Error(w, "reports: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusCreated)
	})
	return httpmw.NewHandler(mux, opts...)
}
