package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/sandboxkit/sandboxkit/dbroute/provision"
	"github.com/sandboxkit/sandboxkit/dbroute/sqlroute"
	"github.com/sandboxkit/sandboxkit/examples/shop/orders"
	"github.com/sandboxkit/sandboxkit/redisroute"
)

// The two stores besides PostgreSQL: the orders ledger in MariaDB, reached
// through database/sql (dbroute/sqlroute), and the price cache in Redis
// (redisroute).
//
// MariaDB: the run's production database is sandboxkit_shop_<run>, as in
// PostgreSQL; pr-42's test database is shop_<run>_pr_42, made on its first
// request by provision.MySQLDatabasePerSandbox. Both are dropped when the
// run ends, and with the PostgreSQL ones when a later run finds the run
// killed.
//
// Redis: production prices are in database redisProductionDB under keys
// starting shop:<run>: (see orders.PriceKey); a sandbox's are in a
// database of redisSandboxes that redisroute claims for it, under the same
// keys. The run deletes the keys of its own prefix in all of them when it
// ends (Router.Destroy flushes pr-42's database at the teardown step).
//
// Why a run leases a Redis database: redisroute finds a sandbox's database
// by the sandbox ID alone (the marker's value), with no namespace per
// deployment, so two runs at once, each with its own pr-42, would share
// pr-42's database over the range 8 to 15: the first run to tear pr-42
// down would flush the other's keys, and the other's router, which keeps
// its client of that database, would then write into a database without
// a marker, which no Destroy flushes. So each run leases one database N of
// the range for itself (leaseRedisDB) and gives its router the range N to
// N: pr-42 of this run can only be claimed there.
const (
	redisProductionDB = 0
	redisKeyPrefix    = "shop:"
)

// redisSandboxes is the range of Redis databases the shop's router hands
// to sandboxes.
var redisSandboxes = redisroute.Databases{First: 8, Last: 15}

var (
	// errNoMariaDB reports that MariaDB cannot be reached.
	errNoMariaDB = errors.New("cannot connect to MariaDB")
	// errNoRedis reports that Redis cannot be reached.
	errNoRedis = errors.New("cannot connect to Redis")
)

// pricePrefix is the prefix of the run's Redis keys.
func pricePrefix(run string) string { return redisKeyPrefix + run + ":" }

// startStores sets up the ledger (MariaDB through database/sql) and the
// price cache (Redis), each with its router and its guarded baseline.
func (sh *shop) startStores(ctx context.Context) error {
	if err := sh.startLedger(ctx); err != nil {
		return err
	}
	if err := sh.startPrices(ctx); err != nil {
		return err
	}
	// What killed runs left (lockRun found them), now that MariaDB and
	// Redis answer.
	return sh.dropKilledRuns(ctx)
}

// mysqlConfig returns the MariaDB connection settings of the run for
// database ("" for none).
func (sh *shop) mysqlConfig(database string) (*mysql.Config, error) {
	cfg, err := mysql.ParseDSN(sh.set.mysqlDSN)
	if err != nil {
		return nil, fmt.Errorf("MYSQL_DSN %q: %w", sh.set.mysqlDSN, err)
	}
	cfg.DBName = database
	if cfg.Timeout == 0 || cfg.Timeout > 5*time.Second {
		cfg.Timeout = 5 * time.Second
	}
	return cfg, nil
}

// openMySQL opens a *sql.DB on database, guarded when guard is set.
func (sh *shop) openMySQL(database string, guard bool) (*sql.DB, error) {
	cfg, err := sh.mysqlConfig(database)
	if err != nil {
		return nil, err
	}
	c, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, err
	}
	if guard {
		return sql.OpenDB(sqlroute.Guard(c, sqlroute.WithLogger(sh.audit.logger("ledger-db")))), nil
	}
	return sql.OpenDB(c), nil
}

