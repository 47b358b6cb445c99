package sqlroute_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/go-sql-driver/mysql"

	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/dbroute/sqlroute"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// A guarded baseline and a router over it. A sandbox without a test
// database is refused, never sent to the baseline; the baseline refuses a
// sandbox context on its own, before it dials. (Nothing here talks to a
// server: both refusals happen first.)
func ExampleNew() {
	cfg, err := mysql.ParseDSN("app@tcp(db-prod:3306)/shop")
	if err != nil {
		fmt.Println(err)
		return
	}
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	baseline := sql.OpenDB(sqlroute.Guard(connector))
	defer baseline.Close()
	provider, err := sqlroute.StaticMySQL(map[string]string{
		"pr-42": "app@tcp(db-test:3306)/shop_pr_42",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	router, err := sqlroute.New(baseline, provider)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer router.Close()

	pr7 := propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "pr-7"})
	_, err = router.ExecContext(pr7, "INSERT INTO orders (sku) VALUES (?)", "A-1")
	fmt.Println("router, pr-7:", errors.Is(err, dbroute.ErrNoTestDatabase))
	var n int
	err = router.QueryRowContext(pr7, "SELECT COUNT(*) FROM orders").Scan(&n)
	fmt.Println("router row, pr-7:", errors.Is(err, dbroute.ErrNoTestDatabase))

	pr42 := propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "pr-42"})
	_, err = baseline.ExecContext(pr42, "INSERT INTO orders (sku) VALUES (?)", "A-1")
	fmt.Println("baseline, pr-42:", errors.Is(err, dbroute.ErrSandboxOnBaseline))
	// Output:
	// router, pr-7: true
	// router row, pr-7: true
	// baseline, pr-42: true
}
