// Command shop runs sandboxkit's whole story in one process: a shop of four
// services, one of which a sandbox replaces, and a script that shows where
// every request, row and message lands.
//
//	go run ./examples/shop          # play the scenario, exit non-zero on any ✗
//	go run ./examples/shop -serve   # keep the shop up and print curl, grpcurl and kcat commands
//
// The services, each a package of its own:
//
//   - gateway: the edge, HTTP (httpmw) and gRPC (grpcmw); admits sandbox
//     requests only with a signed ticket, budgets each sandbox, calls cart
//     and orders;
//   - cart: a gRPC pricing service (protobuf from cartpb/cart.proto, with
//     server reflection and the health service); sandbox pr-42 runs a
//     changed version with a new pricing rule next to the baseline;
//   - orders: an HTTP service writing to PostgreSQL through dbroute,
//     booking each order in a MariaDB ledger through database/sql and
//     dbroute/sqlroute, caching prices in Redis through redisroute, and
//     publishing order-placed events through kafkamw;
//   - shipping: a Kafka consumer (kafkamw), a baseline one and pr-42's own,
//     recording shipments through dbroute;
//   - reports (in this package): a service with deliberate bugs, writing
//     through production handles, that the guards stop: dbroute.Guard on
//     the pool, sqlroute.Guard on the ledger's *sql.DB, redisroute.Guard on
//     a client of the production cache.
//
// Kafka is an embedded broker on loopback. PostgreSQL is the server at
// DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres). Each
// run creates databases of its own, named after a random run ID: the
// production database sandboxkit_shop_<run> and, for pr-42, a test
// database shop_<run>_pr_42 cloned from a template; it drops them when it
// ends, on Ctrl-C too, and drops those of earlier runs that were killed.
// MariaDB is the server at MYSQL_DSN (default root@tcp(127.0.0.1:3306)/):
// the production ledger sandboxkit_shop_<run>, pr-42's shop_<run>_pr_42
// (provision.MySQLDatabasePerSandbox). Redis is the server at REDIS_ADDR
// (default 127.0.0.1:6379): production prices in database 0 under
// shop:<run>:, pr-42's in the database of 8 to 15 that the run leases for
// itself and redisroute claims for pr-42 (see stores.go for why a lease).
// Both are cleaned up with the PostgreSQL databases. Two runs at once
// never meet.
//
// The scenario: a production request; the same request with pr-42's
// ticket; an outsider forging pr-42's header; a malformed header from
// inside; a buggy handler writing with pr-42's context through the
// production pool; a runaway loop in pr-42; the teardown of pr-42; events
// of the removed pr-42 and of an unknown sandbox between production
// events; what production holds at the end. Each step checks the real
// state (rows in each database of both servers, keys in each Redis
// database, the consumers' counters and metrics, the dead-letter topic,
// the audit log) and prints ✓ or ✗.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// The servers the shop uses unless the environment names others.
const (
	defaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/postgres"
	defaultMySQLDSN    = "root@tcp(127.0.0.1:3306)/"
	defaultRedisAddr   = "127.0.0.1:6379"
)

func main() {
	serveFlag, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		os.Exit(2) // the flag package has said why
	}
	set := newSettings(cmp.Or(os.Getenv("DATABASE_URL"), defaultDatabaseURL))
	set.mysqlDSN = cmp.Or(os.Getenv("MYSQL_DSN"), set.mysqlDSN)
	set.redisAddr = cmp.Or(os.Getenv("REDIS_ADDR"), set.redisAddr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	if serveFlag {
		err = serve(ctx, os.Stdout, set)
	} else {
		err = play(ctx, os.Stdout, set)
	}
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "shop:", err)
		os.Exit(1)
	}
}

// parseFlags parses the command line; on -h it prints the usage to out and
// returns flag.ErrHelp.
func parseFlags(args []string, out io.Writer) (serve bool, err error) {
	fs := flag.NewFlagSet("shop", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.BoolVar(&serve, "serve", false, "keep the shop running and print curl, grpcurl and kcat commands to try it by hand (Ctrl-C stops it)")
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: go run ./examples/shop [-serve]\n\n")
		fs.PrintDefaults()
		fmt.Fprintf(out, `
The servers, from the environment (each run creates databases and keys of
its own and drops them when it ends):
  DATABASE_URL  PostgreSQL, a role that may create databases (default %s)
  MYSQL_DSN     MariaDB, a user that may create databases (default %s)
  REDIS_ADDR    Redis with 16 databases (default %s)
`, defaultDatabaseURL, defaultMySQLDSN, defaultRedisAddr)
	}
	err = fs.Parse(args)
	return serve, err
}