func (sh *shop) startLedger(ctx context.Context) error {
	admin, err := sh.openMySQL("", false)
	if err != nil {
		return err
	}
	sh.onClose(func() { admin.Close() })
	sh.mysqlAdmin = admin
	if err := admin.PingContext(ctx); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("connecting to MariaDB: %w", context.Cause(ctx))
		}
		return fmt.Errorf("%w at %s (%v): start a server whose user may create databases, for example "+
			"`start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd` or "+
			"`docker run --rm -p 3306:3306 -e MARIADB_ALLOW_EMPTY_ROOT_PASSWORD=1 mariadb`, "+
			"or set MYSQL_DSN to one", errNoMariaDB, redactMySQL(sh.set.mysqlDSN), oneLine(err))
	}
	// From here on, closing the shop drops the run's MariaDB databases.
	sh.onClose(func() {
		if sh.set.keepDatabases {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := dropMySQLRun(ctx, admin, sh.set.run); err != nil {
			fmt.Fprintf(os.Stderr, "shop: dropping the MariaDB databases of run %s: %v\n", sh.set.run, err)
		}
	})
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+mysqlIdent(sh.set.database)); err != nil {
		return fmt.Errorf("creating the production ledger database: %w", err)
	}
	if _, err := admin.ExecContext(ctx, "CREATE TABLE "+mysqlIdent(sh.set.database)+"."+strings.TrimPrefix(orders.LedgerSchema, "CREATE TABLE ")); err != nil {
		return fmt.Errorf("creating the production ledger: %w", err)
	}

	// The production *sql.DB refuses sandbox contexts itself (Guard); the
	// router sends them to the sandbox's test database instead.
	// sqlroute.New requires the guard, so without it (noGuard) only the
	// handle reports writes through goes unguarded.
	base, err := sh.openMySQL(sh.set.database, true)
	if err != nil {
		return err
	}
	sh.onClose(func() { base.Close() })
	sh.ledgerBase = base
	if sh.set.noGuard {
		bare, err := sh.openMySQL(sh.set.database, false)
		if err != nil {
			return err
		}
		sh.onClose(func() { bare.Close() })
		sh.ledgerBase = bare
	}
	sh.ledgerDBs, err = provision.NewMySQLDatabasePerSandbox(sh.set.mysqlDSN, provision.MySQLMigration{
		Version: "ledger-1",
		Apply: func(ctx context.Context, c *sql.Conn) error {
			_, err := c.ExecContext(ctx, orders.LedgerSchema)
			return err
		},
	}, provision.WithPrefix(sh.set.prefix))
	if err != nil {
		return err
	}
	sh.onClose(sh.ledgerDBs.Close)
	sh.ledger, err = sqlroute.New(base, sh.ledgerDBs, sqlroute.WithRoutes(sh.table), sqlroute.WithLogger(sh.audit.logger("sqlroute")))
	if err != nil {
		return err
	}
	sh.onClose(func() { sh.ledger.Close() })
	return nil
}

func (sh *shop) startPrices(ctx context.Context) error {
	opts := &redis.Options{Addr: sh.set.redisAddr, DB: redisProductionDB, DialTimeout: 5 * time.Second}
	probe := redis.NewClient(opts)
	err := probe.Ping(ctx).Err()
	probe.Close()
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("connecting to Redis: %w", context.Cause(ctx))
		}
		return fmt.Errorf("%w at %s (%v): start a server with at least %d databases, for example "+
			"`redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\"` or `docker run --rm -p 6379:6379 redis`, "+
			"or set REDIS_ADDR to one", errNoRedis, sh.set.redisAddr, oneLine(err), redisSandboxes.Last+1)
	}
	// From here on, closing the shop deletes the run's keys.
	sh.onClose(func() {
		if sh.set.keepDatabases {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := dropRedisRun(ctx, sh.set.redisAddr, sh.set.run); err != nil {
			fmt.Fprintf(os.Stderr, "shop: deleting the Redis keys of run %s: %v\n", sh.set.run, err)
		}
	})

	// The checks' own client: no hook, any database.
	sh.redisAdmin = redis.NewClient(&redis.Options{Addr: sh.set.redisAddr, DialTimeout: 5 * time.Second, PoolSize: 2})
	sh.onClose(func() { sh.redisAdmin.Close() })
	db, err := sh.leaseRedisDB(ctx)
	if err != nil {
		return err
	}
	sh.redisDB = db

	// orders' client: redisroute sends its sandbox commands to the
	// sandbox's database; the guard added after the router is a second
	// line that refuses any sandbox command that would still reach
	// production's (none does: the router takes them all first).
	sh.prices = redis.NewClient(opts)
	sh.onClose(func() { sh.prices.Close() })
	if sh.priceRouter, err = redisroute.New(sh.prices, redisroute.Databases{First: db, Last: db},
		redisroute.WithRoutes(sh.table), redisroute.WithLogger(sh.audit.logger("redisroute"))); err != nil {
		return err
	}
	sh.onClose(func() { sh.priceRouter.Close() })
	if !sh.set.noGuard {
		if err := redisroute.Guard(sh.prices, redisroute.WithLogger(sh.audit.logger("prices-cache"))); err != nil {
			return err
		}
	}
	// reports' client of the production cache: no router, only the guard.
	sh.reportsPrices = redis.NewClient(opts)
	sh.onClose(func() { sh.reportsPrices.Close() })
	if !sh.set.noGuard {
		if err := redisroute.Guard(sh.reportsPrices, redisroute.WithLogger(sh.audit.logger("prices-cache"))); err != nil {
			return err
		}
	}
	return nil
}

