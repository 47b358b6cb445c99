package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/examples/shop/gateway"
	"github.com/sandboxkit/sandboxkit/examples/shop/orders"
	"github.com/sandboxkit/sandboxkit/examples/shop/shipping"
	"github.com/sandboxkit/sandboxkit/kafkamw"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/redisroute"
)

// play starts the shop, plays the scenario on it, prints every step to out
// and stops the shop. It returns an error when the shop cannot start or a
// check failed.
func play(ctx context.Context, out io.Writer, set settings) error {
	sh, err := start(ctx, set)
	if err != nil {
		return err
	}
	defer sh.close()
	p := &player{out: out, sh: sh}
	fmt.Fprintf(out, "sandboxkit shop: gateway %s, orders %s, cart %s (pr-42: %s), Kafka %s, PostgreSQL %s, MariaDB %s, Redis %s\n",
		sh.gatewayURL, sh.ordersURL, sh.cartAddr, sh.cartPR42, strings.Join(sh.brokers, ","), redact(set.databaseURL),
		redactMySQL(set.mysqlDSN), set.redisAddr)
	fmt.Fprintf(out, "sandbox pr-42 of alice overrides cart (new pricing rule) and shipping (its own consumer); test databases %s (PostgreSQL), %s (MariaDB ledger); its Redis database is %d (this run's lease of %d to %d)\n",
		sh.testDatabase(), sh.ledgerDatabase(), sh.redisDB, redisSandboxes.First, redisSandboxes.Last)
	fmt.Fprintf(out, "production: databases %s (PostgreSQL orders, MariaDB ledger), Redis database %d, keys %s*\n",
		set.database, redisProductionDB, pricePrefix(set.run))
	if err := p.play(ctx); err != nil {
		return err
	}
	fmt.Fprintf(out, "\n%d checks passed, %d failed\n", p.passed, p.failed)
	if p.failed > 0 {
		return fmt.Errorf("%d of %d checks failed", p.failed, p.passed+p.failed)
	}
	return nil
}

// player plays the scenario and keeps the score.
type player struct {
	out            io.Writer
	sh             *shop
	passed, failed int
	mark           int // audit log position at the start of the step
	n              int // step number
}

func (p *player) play(ctx context.Context) error {
	for _, step := range []func(context.Context) error{
		p.production, p.sandbox, p.forged, p.malformed, p.guard, p.runaway, p.teardown, p.strays, p.production9,
	} {
		if err := step(ctx); err != nil {
			return fmt.Errorf("step %d: %w", p.n, err)
		}
		p.showAudit()
	}
	return nil
}

// step starts step title.
func (p *player) step(title, what string) {
	p.n++
	p.mark = p.sh.audit.mark()
	fmt.Fprintf(p.out, "\n%d. %s\n   %s\n", p.n, title, what)
}

func (p *player) say(format string, args ...any) {
	fmt.Fprintf(p.out, "   "+format+"\n", args...)
}

// check prints ✓ or ✗ for a check of real state.
func (p *player) check(ok bool, format string, args ...any) bool {
	mark := "✓"
	if ok {
		p.passed++
	} else {
		mark = "✗"
		p.failed++
	}
	fmt.Fprintf(p.out, "   %s "+format+"\n", append([]any{mark}, args...)...)
	return ok
}

// audited returns the audit records of the step so far.
func (p *player) audited() []record { return p.sh.audit.since(p.mark) }

func (p *player) showAudit() {
	recs := p.audited()
	if len(recs) == 0 {
		p.say("audit log: nothing (production traffic is not audited)")
		return
	}
	p.say("audit log:")
	for _, l := range summary(recs) {
		p.say("  %s", l)
	}
}

