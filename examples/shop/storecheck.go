package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/sandboxkit/sandboxkit/examples/shop/cart"
	"github.com/sandboxkit/sandboxkit/examples/shop/orders"
	"github.com/sandboxkit/sandboxkit/redisroute"
)

// What the scenario reads of MariaDB and Redis, directly (its own
// connections, no router, no guard): the checks look at the servers, not
// at what the routers say.

// price is one cached price: the hash orders writes (see orders.PriceKey).
type price map[string]string

func (p price) String() string {
	if len(p) == 0 {
		return "(none)"
	}
	return fmt.Sprintf("%s¢ for %s, priced by %s", p["totalCents"], p["qty"], p["pricedBy"])
}

// is reports whether p is the price totalCents for qty by pricedBy.
func (p price) is(totalCents int64, qty int, pricedBy string) bool {
	return p["totalCents"] == strconv.FormatInt(totalCents, 10) && p["qty"] == strconv.Itoa(qty) && p["pricedBy"] == pricedBy
}

// runPriceKey returns the cache key of item's price in run.
func runPriceKey(run, item string) string { return orders.PriceKey(pricePrefix(run), item) }

// priceIn returns the cached price of item in Redis database db (nil when
// there is none).
func (sh *shop) priceIn(ctx context.Context, db int, item string) (price, error) {
	var p price
	err := onRedisDB(ctx, sh.redisAdmin, db, func(cn *redis.Conn) error {
		m, err := cn.HGetAll(ctx, runPriceKey(sh.set.run, item)).Result()
		if len(m) > 0 {
			p = m
		}
		return err
	})
	return p, err
}

// sandboxKeys returns, for each database of the sandbox range that holds
// keys of this run, those keys, and the owner its redisroute marker names.
func (sh *shop) sandboxKeys(ctx context.Context) (map[int][]string, map[int]string, error) {
	keys, owners := map[int][]string{}, map[int]string{}
	for _, db := range redisDatabases() {
		err := onRedisDB(ctx, sh.redisAdmin, db, func(cn *redis.Conn) error {
			k, err := runKeys(ctx, cn, sh.set.run)
			if err != nil || len(k) == 0 {
				return err
			}
			slices.Sort(k)
			keys[db] = k
			owner, err := cn.Get(ctx, redisroute.MarkerKey).Result()
			if errors.Is(err, redis.Nil) {
				return nil
			}
			owners[db] = owner
			return err
		})
		if err != nil {
			return nil, nil, err
		}
	}
	return keys, owners, nil
}

// productionKeys returns the keys of this run in the production database.
func (sh *shop) productionKeys(ctx context.Context) ([]string, error) {
	var keys []string
	err := onRedisDB(ctx, sh.redisAdmin, redisProductionDB, func(cn *redis.Conn) (err error) {
		keys, err = runKeys(ctx, cn, sh.set.run)
		return err
	})
	slices.Sort(keys)
	return keys, err
}

// ledgerDatabase returns the name of pr-42's ledger database in MariaDB.
func (sh *shop) ledgerDatabase() string {
	name, _ := sh.ledgerDBs.Name(pr42ID)
	return name
}