// redisLeaseKey+N, in the production database, holds the run that leases
// database N of redisSandboxes.
const redisLeaseKey = "sandboxkit-shop:redis-lease:"

// Lua: delete KEYS[1] if it holds ARGV[1]; set it to ARGV[2] if it holds
// ARGV[1] (run by the checks' client, which no router or guard hooks).
var (
	releaseLease = redis.NewScript(`if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) end return 0`)
	takeLease    = redis.NewScript(`if redis.call("get", KEYS[1]) == ARGV[1] then redis.call("set", KEYS[1], ARGV[2]) return 1 end return 0`)
)

// leaseRedisDB leases a database of redisSandboxes to the run: one that no
// live run leases (a run is alive while it holds its run lock, see
// lockRun) and that is empty, or holds only what a killed run's pr-42 left
// (flushed then). It waits for one to free, for at most a minute. The run
// gives the lease back when it closes.
func (sh *shop) leaseRedisDB(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	c := sh.redisAdmin
	for {
		for _, db := range redisDatabases() {
			key := redisLeaseKey + strconv.Itoa(db)
			ok, err := c.SetNX(ctx, key, sh.set.run, 0).Result()
			if err != nil {
				return 0, fmt.Errorf("leasing a Redis database: %w", err)
			}
			if !ok {
				holder, err := c.Get(ctx, key).Result()
				if errors.Is(err, redis.Nil) {
					continue
				}
				if err != nil {
					return 0, err
				}
				alive, err := sh.runAlive(ctx, holder)
				if err != nil {
					return 0, err
				}
				if alive {
					continue
				}
				if n, err := takeLease.Run(ctx, c, []string{key}, holder, sh.set.run).Int(); err != nil || n == 0 {
					if err != nil {
						return 0, err
					}
					continue
				}
			}
			usable, err := sh.readyRedisDB(ctx, db)
			if err == nil && usable {
				sh.onClose(func() {
					if sh.set.keepDatabases {
						return // as a killed run: the next run takes the lease over
					}
					ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
					defer cancel()
					if err := giveBackRedisDB(ctx, c, db, sh.set.run); err != nil {
						fmt.Fprintf(os.Stderr, "shop: giving back Redis database %d of run %s: %v\n", db, sh.set.run, err)
					}
				})
				return db, nil
			}
			_ = releaseLease.Run(context.WithoutCancel(ctx), c, []string{key}, sh.set.run).Err()
			if err != nil {
				return 0, err
			}
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("leasing a Redis database: every database from %d to %d is leased by a live run of the shop or holds data of others: %w",
				redisSandboxes.First, redisSandboxes.Last, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// readyRedisDB reports whether leased database db can serve the run's
// sandboxes: it is empty, or it is the database of a pr-42 whose run is
// gone (the lease says no live run uses it), which it flushes.
func (sh *shop) readyRedisDB(ctx context.Context, db int) (bool, error) {
	usable := false
	err := onRedisDB(ctx, sh.redisAdmin, db, func(cn *redis.Conn) error {
		n, err := cn.DBSize(ctx).Result()
		if err != nil || n == 0 {
			usable = err == nil
			return err
		}
		owner, err := cn.Get(ctx, redisroute.MarkerKey).Result()
		if errors.Is(err, redis.Nil) || (err == nil && owner != pr42ID) {
			return nil // somebody else's data: not ours to flush
		}
		if err != nil {
			return err
		}
		usable = true
		return cn.FlushDB(ctx).Err()
	})
	return usable, err
}

// runAlive reports whether run holds its run lock.
func (sh *shop) runAlive(ctx context.Context, run string) (bool, error) {
	var free bool
	err := sh.query(ctx, "", func(c *pgx.Conn) error {
		if err := c.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, hashtext($2))`, runLockClass, run).Scan(&free); err != nil {
			return err
		}
		if free {
			_, err := c.Exec(ctx, `SELECT pg_advisory_unlock($1, hashtext($2))`, runLockClass, run)
			return err
		}
		return nil
	})
	return !free, err
}

// ledgerHandle is what orders books its ledger through: the router, or,
// in the tests' leaky shop, a production *sql.DB without a guard.
func (sh *shop) ledgerHandle() (orders.Ledger, error) {
	if !sh.set.leakyStores {
		return sh.ledger, nil
	}
	db, err := sh.openMySQL(sh.set.database, false)
	if err != nil {
		return nil, err
	}
	sh.onClose(func() { db.Close() })
	return db, nil
}

// pricesHandle is orders' Redis client: the routed one, or, in the tests'
// leaky shop, a client of the production database without router or guard.
func (sh *shop) pricesHandle() *redis.Client {
	if !sh.set.leakyStores {
		return sh.prices
	}
	c := redis.NewClient(&redis.Options{Addr: sh.set.redisAddr, DB: redisProductionDB, DialTimeout: 5 * time.Second})
	sh.onClose(func() { c.Close() })
	return c
}

// dropMySQLRun drops the MariaDB databases of run: its test databases and
// its production database.
func dropMySQLRun(ctx context.Context, admin *sql.DB, run string) error {
	production, _, _ := runDatabases(run)
	rows, err := admin.QueryContext(ctx, `SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE ?`,
		strings.ReplaceAll(testPrefix+run+"_", "_", `\_`)+"%")
	if err != nil {
		return err
	}
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return err
		}
		names = append(names, n)
	}
	if err := rows.Close(); err != nil {
		return err
	}
	for _, name := range append(names, production) {
		if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+mysqlIdent(name)); err != nil {
			return err
		}
	}
	return nil
}

// dropRedisRun deletes the keys of run in the production database and in
// every database of the sandbox range.
func dropRedisRun(ctx context.Context, addr, run string) error {
	c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 5 * time.Second, PoolSize: 1})
	defer c.Close()
	var errs []error
	for _, db := range append([]int{redisProductionDB}, redisDatabases()...) {
		err := onRedisDB(ctx, c, db, func(cn *redis.Conn) error {
			keys, err := runKeys(ctx, cn, run)
			if err != nil || len(keys) == 0 {
				return err
			}
			return cn.Del(ctx, keys...).Err()
		})
		errs = append(errs, err)
	}
	// The run's lease, if it still has one (killed).
	for _, db := range redisDatabases() {
		errs = append(errs, giveBackRedisDB(ctx, c, db, run))
	}
	return errors.Join(errs...)
}

// giveBackRedisDB flushes database db if run leases it and its pr-42 left
// a database there (the lease says no other run uses it), then ends the
// lease. It does nothing when run does not lease db.
func giveBackRedisDB(ctx context.Context, c *redis.Client, db int, run string) error {
	key := redisLeaseKey + strconv.Itoa(db)
	if holder, err := c.Get(ctx, key).Result(); errors.Is(err, redis.Nil) || (err == nil && holder != run) {
		return nil
	} else if err != nil {
		return err
	}
	err := onRedisDB(ctx, c, db, func(cn *redis.Conn) error {
		if owner, _ := cn.Get(ctx, redisroute.MarkerKey).Result(); owner == pr42ID {
			return cn.FlushDB(ctx).Err()
		}
		return nil
	})
	return errors.Join(err, releaseLease.Run(ctx, c, []string{key}, run).Err())
}

// redisDatabases lists the databases of the sandbox range.
func redisDatabases() []int {
	var dbs []int
	for db := redisSandboxes.First; db <= redisSandboxes.Last; db++ {
		dbs = append(dbs, db)
	}
	return dbs
}

// onRedisDB runs f on a connection of c switched to database db. It
// switches the connection back before it returns to c's pool: go-redis
// puts a closed Conn back into the pool as it is, and the pool's next
// command would run in db.
func onRedisDB(ctx context.Context, c *redis.Client, db int, f func(*redis.Conn) error) error {
	cn := c.Conn()
	defer cn.Close()
	if err := cn.Select(ctx, db).Err(); err != nil {
		return err
	}
	err := f(cn)
	if rerr := cn.Select(context.WithoutCancel(ctx), c.Options().DB).Err(); rerr != nil {
		return errors.Join(err, fmt.Errorf("switching a connection back to database %d: %w", c.Options().DB, rerr))
	}
	return err
}

// runKeys returns the keys of run in the database of cn.
func runKeys(ctx context.Context, cn *redis.Conn, run string) ([]string, error) {
	var keys []string
	iter := cn.Scan(ctx, 0, pricePrefix(run)+"*", 100).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	return keys, iter.Err()
}

// dropOtherStores drops what run left in MariaDB and Redis: the run was
// killed before it could (see lockRun).
func (sh *shop) dropOtherStores(ctx context.Context, run string) error {
	admin, err := sh.openMySQL("", false)
	if err != nil {
		return err
	}
	defer admin.Close()
	return errors.Join(dropMySQLRun(ctx, admin, run), dropRedisRun(ctx, sh.set.redisAddr, run))
}

// mysqlIdent quotes a MariaDB identifier.
func mysqlIdent(name string) string { return "`" + strings.ReplaceAll(name, "`", "``") + "`" }

// redactMySQL hides the password of a go-sql-driver/mysql DSN.
func redactMySQL(dsn string) string {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return "(unreadable MYSQL_DSN)"
	}
	if cfg.Passwd != "" {
		cfg.Passwd = "xxxxx"
	}
	return cfg.FormatDSN()
}