// Step 1.
func (p *player) production(ctx context.Context) error {
	sh := p.sh
	p.step("A production request", "POST /checkout item=mug qty=3, without sandbox markers")
	before, err := sh.state(ctx)
	if err != nil {
		return err
	}
	a, err := sh.checkout(ctx, nil, "mug", 3)
	if err != nil {
		return err
	}
	p.say("%s", a)
	p.check(a.status == http.StatusOK && a.receipt.PricedBy == "cart" && a.receipt.Sandbox == "",
		"priced by the baseline cart (%s), served as production", a.receipt.Rule)
	row, err := sh.order(ctx, sh.set.database, a.receipt.Order)
	if err != nil {
		return err
	}
	p.check(row == "cart" && a.receipt.Database == sh.set.database,
		"order #%d is a row in %s.orders (production)", a.receipt.Order, sh.set.database)
	by, err := p.shippedBy(ctx, sh.ship, before.shipped+1, sh.set.database, a.receipt.Order)
	if err != nil {
		return err
	}
	p.check(by == "shipping", "shipped by the baseline consumer: %s.shipments says shipped_by=%q", sh.set.database, by)
	after, err := sh.state(ctx)
	if err != nil {
		return err
	}
	p.check(after.shipped == before.shipped+1 && after.shippedPR42 == before.shippedPR42,
		"consumer counters: baseline shipped %d, pr-42's consumer shipped %d", after.shipped, after.shippedPR42)
	p.check(!after.testDB, "no test database exists for pr-42: nothing of this request was a sandbox's")
	by, total, err := sh.ledgerEntry(ctx, sh.set.database, a.receipt.Order)
	if err != nil {
		return err
	}
	p.check(by == "cart" && total == a.receipt.TotalCents,
		"booked in the MariaDB ledger %s.ledger (through database/sql): order #%d, %d¢, priced by %q", sh.set.database, a.receipt.Order, total, by)
	pr, err := sh.priceIn(ctx, redisProductionDB, "mug")
	if err != nil {
		return err
	}
	p.check(pr.is(a.receipt.TotalCents, 3, "cart"), "price cached in Redis database %d: %s", redisProductionDB, pr)
	st, err := sh.storeState(ctx)
	if err != nil {
		return err
	}
	p.check(!st.testLedgerDB && st.sandboxKeys == 0,
		"no ledger database for pr-42 in MariaDB, no key of this run in Redis databases %d to %d", redisSandboxes.First, redisSandboxes.Last)
	return nil
}

// Step 2.
func (p *player) sandbox(ctx context.Context) error {
	sh := p.sh
	p.step("The same request in sandbox pr-42", "POST /checkout item=mug qty=3, with pr-42's markers and a signed ticket")
	h, err := sh.ticketHeader(time.Hour)
	if err != nil {
		return err
	}
	before, err := sh.state(ctx)
	if err != nil {
		return err
	}
	storesBefore, err := sh.storeState(ctx)
	if err != nil {
		return err
	}
	a, err := sh.checkout(ctx, h, "mug", 3)
	if err != nil {
		return err
	}
	p.say("%s", a)
	p.check(a.status == http.StatusOK && a.receipt.PricedBy == "cart@pr-42" && a.receipt.Sandbox == pr42ID,
		"priced by pr-42's cart (%s)", a.receipt.Rule)
	testDB := sh.testDatabase()
	row, err := sh.order(ctx, testDB, a.receipt.Order)
	if err != nil {
		return err
	}
	after, err := sh.state(ctx)
	if err != nil {
		return err
	}
	p.check(row == "cart@pr-42" && a.receipt.Database == testDB && after.orders == before.orders,
		"order #%d is a row in the test database %s.orders; production still has %d order(s)", a.receipt.Order, testDB, after.orders)
	by, err := p.shippedBy(ctx, sh.shipPR42, before.shippedPR42+1, testDB, a.receipt.Order)
	if err != nil {
		return err
	}
	p.check(by == "shipping@pr-42", "shipped by pr-42's own consumer: %s.shipments says shipped_by=%q", testDB, by)
	// The baseline consumer read the event too, and left it to its owner.
	err = sh.waitFor(ctx, func() bool { return sh.ship.Counts().Skipped > before.skipped })
	after, err2 := sh.state(ctx)
	if err2 != nil {
		return err2
	}
	p.check(err == nil && after.shipped == before.shipped && after.shippedPR42 == before.shippedPR42+1,
		"consumer counters: baseline shipped %d and skipped %d (left to pr-42), pr-42's consumer shipped %d",
		after.shipped, after.skipped, after.shippedPR42)
	recs := p.audited()
	p.check(count(recs, record{"service": "gateway", audit.KeyDecision: string(audit.Admitted), audit.KeyID: pr42ID, audit.KeyReason: audit.ReasonValidTicket, audit.KeyTicketKey: "shop"}) == 1 &&
		count(recs, record{"service": "gateway", audit.KeyDecision: string(audit.Routed), audit.KeyProtocol: audit.GRPC, audit.KeyID: pr42ID}) == 1,
		"audited: admitted at the gateway with a valid ticket (key shop), routed to pr-42's cart")

	// The ledger (MariaDB through database/sql) and the price cache
	// (Redis), read on the servers.
	storesAfter, err := sh.storeState(ctx)
	if err != nil {
		return err
	}
	ledgerDB := sh.ledgerDatabase()
	by, total, err := sh.ledgerEntry(ctx, ledgerDB, a.receipt.Order)
	if err != nil {
		return err
	}
	p.check(by == "cart@pr-42" && total == a.receipt.TotalCents && storesAfter.testLedger == storesBefore.testLedger+1,
		"booked in pr-42's MariaDB ledger %s.ledger: order #%d, %d¢, priced by %q", ledgerDB, a.receipt.Order, total, by)
	p.check(storesAfter.ledger == storesBefore.ledger,
		"the production ledger %s.ledger is untouched: %d row(s) before, %d after", sh.set.database, storesBefore.ledger, storesAfter.ledger)
	keys, owners, err := sh.sandboxKeys(ctx)
	if err != nil {
		return err
	}
	var db int
	var pr price
	for d := range keys {
		db = d
	}
	if len(keys) == 1 {
		if pr, err = sh.priceIn(ctx, db, "mug"); err != nil {
			return err
		}
	}
	p.check(len(keys) == 1 && db == sh.redisDB && owners[db] == pr42ID && pr.is(a.receipt.TotalCents, 3, "cart@pr-42"),
		"price cached in pr-42's own Redis database %d (marker %q): %s", db, owners[db], pr)
	p.check(samePrices(storesAfter.prices, storesBefore.prices) && storesAfter.prices["mug"].is(3*mugPrice, 3, "cart"),
		"the production cache (Redis database %d) is untouched: mug is still %s", redisProductionDB, storesAfter.prices["mug"])
	return nil
}