// serve starts the shop, prints how to use it, and runs until ctx is done.
// It then stops the shop, which drops the run's databases.
func serve(ctx context.Context, out io.Writer, set settings) error {
	set.auditTee = out
	sh, err := start(ctx, set)
	if err != nil {
		return err
	}
	defer sh.close()
	ticket, err := sh.ticketHeader(2 * time.Hour)
	if err != nil {
		return err
	}
	// The baggage header alone carries the sandbox and its ticket (what
	// go run ./cmd/sandboxticket prints).
	baggage := ticket.Get("Baggage")
	ticketArgs := shellLine("-H", "baggage: "+baggage)
	admin := redact(set.databaseURL)
	fmt.Fprintf(out, `The shop is up (Ctrl-C stops it and drops its databases). Audit records follow as they happen.

  gateway   %[1]s     (POST /checkout, form item=mug|tee|sticker, qty)
            %[11]s gRPC shop.Cart/Price, the same trust policy and budgets
  orders    %[2]s     (POST /orders, an internal service)
  cart      %[3]s (baseline), %[4]s (pr-42)   gRPC
  shipping  %[5]s (baseline), %[6]s (pr-42)   counters
  Kafka     %[7]s, topic order-placed
  databases %[12]s (production), %[13]s (pr-42's, from its first request on), in PostgreSQL and in MariaDB
  Redis     %[19]s, production prices in database %[20]d (keys %[21]s*), pr-42's in database %[22]d

A production checkout:
  curl -s %[1]s/checkout -d item=mug -d qty=3

The same in sandbox pr-42, with a ticket valid for 2 hours:
  curl -s %[1]s/checkout -d item=mug -d qty=3 %[8]s

An outsider forging the sandbox header (stripped, served as production, audited):
  curl -s %[1]s/checkout -d item=mug -d qty=3 -H 'Sandbox-Id: pr-42'

A malformed sandbox header from inside (400):
  curl -s %[2]s/orders -H 'Sandbox-Id: PR_42' -d '{"item":"mug","qty":1,"totalCents":1200,"pricedBy":"curl"}'

A runaway loop in pr-42: its budget is %[14]d requests, then one more every %[15]s. Ten requests
in a row answer %[14]d × 200 (fewer if pr-42 spent some in the last %[16]s), then 429 with
Retry-After: %[17]d, the same in the header and the body (one more 200 per %[15]s the loop takes):
  for i in $(seq 10); do curl -s -w ' [%%{http_code}, Retry-After: %%header{retry-after}]\n' %[1]s/checkout -d item=tee -d qty=1 %[8]s; done

A bug that only dbroute.Guard catches: a handler writing through the production pool
with pr-42's context (500, dbroute: sandbox context on the baseline pool; nothing written):
  curl -s %[18]s/reports/sample -X POST -H 'Sandbox-Id: pr-42'
The same bug on the ledger's production *sql.DB (sqlroute.Guard) and on a client of the
production cache that no router routes (redisroute.Guard):
  curl -s %[18]s/reports/ledger -X POST -H 'Sandbox-Id: pr-42'
  curl -s %[18]s/reports/price -X POST -H 'Sandbox-Id: pr-42'

An event of a sandbox that does not exist (orphaned: skipped, dead-lettered to %[7]s
topic order-placed.dead-letter, counted; production behind it keeps shipping):
  echo '{"orderId":999999}' | kcat -P -b %[7]s -t order-placed -H sandbox-id=pr-99

Who shipped what, and the rows:
  curl -s %[5]s; curl -s %[6]s
  psql '%[9]s' -c 'TABLE orders' -c 'TABLE shipments'
  psql '%[10]s' -c 'TABLE orders' -c 'TABLE shipments'
  mariadb -h127.0.0.1 -uroot -e 'SELECT * FROM %[12]s.ledger; SELECT * FROM %[13]s.ledger'
  redis-cli -n %[20]d --scan --pattern '%[21]s*'   # then HGETALL a key; pr-42's: redis-cli -n %[22]d

gRPC, with grpcurl (go install github.com/fullstorydev/grpcurl/cmd/grpcurl@latest,
or from this repository: GOWORK=off go tool -modfile=tools/go.mod grpcurl ...):
`, sh.gatewayURL, sh.ordersURL, sh.cartAddr, sh.cartPR42, sh.shipURL, sh.shipPR42URL,
		strings.Join(sh.brokers, ","), ticketArgs, withDatabase(admin, set.database), withDatabase(admin, sh.testDatabase()),
		sh.gatewayGRPC, set.database, sh.testDatabase(),
		pr42Burst, pr42Refill, pr42Burst*pr42Refill, int(pr42Refill/time.Second), sh.reportsURL,
		set.redisAddr, redisProductionDB, pricePrefix(set.run), sh.redisDB)
	for _, c := range sh.grpcurlCommands(baggage) {
		fmt.Fprintf(out, "  # %s\n  grpcurl %s\n", c.what, shellLine(c.args...))
	}
	fmt.Fprintln(out)
	<-ctx.Done()
	fmt.Fprintln(out, "\nstopping; dropping the databases of this run:", set.database, sh.testDatabase())
	return nil
}
