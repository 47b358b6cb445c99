package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
	otelprop "go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sandboxkit/sandboxkit/breaker"
	"github.com/sandboxkit/sandboxkit/dbroute"
	"github.com/sandboxkit/sandboxkit/dbroute/provision"
	"github.com/sandboxkit/sandboxkit/dbroute/sqlroute"
	"github.com/sandboxkit/sandboxkit/examples/shop/cart"
	"github.com/sandboxkit/sandboxkit/examples/shop/gateway"
	"github.com/sandboxkit/sandboxkit/examples/shop/orders"
	"github.com/sandboxkit/sandboxkit/examples/shop/shipping"
	"github.com/sandboxkit/sandboxkit/grpcmw"
	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/internal/kafkatest"
	"github.com/sandboxkit/sandboxkit/kafkamw"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/redisroute"
	"github.com/sandboxkit/sandboxkit/routes"
)

// settings say where the shop keeps its data.
type settings struct {
	// databaseURL points at a maintenance database ("postgres") of a
	// server where the role may create databases.
	databaseURL string
	// run is the random ID of this run, which names its databases (see
	// newSettings).
	run string
	// database is the shop's production database, created at start and
	// dropped at the end.
	database string
	// prefix starts the names of the sandboxes' test databases, in
	// PostgreSQL and in MariaDB.
	prefix string
	// mysqlDSN is a go-sql-driver/mysql connection string of a MariaDB
	// (or MySQL) server whose user may create databases: the ledger's.
	mysqlDSN string
	// redisAddr is the address of the Redis server of the price cache.
	redisAddr string
	// noGuard leaves the guards off the production handles (dbroute.Guard
	// on the pool, sqlroute.Guard on the ledger's *sql.DB, redisroute.Guard
	// on the cache clients): the tests use it to see the guard step fail
	// without them.
	noGuard bool
	// leakyStores gives orders the production ledger *sql.DB and a Redis
	// client without redisroute, as a service that was never made
	// sandbox-aware: the tests use it to see the store checks fail.
	leakyStores bool
	// keepDatabases leaves the run's databases when the shop closes: the
	// tests look at them afterwards, then drop them.
	keepDatabases bool
	// auditTee, when set, also receives the audit log as text.
	auditTee io.Writer
	// patience bounds each wait for asynchronous work (default 10s).
	patience time.Duration
	// gatewayOptions are added to the gateway's options: the tests weaken
	// the edge with them to see the checks fail.
	gatewayOptions []httpmw.HandlerOption
}

// The sandbox of the demo: pull request 42 changes cart's pricing and runs
// its own shipping consumer. Its budget at the gateway is 3 requests at
// at once and one every 2 seconds after that.
const (
	pr42ID     = "pr-42"
	pr42Actor  = "alice"
	pr42Origin = "github.com/acme/shop/pull/42"
	pr42Rate   = 0.5 // requests per second: one every 2s
	pr42Burst  = 3
)

// pr42Refill is the time pr-42's budget takes to earn one more request.
const pr42Refill = time.Duration(float64(time.Second) / pr42Rate)

// deadLetterTopic receives the order-placed events no consumer can or may
// process.
const deadLetterTopic = orders.Topic + ".dead-letter"

// pr42 returns the sandbox pr-42 as requests carry it.
func pr42() propagation.Sandbox {
	return propagation.Sandbox{ID: pr42ID, Actor: pr42Actor, Origin: pr42Origin}
}

// errNoDatabase reports that PostgreSQL cannot be reached.
var errNoDatabase = errors.New("cannot connect to PostgreSQL")

