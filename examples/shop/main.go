// Command shop runs sandboxkit's whole story in one process: a shop of four
// services, one of which a sandbox replaces, and a script that shows where
// every request, row and message lands.
//
//	go run ./examples/shop          # play the scenario, exit non-zero on any ✗
//	go run ./examples/shop -serve   # keep the shop up and print curl commands
//
// The services, each a package of its own:
//
//   - gateway: the HTTP edge (httpmw); admits sandbox requests only with a
//     signed ticket, budgets each sandbox, calls cart and orders;
//   - cart: a gRPC pricing service (grpcmw); sandbox pr-42 runs a changed
//     version with a new pricing rule next to the baseline;
//   - orders: an HTTP service writing to PostgreSQL through dbroute and
//     publishing order-placed events through kafkamw;
//   - shipping: a Kafka consumer (kafkamw), a baseline one and pr-42's own,
//     recording shipments through dbroute.
//
// Kafka is an embedded broker on loopback. PostgreSQL is the server at
// DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres), where
// the shop creates its production database sandboxkit_shop (its tables are
// created afresh at every start) and, for pr-42, a test database cloned
// from a template (shop_pr_42), dropped again at the end.
//
// The scenario: a production request; the same request with pr-42's
// ticket; an outsider forging pr-42's header; a malformed header from
// inside; a runaway loop in pr-42; the teardown of pr-42; events of the
// removed pr-42 and of an unknown sandbox between production events. Each
// step checks the real state (rows in each database, the consumers'
// counters and metrics, the dead-letter topic, the audit log) and prints
// ✓ or ✗.
package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	serveFlag := flag.Bool("serve", false, "keep the shop running and print curl commands to try it by hand (Ctrl-C stops it)")
	flag.Parse()
	set := settings{
		databaseURL: cmp.Or(os.Getenv("DATABASE_URL"), "postgres://postgres@127.0.0.1:5432/postgres"),
		database:    "sandboxkit_shop",
		prefix:      "shop_",
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var err error
	if *serveFlag {
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

// serve starts the shop, prints how to use it, and runs until ctx is done.
// It then drops pr-42's test database and stops.
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
	ticketArgs := fmt.Sprintf("-H 'baggage: %s'", ticket.Get("Baggage"))
	admin := redact(set.databaseURL)
	fmt.Fprintf(out, `The shop is up (Ctrl-C stops it). Audit records follow as they happen.

  gateway   %[1]s     (POST /checkout, form item=mug|tee|sticker, qty)
  orders    %[2]s     (POST /orders, an internal service)
  cart      %[3]s (baseline), %[4]s (pr-42)   gRPC
  shipping  %[5]s (baseline), %[6]s (pr-42)   counters
  Kafka     %[7]s, topic order-placed

A production checkout:
  curl -s %[1]s/checkout -d item=mug -d qty=3

The same in sandbox pr-42, with a ticket valid for 2 hours:
  curl -s %[1]s/checkout -d item=mug -d qty=3 %[8]s

An outsider forging the sandbox header (stripped, served as production, audited):
  curl -s %[1]s/checkout -d item=mug -d qty=3 -H 'Sandbox-Id: pr-42'

A malformed sandbox header from inside (400):
  curl -s %[2]s/orders -H 'Sandbox-Id: PR_42' -d '{"item":"mug","qty":1,"totalCents":1200,"pricedBy":"curl"}'

A runaway loop in pr-42 (429 after 3, then 2 per second):
  for i in $(seq 20); do curl -s -o /dev/null -w '%%{http_code} ' %[1]s/checkout -d item=tee -d qty=1 %[8]s; done; echo

An event of a sandbox that does not exist (orphaned: skipped, dead-lettered to %[7]s
topic order-placed.dead-letter, counted; production behind it keeps shipping):
  echo '{"orderId":999999}' | kcat -P -b %[7]s -t order-placed -H sandbox-id=pr-99

Who shipped what, and the rows (pr-42's test database exists from its first request on):
  curl -s %[5]s; curl -s %[6]s
  psql '%[9]s' -c 'TABLE orders' -c 'TABLE shipments'
  psql '%[10]s' -c 'TABLE orders' -c 'TABLE shipments'

`, sh.gatewayURL, sh.ordersURL, sh.cartAddr, sh.cartPR42, sh.shipURL, sh.shipPR42URL,
		strings.Join(sh.brokers, ","), ticketArgs, withDatabase(admin, set.database), withDatabase(admin, sh.testDatabase()))
	<-ctx.Done()
	fmt.Fprintln(out, "\nstopping; dropping pr-42's test database", sh.testDatabase())
	dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return sh.testDBs.Destroy(dctx, pr42ID)
}