// mugPrice is the list price of a mug.
const mugPrice = 1200

// Step 3.
func (p *player) forged(ctx context.Context) error {
	sh := p.sh
	p.step("An outsider forging the sandbox header", "POST /checkout item=mug qty=3, with pr-42's markers but no ticket")
	before, err := sh.state(ctx)
	if err != nil {
		return err
	}
	a, err := sh.checkout(ctx, propagation.Default().HTTPHeader(pr42()), "mug", 3)
	if err != nil {
		return err
	}
	p.say("%s", a)
	p.check(a.status == http.StatusOK && a.receipt.PricedBy == "cart" && a.receipt.Sandbox == "",
		"markers stripped at the gateway: priced by the baseline cart, served as production")
	after, err := sh.state(ctx)
	if err != nil {
		return err
	}
	row, err := sh.order(ctx, sh.set.database, a.receipt.Order)
	if err != nil {
		return err
	}
	p.check(row == "cart" && after.orders == before.orders+1 && after.testOrders == before.testOrders,
		"order #%d is a row in %s.orders; the test database still has %d", a.receipt.Order, sh.set.database, after.testOrders)
	by, err := p.shippedBy(ctx, sh.ship, before.shipped+1, sh.set.database, a.receipt.Order)
	if err != nil {
		return err
	}
	p.check(by == "shipping", "shipped by the baseline consumer")
	stripped := 0
	for _, r := range p.audited() {
		if count([]record{r}, record{"service": "gateway", audit.KeyDecision: string(audit.Stripped), audit.KeyID: pr42ID}) == 1 &&
			r[audit.KeyPeer] != "" && strings.HasPrefix(r[audit.KeyReason], audit.ReasonUntrusted) {
			stripped++
		}
	}
	p.check(stripped == 1, "audited: stripped at the gateway, with the peer and the reason")
	return nil
}

// Step 4.
func (p *player) malformed(ctx context.Context) error {
	sh := p.sh
	p.step("A malformed sandbox header from inside",
		"POST /orders straight to orders, as a service inside the shop would, with Sandbox-Id: PR_42")
	before, err := sh.state(ctx)
	if err != nil {
		return err
	}
	status, body, err := sh.post(ctx, sh.ordersURL+"/orders", "application/json",
		http.Header{"Sandbox-Id": {"PR_42"}}, `{"item":"mug","qty":1,"totalCents":1200,"pricedBy":"script"}`)
	if err != nil {
		return err
	}
	p.say("→ %d %s", status, body)
	p.check(status == http.StatusBadRequest && strings.Contains(body, "invalid sandbox ID"),
		"rejected with 400 naming the problem, not served as production")
	after, err := sh.state(ctx)
	if err != nil {
		return err
	}
	p.check(after.orders == before.orders && after.testOrders == before.testOrders,
		"no order written anywhere: %d in production, %d in the test database", after.orders, after.testOrders)
	p.check(count(p.audited(), record{"service": "orders", audit.KeyDecision: string(audit.Rejected)}) == 1, "audited: rejected at orders")
	return nil
}