// shop is the five services (gateway, cart, orders, shipping, reports)
// running in this process, and what the scenario needs to look at their
// state.
type shop struct {
	set settings

	gatewayURL, ordersURL string
	gatewayGRPC           string // the gateway's gRPC edge
	reportsURL            string // the buggy service of the guard step
	cartAddr, cartPR42    string
	shipURL, shipPR42URL  string
	brokers               []string

	table      *routes.Table
	baseline   *pgxpool.Pool // the production pool, guarded
	db         *dbroute.Router
	testDBs    *provision.DatabasePerSandbox
	lockConn   *pgx.Conn // holds the run lock, and killedRuns' locks until dropKilledRuns
	killedRuns []string  // runs lockRun found killed, their locks taken

	mysqlAdmin    *sql.DB                            // MariaDB, no database: the checks' and cleanup's
	ledgerBase    *sql.DB                            // the production ledger database, guarded
	ledger        *sqlroute.Router                   // orders' ledger: production or the sandbox's
	ledgerDBs     *provision.MySQLDatabasePerSandbox // sandboxes' ledger databases
	prices        *redis.Client                      // orders' price cache, routed by priceRouter
	priceRouter   *redisroute.Router                 // routes prices' sandbox commands to redisDB
	redisDB       int                                // the Redis database the run leases for its sandboxes
	reportsPrices *redis.Client                      // reports' client of the production cache, guarded
	redisAdmin    *redis.Client                      // the checks' client: no hooks
	cartRouter    *grpcmw.Router
	ship          *shipping.Consumer // baseline consumer
	shipPR42      *shipping.Consumer // pr-42's own consumer
	stopPR42      func()             // stops pr-42's consumer
	signer        *propagation.Signer
	clock         budgetClock // the gateway budgets' clock
	audit         *auditLog
	metrics       *sdkmetric.ManualReader // the consumers' OpenTelemetry metrics
	meters        *sdkmetric.MeterProvider
	events        *kafkamw.Writer // orders' writer of order-placed events
	client        *http.Client    // the scenario's own client

	closers []func() // run in reverse order by close
}

// start builds and starts the shop. On error it has stopped what it had
// started.
func start(ctx context.Context, set settings) (_ *shop, err error) {
	sh := &shop{set: set, audit: newAuditLog(set.auditTee)}
	defer func() {
		if err != nil {
			sh.close()
		}
	}()
	if err := sh.startDatabases(ctx); err != nil {
		return nil, err
	}
	if err := sh.startStores(ctx); err != nil {
		return nil, err
	}
	if err := sh.startServices(ctx); err != nil {
		return nil, err
	}
	return sh, nil
}

// close stops everything, last started first.
func (sh *shop) close() {
	for _, f := range slices.Backward(sh.closers) {
		f()
	}
	sh.closers = nil
}

func (sh *shop) onClose(f func()) { sh.closers = append(sh.closers, f) }

// startDatabases checks that PostgreSQL answers, (re)creates the
// production tables and sets up the database router with a test database
// per sandbox.
func (sh *shop) startDatabases(ctx context.Context) error {
	admin, err := sh.connect(ctx, "")
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("connecting to PostgreSQL: %w", context.Cause(ctx)) // Ctrl-C, not a missing server
	}
	if err != nil {
		return fmt.Errorf("%w at %s (%v): start a server that lets this role create databases, for example "+
			"`docker run --rm -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust postgres`, "+
			"or set DATABASE_URL to one", errNoDatabase, redact(sh.set.databaseURL), oneLine(err))
	}
	defer admin.Close(context.Background())
	if err := sh.lockRun(ctx, admin); err != nil {
		return err
	}
	// From here on, closing the shop drops the run's databases (after the
	// pools, registered later, are closed): even when CREATE DATABASE
	// fails, which it may do after the server made the database (Ctrl-C
	// during it cancels the client's wait, not the server's commit).
	sh.onClose(func() {
		if sh.set.keepDatabases {
			return
		}
		if err := sh.dropDatabases(); err != nil {
			fmt.Fprintf(os.Stderr, "shop: dropping the databases of run %s: %v\n", sh.set.run, err)
		}
	})
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{sh.set.database}.Sanitize()); err != nil {
		return fmt.Errorf("creating the production database: %w", err)
	}
	prod, err := sh.connect(ctx, sh.set.database)
	if err != nil {
		return err
	}
	defer prod.Close(context.Background())
	if err := createTables(ctx, prod); err != nil {
		return err
	}

	// The production pool refuses sandbox contexts outright (Guard); the
	// router sends them to their test database instead.
	cfg, err := pgxpool.ParseConfig(sh.set.databaseURL)
	if err != nil {
		return err
	}
	cfg.ConnConfig.Database = sh.set.database
	if !sh.set.noGuard {
		dbroute.Guard(cfg, dbroute.WithLogger(sh.audit.logger("orders-db")))
	}
	baseline, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return err
	}
	sh.onClose(baseline.Close)
	sh.baseline = baseline

	// Test databases are cloned from a template the migration builds.
	sh.testDBs, err = provision.NewDatabasePerSandbox(sh.set.databaseURL, provision.Migration{
		Version: "shop-1",
		Apply:   func(ctx context.Context, tx pgx.Tx) error { return createTables(ctx, tx) },
	}, provision.WithPrefix(sh.set.prefix))
	if err != nil {
		return err
	}
	sh.table = routes.New()
	sh.db, err = dbroute.New(baseline, sh.testDBs, // the router owns testDBs now
		dbroute.WithRoutes(sh.table), dbroute.WithLogger(sh.audit.logger("dbroute")))
	if err != nil {
		sh.testDBs.Close()
		return err
	}
	sh.onClose(sh.db.Close)
	return nil
}