// mysqlDatabaseExists reports whether MariaDB has database name.
func (sh *shop) mysqlDatabaseExists(ctx context.Context, name string) (bool, error) {
	var n int
	err := sh.mysqlAdmin.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?`, name).Scan(&n)
	return n > 0, err
}

// ledgerRows counts the rows of the ledger in database (0 when the
// database does not exist).
func (sh *shop) ledgerRows(ctx context.Context, database string) (int64, error) {
	if ok, err := sh.mysqlDatabaseExists(ctx, database); err != nil || !ok {
		return 0, err
	}
	var n int64
	err := sh.mysqlAdmin.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+mysqlIdent(database)+".ledger").Scan(&n)
	return n, err
}

// ledgerEntry returns priced_by and total_cents of order id in the ledger
// of database ("" when there is no such row or database).
func (sh *shop) ledgerEntry(ctx context.Context, database string, id int64) (string, int64, error) {
	if ok, err := sh.mysqlDatabaseExists(ctx, database); err != nil || !ok {
		return "", 0, err
	}
	var by string
	var total int64
	err := sh.mysqlAdmin.QueryRowContext(ctx, "SELECT priced_by, total_cents FROM "+mysqlIdent(database)+".ledger WHERE order_id = ?", id).Scan(&by, &total)
	if errors.Is(err, sql.ErrNoRows) {
		return "", 0, nil
	}
	return by, total, err
}

// storeState is what the scenario compares of MariaDB and Redis before
// and after a step.
type storeState struct {
	ledger       int64            // rows in the production ledger
	testLedgerDB bool             // pr-42's ledger database exists
	testLedger   int64            // rows in it
	prices       map[string]price // this run's production cache, by item
	sandboxKeys  int              // keys of this run in the sandbox databases
}

var items = []string{"mug", "tee", "sticker"}

func (sh *shop) storeState(ctx context.Context) (storeState, error) {
	var s storeState
	var err error
	if s.ledger, err = sh.ledgerRows(ctx, sh.set.database); err != nil {
		return s, err
	}
	if s.testLedgerDB, err = sh.mysqlDatabaseExists(ctx, sh.ledgerDatabase()); err != nil {
		return s, err
	}
	if s.testLedger, err = sh.ledgerRows(ctx, sh.ledgerDatabase()); err != nil {
		return s, err
	}
	s.prices = map[string]price{}
	for _, item := range items {
		if s.prices[item], err = sh.priceIn(ctx, redisProductionDB, item); err != nil {
			return s, err
		}
	}
	keys, _, err := sh.sandboxKeys(ctx)
	for _, k := range keys {
		s.sandboxKeys += len(k)
	}
	return s, err
}

// samePrices reports whether a and b hold the same prices.
func samePrices(a, b map[string]price) bool {
	return maps.EqualFunc(a, b, func(x, y price) bool { return maps.Equal(x, y) })
}

// Step 9.
func (p *player) production9(ctx context.Context) error {
	sh := p.sh
	p.step("What production holds after all the sandbox traffic",
		"the production databases and cache of this run, read directly: PostgreSQL orders, the MariaDB ledger, the Redis price cache")
	var ids []int64
	var foreign int
	err := sh.query(ctx, sh.set.database, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT id FROM orders ORDER BY id`)
		if err != nil {
			return err
		}
		ids, err = pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return err
		}
		return c.QueryRow(ctx, `SELECT count(*) FROM orders WHERE priced_by <> 'cart'`).Scan(&foreign)
	})
	if err != nil {
		return err
	}
	p.check(len(ids) > 0 && foreign == 0, "PostgreSQL %s.orders: %d orders, %d not priced by the baseline cart", sh.set.database, len(ids), foreign)

	var ledgerIDs []int64
	var ledgerForeign int
	rows, err := sh.mysqlAdmin.QueryContext(ctx, "SELECT order_id, priced_by FROM "+mysqlIdent(sh.set.database)+".ledger ORDER BY order_id")
	if err != nil {
		return err
	}
	for rows.Next() {
		var id int64
		var by string
		if err := rows.Scan(&id, &by); err != nil {
			rows.Close()
			return err
		}
		ledgerIDs = append(ledgerIDs, id)
		if by != "cart" {
			ledgerForeign++
		}
	}
	if err := rows.Close(); err != nil {
		return err
	}
	p.check(slices.Equal(ledgerIDs, ids) && ledgerForeign == 0,
		"MariaDB %s.ledger: %d rows, one per production order and no other, %d not priced by the baseline cart",
		sh.set.database, len(ledgerIDs), ledgerForeign)

	keys, err := sh.productionKeys(ctx)
	if err != nil {
		return err
	}
	var want []string
	for _, item := range items {
		want = append(want, runPriceKey(sh.set.run, item))
	}
	slices.Sort(want)
	wrong := 0
	for _, item := range items {
		pr, err := sh.priceIn(ctx, redisProductionDB, item)
		if err != nil {
			return err
		}
		unit, _ := cart.UnitPrice(item)
		qty, _ := strconv.Atoi(pr["qty"])
		if !pr.is(unit*int64(qty), qty, "cart") {
			wrong++
		}
		p.say("Redis db %d %s: %s", redisProductionDB, runPriceKey(sh.set.run, item), pr)
	}
	p.check(slices.Equal(keys, want) && wrong == 0,
		"Redis database %d: this run's keys are the 3 prices (%s), each a list price of the baseline cart (%d not)",
		redisProductionDB, strings.Join(keys, ", "), wrong)

	sandboxKeys, _, err := sh.sandboxKeys(ctx)
	if err != nil {
		return err
	}
	ledgerDB, err := sh.mysqlDatabaseExists(ctx, sh.ledgerDatabase())
	if err != nil {
		return err
	}
	p.check(len(sandboxKeys) == 0 && !ledgerDB,
		"nothing of pr-42 is left: no key of this run in Redis databases %d to %d (%v), no MariaDB database %s",
		redisSandboxes.First, redisSandboxes.Last, sandboxKeys, sh.ledgerDatabase())
	return nil
}