// Step 5.
func (p *player) guard(ctx context.Context) error {
	sh := p.sh
	p.step("A bug that would write test data to production, and the guard that stops it",
		"POST /reports/sample with pr-42's markers to reports, whose handler writes through the production pool instead of the router")
	before, err := sh.state(ctx)
	if err != nil {
		return err
	}
	status, body, err := sh.post(ctx, sh.reportsURL+"/reports/sample", "text/plain", propagation.Default().HTTPHeader(pr42()), "")
	if err != nil {
		return err
	}
	p.say("→ %d %s", status, body)
	p.check(status == http.StatusInternalServerError && strings.Contains(body, dbroute.ErrSandboxOnBaseline.Error()),
		"the write was refused by dbroute.Guard on the production pool (%q)", dbroute.ErrSandboxOnBaseline)
	after, err := sh.state(ctx)
	if err != nil {
		return err
	}
	p.check(after.orders == before.orders && after.testOrders == before.testOrders,
		"nothing reached production: %d order(s) there before, %d after (pr-42's test database: %d before, %d after)",
		before.orders, after.orders, before.testOrders, after.testOrders)
	p.check(count(p.audited(), record{"service": "orders-db", audit.KeyDecision: string(audit.Rejected), audit.KeyProtocol: audit.SQL, audit.KeyID: pr42ID}) == 1,
		"audited: rejected on the production pool, with the sandbox")

	// The same bug on the two other stores: the ledger's production
	// *sql.DB, and a client of the production cache no router routes.
	storesBefore, err := sh.storeState(ctx)
	if err != nil {
		return err
	}
	for _, c := range []struct{ path, guard, err, service string }{
		{"/reports/ledger", "sqlroute.Guard on the production ledger *sql.DB", dbroute.ErrSandboxOnBaseline.Error(), "ledger-db"},
		{"/reports/price", "redisroute.Guard on the production cache client", redisroute.ErrSandboxOnBaseline.Error(), "prices-cache"},
	} {
		mark := len(p.audited())
		status, body, err := sh.post(ctx, sh.reportsURL+c.path, "text/plain", propagation.Default().HTTPHeader(pr42()), "")
		if err != nil {
			return err
		}
		p.say("POST %s → %d %s", c.path, status, body)
		p.check(status == http.StatusInternalServerError && strings.Contains(body, c.err) &&
			count(p.audited()[mark:], record{"service": c.service, audit.KeyDecision: string(audit.Rejected), audit.KeyID: pr42ID}) == 1,
			"refused by %s, and audited", c.guard)
	}
	storesAfter, err := sh.storeState(ctx)
	if err != nil {
		return err
	}
	p.check(storesAfter.ledger == storesBefore.ledger && storesAfter.testLedger == storesBefore.testLedger,
		"nothing reached the ledger: %d row(s) in production before, %d after", storesBefore.ledger, storesAfter.ledger)
	p.check(samePrices(storesAfter.prices, storesBefore.prices) && storesAfter.prices["mug"]["pricedBy"] == "cart",
		"nothing reached the production cache: mug is still %s", storesAfter.prices["mug"])
	return nil
}