// createTables creates the tables of orders and shipping.
func createTables(ctx context.Context, db interface {
	Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
}) error {
	for _, ddl := range []string{orders.Schema, shipping.Schema} {
		if _, err := db.Exec(ctx, ddl); err != nil {
			return err
		}
	}
	return nil
}

// startServices starts Kafka, the two carts, the two shipping consumers,
// orders and the gateway, and fills the route table.
func (sh *shop) startServices(ctx context.Context) error {
	// Kafka: the embedded broker (or SANDBOXKIT_TEST_KAFKA_BROKERS).
	brokers, stopBroker, err := kafkatest.NewBroker()
	if err != nil {
		return err
	}
	sh.onClose(stopBroker)
	sh.brokers = brokers
	for _, topic := range []string{orders.Topic, deadLetterTopic} {
		if err := kafkatest.CreateTopic(ctx, brokers, topic, 1); err != nil {
			return err
		}
	}
	// The consumers' metrics, read by the scenario (a service would
	// export them with an OTLP or Prometheus reader instead).
	sh.metrics = sdkmetric.NewManualReader()
	sh.meters = sdkmetric.NewMeterProvider(sdkmetric.WithReader(sh.metrics))
	sh.onClose(func() { sh.meters.Shutdown(context.Background()) })
	// The dead-letter topic: messages no consumer can or may process
	// (orphaned, unreadable, or failing for their sandbox's own reasons).
	dlTransport := &kafka.Transport{DialTimeout: 5 * time.Second, IdleTimeout: 5 * time.Second}
	deadLetters := &kafka.Writer{
		Addr: kafka.TCP(brokers...), Topic: deadLetterTopic, BatchTimeout: 2 * time.Millisecond,
		RequiredAcks: kafka.RequireAll, Transport: dlTransport,
	}
	sh.onClose(func() { deadLetters.Close(); dlTransport.CloseIdleConnections() })

	// cart: the baseline and pr-42's changed version, side by side.
	// Internal hops trust each other: the gateway is the edge that filters.
	if sh.cartAddr, err = sh.serveGRPC(cart.NewServer("cart", cart.ListPrice,
		grpcmw.TrustAll(), grpcmw.WithLogger(sh.audit.logger("cart")))); err != nil {
		return err
	}
	if sh.cartPR42, err = sh.serveGRPC(cart.NewServer("cart@pr-42", cart.BulkDiscount,
		grpcmw.TrustAll(), grpcmw.WithLogger(sh.audit.logger("cart@pr-42")))); err != nil {
		return err
	}

	// shipping: each consumer answers its counters over HTTP; that address
	// is pr-42's shipping "upstream" in the route table.
	shipLn, err := listen()
	if err != nil {
		return err
	}
	shipPR42Ln, err := listen()
	if err != nil {
		shipLn.Close()
		return err
	}
	sh.shipURL, sh.shipPR42URL = "http://"+shipLn.Addr().String(), "http://"+shipPR42Ln.Addr().String()

	// The route table: pr-42 overrides cart and shipping, has a budget,
	// and expires in two hours. Its writes go to its test database.
	if err := sh.table.Update([]routes.Sandbox{{
		ID: pr42ID, Actor: pr42Actor, Origin: pr42Origin,
		Expires: time.Now().Add(2 * time.Hour),
		Budget:  &routes.Budget{Rate: pr42Rate, Burst: pr42Burst},
		Services: map[string]routes.Route{
			"cart":     {Upstream: sh.cartPR42},
			"shipping": {Upstream: sh.shipPR42URL},
		},
	}}); err != nil {
		shipLn.Close()
		shipPR42Ln.Close()
		return err
	}

	var stop func()
	if sh.ship, stop, err = sh.startConsumer(ctx, "shipping", shipLn, kafkamw.WithDeadLetter(deadLetters)); err != nil {
		shipPR42Ln.Close()
		return err
	}
	sh.onClose(stop)
	if sh.shipPR42, stop, err = sh.startConsumer(ctx, "shipping@pr-42", shipPR42Ln, kafkamw.AsSandbox(pr42ID), kafkamw.WithDeadLetter(deadLetters)); err != nil {
		return err
	}
	var once sync.Once
	sh.stopPR42 = func() { once.Do(stop) }
	sh.onClose(sh.stopPR42)

	// orders: writes through the database router, publishes through the
	// sandbox-aware Kafka writer.
	kt := &kafka.Transport{DialTimeout: 5 * time.Second, IdleTimeout: 5 * time.Second}
	events, err := kafkamw.NewWriter(&kafka.Writer{
		Addr:         kafka.TCP(brokers...),
		Topic:        orders.Topic,
		BatchTimeout: 2 * time.Millisecond, // kafka-go waits up to 1s for a batch by default
		RequiredAcks: kafka.RequireAll,
		Transport:    kt,
	})
	if err != nil {
		return err
	}
	sh.onClose(func() { events.Close(); kt.CloseIdleConnections() })
	sh.events = events
	ledger, err := sh.ledgerHandle()
	if err != nil {
		return err
	}
	ordersHandler, err := orders.NewHandler(orders.Stores{
		Orders: sh.db, Ledger: ledger, Prices: sh.pricesHandle(), PricePrefix: pricePrefix(sh.set.run),
	}, events, httpmw.TrustAll(), httpmw.WithLogger(sh.audit.logger("orders")))
	if err != nil {
		return err
	}
	if sh.ordersURL, err = sh.serveHTTP(ordersHandler); err != nil {
		return err
	}

	// gateway: calls cart through a router that picks the sandbox's cart
	// or the baseline, and orders through a transport that carries the
	// sandbox along; admits sandboxes only with a ticket, and budgets them.
	gwLog := sh.audit.logger("gateway")
	creds := grpc.WithTransportCredentials(insecure.NewCredentials())
	cartConn, err := grpc.NewClient(sh.cartAddr, creds)
	if err != nil {
		return err
	}
	sh.onClose(func() { cartConn.Close() })
	if sh.cartRouter, err = grpcmw.NewRouter(cartConn, sh.table, "cart",
		grpcmw.WithDialOptions(creds), grpcmw.WithLogger(gwLog)); err != nil {
		return err
	}
	sh.onClose(func() { sh.cartRouter.Close() })
	ordersBase := &http.Transport{MaxIdleConnsPerHost: 16}
	sh.onClose(ordersBase.CloseIdleConnections)
	toOrders, err := httpmw.NewRoutingTransport(ordersBase, sh.table, "orders", httpmw.WithLogger(gwLog))
	if err != nil {
		return err
	}
	ordersClient := orders.NewClient(sh.ordersURL, &http.Client{Timeout: 10 * time.Second, Transport: toOrders})
	key := propagation.Key{ID: "shop", Secret: []byte(rand.Text() + rand.Text())} // fresh every run
	if sh.signer, err = propagation.NewSigner(key); err != nil {
		return err
	}
	verifier, err := propagation.NewVerifier(key)
	if err != nil {
		return err
	}
	budgets := breaker.NewGroup(breaker.Settings{
		Name:   "gateway",
		Budget: breaker.Budget{Rate: 50, Burst: 50, MaxInFlight: 20}, // any sandbox; pr-42's table entry lowers it
	}, breaker.WithRoutes(sh.table), breaker.WithLogger(gwLog), breaker.WithClock(sh.clock.now))
	gwOpts := append([]httpmw.HandlerOption{httpmw.WithBreaker(budgets), httpmw.WithLogger(gwLog)}, sh.set.gatewayOptions...)
	gw, err := gateway.New(verifier, cart.NewClient(sh.cartRouter), ordersClient, gwOpts...)
	if err != nil {
		return err
	}
	if sh.gatewayURL, err = sh.serveHTTP(gw); err != nil {
		return err
	}
	// The gRPC edge takes its calls from the same budgets: a sandbox has
	// one budget at the gateway, whichever protocol its loop runs on.
	if sh.gatewayGRPC, err = sh.serveGRPC(gateway.NewGRPC(verifier, cart.NewClient(sh.cartRouter),
		grpcmw.WithLogger(gwLog), grpcmw.WithBreaker(budgets))); err != nil {
		return err
	}
	// reports: a service with a bug that only dbroute.Guard catches.
	reports, err := newReports(sh.baseline, sh.ledgerBase, sh.reportsPrices, pricePrefix(sh.set.run), httpmw.TrustAll(), httpmw.WithLogger(sh.audit.logger("reports")))
	if err != nil {
		return err
	}
	if sh.reportsURL, err = sh.serveHTTP(reports); err != nil {
		return err
	}

	clientTransport := &http.Transport{MaxIdleConnsPerHost: 16}
	sh.client = &http.Client{Transport: clientTransport, Timeout: 15 * time.Second}
	sh.onClose(clientTransport.CloseIdleConnections)
	return nil
}