// Step 6.
func (p *player) runaway(ctx context.Context) error {
	sh := p.sh
	p.step("A runaway loop in sandbox pr-42",
		fmt.Sprintf("4 loops send %d pr-42 checkouts at once while production sends 10; pr-42's budget is %d at once and one more every %s.\n"+
			"   The budget's clock stands still for this step, so the count does not depend on this machine's speed.",
			runawayRequests, pr42Burst, pr42Refill))
	h, err := sh.ticketHeader(time.Hour)
	if err != nil {
		return err
	}
	before, err := sh.state(ctx)
	if err != nil {
		return err
	}
	sh.clock.hold(pr42Burst * pr42Refill) // past a full bucket
	defer sh.clock.release()
	var (
		sent, admitted, throttled atomic.Int64
		mismatched, other         atomic.Int64
		hint                      atomic.Value // the first 429's Retry-After
		wg                        sync.WaitGroup
		prodOK                    int
		firstErr                  error
		errMu                     sync.Mutex
	)
	for range 4 {
		wg.Go(func() {
			for sent.Add(1) <= runawayRequests {
				a, err := sh.checkout(ctx, h, "tee", 1)
				switch {
				case err != nil:
					errMu.Lock()
					firstErr = firstOf(firstErr, err)
					errMu.Unlock()
					return
				case a.status == http.StatusOK:
					admitted.Add(1)
				case a.status == http.StatusTooManyRequests:
					throttled.Add(1)
					hint.CompareAndSwap(nil, a.retryAfter)
					if a.retryAfters != 1 || !strings.Contains(a.body, "retry after "+a.retryAfter+"s") {
						mismatched.Add(1)
					}
				default:
					other.Add(1)
				}
			}
		})
	}
	for range 10 {
		a, err := sh.checkout(ctx, nil, "sticker", 2)
		if err != nil {
			wg.Wait()
			return err
		}
		if a.status == http.StatusOK && a.receipt.Sandbox == "" {
			prodOK++
		}
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	retryAfter, _ := hint.Load().(string)
	p.say("→ pr-42: %d served, %d answered 429 Too Many Requests (Retry-After: %s), %d other",
		admitted.Load(), throttled.Load(), retryAfter, other.Load())
	p.say("→ production: %d of 10 served", prodOK)

	p.check(admitted.Load() == pr42Burst && throttled.Load() == runawayRequests-pr42Burst && other.Load() == 0,
		"pr-42 got exactly its budget: %d served, the other %d throttled", admitted.Load(), throttled.Load())
	p.check(throttled.Load() > 0 && mismatched.Load() == 0 && retryAfter == fmt.Sprint(int(pr42Refill/time.Second)),
		"each 429 says when to come back, once: Retry-After: %s in the header and the same in the body", retryAfter)
	p.check(prodOK == 10, "production kept flowing: %d of 10 served, none throttled", prodOK)
	after, err := sh.state(ctx)
	if err != nil {
		return err
	}
	p.check(after.testOrders == before.testOrders+admitted.Load() && after.orders == before.orders+10,
		"rows: %d new orders in the test database, %d in production", after.testOrders-before.testOrders, after.orders-before.orders)
	p.check(count(p.audited(), record{"service": "gateway", audit.KeyDecision: string(audit.Throttled), audit.KeyID: pr42ID}) == int(throttled.Load()),
		"audited: one throttled record per refused request")
	// Each order is shipped once, by its owner's consumer.
	err = sh.waitFor(ctx, func() bool {
		return sh.ship.Shipped() >= before.shipped+10 && sh.shipPR42.Shipped() >= before.shippedPR42+admitted.Load()
	})
	after, err2 := sh.state(ctx)
	if err2 != nil {
		return err2
	}
	ok := p.check(err == nil && after.shipped-before.shipped == 10 && after.shippedPR42-before.shippedPR42 == admitted.Load() &&
		after.shipments-before.shipments == 10 && after.testShipments-before.testShipments == admitted.Load(),
		"every order shipped once, by its owner: baseline consumer +%d, pr-42's consumer +%d; as many new shipments as orders in each database",
		after.shipped-before.shipped, after.shippedPR42-before.shippedPR42)
	if !ok {
		p.consumerErrors()
	}
	return nil
}

// runawayRequests is how many checkouts the runaway loop sends.
const runawayRequests = 20

// Step 7.
func (p *player) teardown(ctx context.Context) error {
	sh := p.sh
	testDB := sh.testDatabase()
	p.step("Teardown of pr-42", "remove pr-42 from the route table, stop its consumer, drop its test databases (PostgreSQL, MariaDB), flush its Redis database")
	if err := sh.table.Update(nil); err != nil {
		return err
	}
	sh.stopPR42()
	err := sh.testDBs.Destroy(ctx, pr42ID)
	exists, err2 := sh.databaseExists(ctx, testDB)
	if err2 != nil {
		return err2
	}
	p.check(err == nil && !exists, "test database %s dropped: gone from pg_database", testDB)
	storesBefore, err := sh.storeState(ctx)
	if err != nil {
		return err
	}
	keysBefore, _, err := sh.sandboxKeys(ctx)
	if err != nil {
		return err
	}
	ledgerDB := sh.ledgerDatabase()
	err = sh.ledgerDBs.Destroy(ctx, pr42ID)
	exists, err2 = sh.mysqlDatabaseExists(ctx, ledgerDB)
	if err2 != nil {
		return err2
	}
	p.check(err == nil && storesBefore.testLedgerDB && !exists, "MariaDB ledger database %s dropped: gone from information_schema", ledgerDB)
	err = sh.priceRouter.Destroy(ctx, pr42ID)
	keysAfter, _, err2 := sh.sandboxKeys(ctx)
	if err2 != nil {
		return err2
	}
	p.check(err == nil && len(keysBefore) == 1 && len(keysAfter) == 0,
		"pr-42's Redis database flushed (redisroute Router.Destroy): this run's sandbox keys %v gone", keysBefore)
	storesAfter, err := sh.storeState(ctx)
	if err != nil {
		return err
	}
	p.check(storesAfter.ledger == storesBefore.ledger && samePrices(storesAfter.prices, storesBefore.prices),
		"production untouched by the teardown: %d ledger row(s), the same %d cached prices", storesAfter.ledger, len(storesAfter.prices))
	err = sh.waitFor(ctx, func() bool { return sh.cartRouter.Conns() == 0 })
	p.check(err == nil, "the gateway closed its connection to pr-42's cart")

	// The ticket is still valid, but the sandbox is gone: its requests
	// must not land in production.
	h, err := sh.ticketHeader(time.Hour)
	if err != nil {
		return err
	}
	before, err := sh.state(ctx)
	if err != nil {
		return err
	}
	a, waits, err := sh.checkoutPatiently(ctx, h, "mug", 1)
	if err != nil {
		return err
	}
	if waits > 0 {
		p.say("late request with pr-42's ticket first answered 429 (×%d): pr-42's budget, spent in step 6, had not refilled; sent again after Retry-After", waits)
	}
	p.say("late request with pr-42's ticket %s", a)
	after, err := sh.state(ctx)
	if err != nil {
		return err
	}
	exists, err = sh.databaseExists(ctx, testDB)
	if err != nil {
		return err
	}
	p.check(a.status == http.StatusServiceUnavailable && after.orders == before.orders && !exists,
		"a late request of pr-42 is refused (no test database), not written to production, and creates no database")
	// Straight at the ledger and the cache, as a service that skips
	// PostgreSQL would: both routers know pr-42 is gone.
	sctx := propagation.ContextWithSandbox(ctx, pr42())
	_, lerr := sh.ledger.ExecContext(sctx, `INSERT INTO ledger (order_id, item, qty, total_cents, priced_by) VALUES (0, 'late', 1, 0, 'late')`)
	cerr := sh.prices.Set(sctx, orders.PriceKey(pricePrefix(sh.set.run), "late"), "1", 0).Err()
	final, err := sh.storeState(ctx)
	if err != nil {
		return err
	}
	keys, _, err := sh.sandboxKeys(ctx)
	if err != nil {
		return err
	}
	p.check(errors.Is(lerr, dbroute.ErrNoTestDatabase) && errors.Is(cerr, redisroute.ErrNoSandboxDatabase) &&
		!final.testLedgerDB && len(keys) == 0 && final.ledger == storesAfter.ledger && samePrices(final.prices, storesAfter.prices),
		"late ledger and cache writes of pr-42 are refused (%v; %v): no database made, nothing in production", errText(lerr), errText(cerr))
	return nil
}

// Step 8.
func (p *player) strays(ctx context.Context) error {
	sh := p.sh
	p.step("Messages of a removed and of an unknown sandbox",
		"a late producer publishes order-placed events of pr-42 (removed in step 7) and of pr-99 (never existed), between two production checkouts")
	before, beforeMetrics, err := sh.consumerState(ctx)
	if err != nil {
		return err
	}
	a1, err := sh.checkout(ctx, nil, "mug", 1)
	if err != nil {
		return err
	}
	strays := []string{pr42ID, "pr-99"}
	for i, id := range strays {
		// What a producer that missed the teardown sends: the sandbox in
		// the context, tagged by the same writer orders uses.
		sctx := propagation.ContextWithSandbox(ctx, propagation.Sandbox{ID: id, Actor: "mallory"})
		ev, err := json.Marshal(orders.Event{OrderID: 900_000 + int64(i), Item: "mug", Qty: 1})
		if err != nil {
			return err
		}
		if err := sh.events.WriteMessages(sctx, kafka.Message{Value: ev}); err != nil {
			return err
		}
	}
	a2, err := sh.checkout(ctx, nil, "tee", 1)
	if err != nil {
		return err
	}
	p.say("production %s", a1)
	p.say("production %s", a2)
	by1, err := p.shippedBy(ctx, sh.ship, before.Shipped+1, sh.set.database, a1.receipt.Order)
	if err != nil {
		return err
	}
	by2, err := p.shippedBy(ctx, sh.ship, before.Shipped+2, sh.set.database, a2.receipt.Order)
	if err != nil {
		return err
	}
	p.check(a1.status == http.StatusOK && a2.status == http.StatusOK && by1 == "shipping" && by2 == "shipping",
		"production kept shipping: orders #%d (before the strays) and #%d (behind them) shipped by the baseline consumer", a1.receipt.Order, a2.receipt.Order)

	err = sh.waitFor(ctx, func() bool { return sh.ship.Status().DeadLettered >= before.DeadLettered+2 })
	after, afterMetrics, err2 := sh.consumerState(ctx)
	if err2 != nil {
		return err2
	}
	p.check(err == nil && after.Orphaned-before.Orphaned == 2 && after.DeadLettered-before.DeadLettered == 2 && after.Shipped-before.Shipped == 2,
		"the baseline consumer skipped both as orphaned and dead-lettered them: orphaned +%d, dead-lettered +%d, shipped +%d",
		after.Orphaned-before.Orphaned, after.DeadLettered-before.DeadLettered, after.Shipped-before.Shipped)
	dead, err := sh.deadLetters(ctx)
	if err != nil {
		return err
	}
	found := 0
	for _, id := range strays {
		if reason, ok := dead[id]; ok && strings.Contains(reason, "orphaned message of sandbox "+id) {
			found++
			p.say("dead-letter topic %s: sandbox %s, reason %q", deadLetterTopic, id, reason)
		}
	}
	p.check(found == 2, "both are in the dead-letter topic %s with the reason", deadLetterTopic)
	recs := p.audited()
	p.check(count(recs, record{"service": "shipping", audit.KeyDecision: string(audit.Rejected), audit.KeyID: pr42ID}) == 1 &&
		count(recs, record{"service": "shipping", audit.KeyDecision: string(audit.Rejected), audit.KeyID: "pr-99"}) == 1,
		"audited: one rejected record each, with the reason")
	p.check(afterMetrics[kafkamw.OutcomeOrphaned]-beforeMetrics[kafkamw.OutcomeOrphaned] == 2 &&
		afterMetrics[kafkamw.OutcomeDeadLettered]-beforeMetrics[kafkamw.OutcomeDeadLettered] == 2,
		"OpenTelemetry metric %s{group=shipping}: orphaned %d, dead_lettered %d, delivered %d, skipped %d",
		kafkamw.MetricMessages, afterMetrics[kafkamw.OutcomeOrphaned], afterMetrics[kafkamw.OutcomeDeadLettered],
		afterMetrics[kafkamw.OutcomeDelivered], afterMetrics[kafkamw.OutcomeSkipped])
	status, err := json.Marshal(after)
	if err != nil {
		return err
	}
	p.say("status of the baseline consumer (GET %s): %s", sh.shipURL, status)
	return nil
}

// consumerState returns the baseline consumer's status and its metric
// by outcome.
func (sh *shop) consumerState(ctx context.Context) (shipping.Status, map[string]int64, error) {
	st := sh.ship.Status()
	var rm metricdata.ResourceMetrics
	if err := sh.metrics.Collect(ctx, &rm); err != nil {
		return st, nil, err
	}
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			sum, ok := m.Data.(metricdata.Sum[int64])
			if m.Name != kafkamw.MetricMessages || !ok {
				continue
			}
			for _, dp := range sum.DataPoints {
				if g, _ := dp.Attributes.Value(kafkamw.AttrGroup); g.AsString() != st.Group {
					continue
				}
				o, _ := dp.Attributes.Value(kafkamw.AttrOutcome)
				out[o.AsString()] = dp.Value
			}
		}
	}
	return st, out, nil
}

// deadLetters reads the whole dead-letter topic and returns the reason of
// the last message of each sandbox.
func (sh *shop) deadLetters(ctx context.Context) (map[string]string, error) {
	tr := &kafka.Transport{DialTimeout: 5 * time.Second}
	defer tr.CloseIdleConnections()
	cl := &kafka.Client{Addr: kafka.TCP(sh.brokers...), Transport: tr}
	offs, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{deadLetterTopic: {kafka.LastOffsetOf(0)}}})
	if err != nil {
		return nil, err
	}
	end := offs.Topics[deadLetterTopic][0].LastOffset
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: sh.brokers, Topic: deadLetterTopic, Partition: 0, MaxWait: 50 * time.Millisecond})
	defer r.Close()
	rctx, cancel := context.WithTimeout(ctx, cmp.Or(sh.set.patience, 10*time.Second))
	defer cancel()
	out := map[string]string{}
	for n := int64(0); n < end; n++ {
		m, err := r.ReadMessage(rctx)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", deadLetterTopic, err)
		}
		var id, reason string
		for _, h := range m.Headers {
			switch strings.ToLower(h.Key) {
			case "sandbox-id":
				id = string(h.Value)
			case kafkamw.HeaderDeadLetterReason:
				reason = string(h.Value)
			}
		}
		out[id] = reason
	}
	return out, nil
}