// startConsumer starts a shipping consumer named name, serving its
// counters on ln. opts make it a sandbox's consumer. It returns a function
// that stops it.
func (sh *shop) startConsumer(ctx context.Context, name string, ln net.Listener, opts ...kafkamw.ReaderOption) (*shipping.Consumer, func(), error) {
	r, err := kafkamw.NewReader(kafka.ReaderConfig{
		Brokers: sh.brokers,
		Topic:   orders.Topic,
		GroupID: "shipping", // a sandbox's reader derives its own group from it
		// Demo timings: kafka-go's defaults are seconds.
		MaxWait:           50 * time.Millisecond,
		ReadBatchTimeout:  time.Second,
		HeartbeatInterval: 100 * time.Millisecond,
		SessionTimeout:    2 * time.Second,
		RebalanceTimeout:  2 * time.Second,
		JoinGroupBackoff:  50 * time.Millisecond,
		ReadBackoffMin:    10 * time.Millisecond,
		ReadBackoffMax:    100 * time.Millisecond,
		StartOffset:       kafka.FirstOffset,
	}, sh.table, "shipping", append([]kafkamw.ReaderOption{
		kafkamw.WithLogger(sh.audit.logger(name)), kafkamw.WithMeterProvider(sh.meters),
	}, opts...)...)
	if err != nil {
		ln.Close()
		return nil, nil, err
	}
	c := shipping.NewConsumer(name, r, sh.db)
	srv := &http.Server{Handler: c, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)

	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { c.Run(ctx) })
	stop := func() {
		cancel()
		wg.Wait()
		r.Close()
		srv.Close()
	}
	return c, stop, nil
}