// answer is the gateway's answer to a checkout.
type answer struct {
	status      int
	receipt     gateway.Receipt
	body        string
	retryAfter  string
	retryAfters int // how many Retry-After header values the answer had
}

func (a answer) String() string {
	if a.status != http.StatusOK {
		return fmt.Sprintf("→ %d %s", a.status, a.body)
	}
	r := a.receipt
	in := "production"
	if r.Sandbox != "" {
		in = "sandbox " + r.Sandbox
	}
	return fmt.Sprintf("→ 200: order #%d in database %s, %d × %s = $%d.%02d (%s), priced by %s, served as %s",
		r.Order, r.Database, r.Qty, r.Item, r.TotalCents/100, r.TotalCents%100, r.Rule, r.PricedBy, in)
}

// checkout posts a checkout to the gateway with the headers h.
func (sh *shop) checkout(ctx context.Context, h http.Header, item string, qty int) (answer, error) {
	form := url.Values{"item": {item}, "qty": {fmt.Sprint(qty)}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, sh.gatewayURL+"/checkout", strings.NewReader(form.Encode()))
	if err != nil {
		return answer{}, err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := sh.client.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, err
	}
	a := answer{status: resp.StatusCode, body: strings.TrimSpace(string(b)),
		retryAfter: resp.Header.Get("Retry-After"), retryAfters: len(resp.Header.Values("Retry-After"))}
	if a.status == http.StatusOK {
		if err := json.Unmarshal(b, &a.receipt); err != nil {
			return answer{}, fmt.Errorf("gateway answered %q: %w", b, err)
		}
	}
	return a, nil
}

// checkoutPatiently is checkout, waiting out 429s as a polite client
// does: as long as Retry-After says. It returns the answer and how many
// 429s it waited out.
func (sh *shop) checkoutPatiently(ctx context.Context, h http.Header, item string, qty int) (answer, int, error) {
	for waits := range 5 {
		a, err := sh.checkout(ctx, h, item, qty)
		if err != nil || a.status != http.StatusTooManyRequests {
			return a, waits, err
		}
		secs, err := strconv.Atoi(a.retryAfter)
		if err != nil || secs < 1 || secs > 60 {
			return a, waits, fmt.Errorf("429 with Retry-After %q", a.retryAfter)
		}
		select {
		case <-ctx.Done():
			return a, waits, ctx.Err()
		case <-time.After(time.Duration(secs) * time.Second):
		}
	}
	return answer{}, 5, errors.New("still throttled after 5 tries")
}

// post posts body to u with the headers h, and returns the status and body.
func (sh *shop) post(ctx context.Context, u, contentType string, h http.Header, body string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := sh.client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), err
}

// state is what the scenario compares before and after a step: rows in
// each database and the consumers' counters.
type state struct {
	orders, shipments         int64 // in the production database
	testDB                    bool  // pr-42's test database exists
	testOrders, testShipments int64 // in it
	shipped, skipped          int64 // baseline consumer
	shippedPR42               int64 // pr-42's consumer
}

func (sh *shop) state(ctx context.Context) (state, error) {
	s := state{shipped: sh.ship.Shipped(), skipped: sh.ship.Counts().Skipped, shippedPR42: sh.shipPR42.Shipped()}
	var err error
	if s.orders, s.shipments, err = sh.rows(ctx, sh.set.database); err != nil {
		return s, err
	}
	if s.testDB, err = sh.databaseExists(ctx, sh.testDatabase()); err != nil || !s.testDB {
		return s, err
	}
	s.testOrders, s.testShipments, err = sh.rows(ctx, sh.testDatabase())
	return s, err
}

// rows counts the orders and shipments in database.
func (sh *shop) rows(ctx context.Context, database string) (orders, shipments int64, err error) {
	err = sh.query(ctx, database, func(c *pgx.Conn) error {
		return c.QueryRow(ctx, `SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM shipments)`).Scan(&orders, &shipments)
	})
	return orders, shipments, err
}

// order returns priced_by of order id in database, "" when there is none.
func (sh *shop) order(ctx context.Context, database string, id int64) (string, error) {
	var by string
	err := sh.query(ctx, database, func(c *pgx.Conn) error {
		err := c.QueryRow(ctx, `SELECT priced_by FROM orders WHERE id = $1`, id).Scan(&by)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		return err
	})
	return by, err
}

// shippedBy waits until consumer c has shipped want orders in all, and
// returns which consumer shipped order id according to database ("" when
// no one did).
func (p *player) shippedBy(ctx context.Context, c *shipping.Consumer, want int64, database string, id int64) (string, error) {
	if p.sh.waitFor(ctx, func() bool { return c.Shipped() >= want }) != nil {
		p.consumerErrors()
	}
	var by string
	err := p.sh.query(ctx, database, func(conn *pgx.Conn) error {
		err := conn.QueryRow(ctx, `SELECT shipped_by FROM shipments WHERE order_id = $1`, id).Scan(&by)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		return err
	})
	return by, err
}

// consumerErrors prints the last errors of the consumers, to explain a ✗.
func (p *player) consumerErrors() {
	p.say("  (consumers' last errors: %s: %v; %s: %v)", p.sh.ship.Name(), p.sh.ship.Err(), p.sh.shipPR42.Name(), p.sh.shipPR42.Err())
}

// databaseExists reports whether pg_database lists name.
func (sh *shop) databaseExists(ctx context.Context, name string) (bool, error) {
	var ok bool
	err := sh.query(ctx, "", func(c *pgx.Conn) error {
		return c.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&ok)
	})
	return ok, err
}

// query runs f on a connection of its own to database: the checks look at
// the databases directly, not through the router they check.
func (sh *shop) query(ctx context.Context, database string, f func(*pgx.Conn) error) error {
	c, err := sh.connect(ctx, database)
	if err != nil {
		return err
	}
	defer c.Close(context.WithoutCancel(ctx))
	return f(c)
}

// waitFor polls cond until it holds, for at most the patience of the
// settings.
func (sh *shop) waitFor(ctx context.Context, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, cmp.Or(sh.set.patience, 10*time.Second))
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// errText returns err's message, "no error" for nil.
func errText(err error) string {
	if err == nil {
		return "no error"
	}
	return err.Error()
}

// firstOf returns a if it is set, else b.
func firstOf(a, b error) error {
	if a != nil {
		return a
	}
	return b
}