// serveGRPC serves s, as a constructor returned it with err, on a loopback
// port and returns its address.
func (sh *shop) serveGRPC(s *grpc.Server, err error) (string, error) {
	if err != nil {
		return "", err
	}
	ln, err := listen()
	if err != nil {
		return "", err
	}
	go s.Serve(ln)
	sh.onClose(s.Stop)
	return ln.Addr().String(), nil
}

// serveHTTP serves h on a loopback port and returns its URL.
func (sh *shop) serveHTTP(h http.Handler) (string, error) {
	ln, err := listen()
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	sh.onClose(func() { srv.Close() })
	return "http://" + ln.Addr().String(), nil
}

func listen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }

// connect opens a connection to database on the server ("" for the
// maintenance database of the URL itself).
func (sh *shop) connect(ctx context.Context, database string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(sh.set.databaseURL)
	if err != nil {
		return nil, err
	}
	if database != "" {
		cfg.Database = database
	}
	if cfg.ConnectTimeout == 0 || cfg.ConnectTimeout > 5*time.Second {
		cfg.ConnectTimeout = 5 * time.Second
	}
	return pgx.ConnectConfig(ctx, cfg)
}

// testDatabase returns the name of pr-42's test database.
func (sh *shop) testDatabase() string {
	name, _ := sh.testDBs.Name(pr42ID)
	return name
}

// ticketHeader returns the headers a developer sends to reach pr-42:
// the sandbox's markers and a ticket valid for ttl.
func (sh *shop) ticketHeader(ttl time.Duration) (http.Header, error) {
	ticket, err := sh.signer.Sign(pr42(), ttl)
	if err != nil {
		return nil, err
	}
	h := propagation.Default().HTTPHeader(pr42())
	propagation.Default().InjectTicket(ticket, otelprop.HeaderCarrier(h))
	return h, nil
}

// redact hides the password of a database URL.
func redact(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.Scheme != "" {
		return u.Redacted()
	}
	return dsn
}

// withDatabase returns the database URL dsn pointing at database instead.
func withDatabase(dsn, database string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme == "" {
		return dsn + " dbname=" + database
	}
	u.Path = "/" + database
	return u.String()
}

// oneLine returns the distinct lines of err's message on one line.
func oneLine(err error) string {
	var parts []string
	for l := range strings.Lines(err.Error()) {
		if l = strings.Join(strings.Fields(l), " "); l != "" && !slices.Contains(parts, l) {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, " ")
}
