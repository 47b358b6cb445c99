// Package sqlroute keeps a sandbox's data in its test database for code
// written against database/sql (MySQL and MariaDB through
// github.com/go-sql-driver/mysql, PostgreSQL through pgx's stdlib, and
// whatever is built on *sql.DB: sqlx, sqlc, GORM's SQL layer). It is
// dbroute's twin, with the same vocabulary and the same errors:
//
//   - [Router] has the query methods of *sql.DB (ExecContext,
//     QueryContext, QueryRowContext, BeginTx, Conn, PingContext) and sends
//     each call to the baseline *sql.DB or, when its context carries a
//     sandbox ([propagation.FromContext]), to the sandbox's test database.
//     A sandbox call never reaches the baseline.
//
//   - [Guard] wraps the baseline's driver.Connector so that the baseline
//     *sql.DB refuses sandbox contexts on every statement, begin and
//     prepare, however the connection or transaction was obtained.
//
//   - A sandbox's *sql.DB is guarded the other way round: a Conn, Tx or
//     Stmt the router handed out for one sandbox refuses a statement,
//     begin, prepare or ping whose context is production's or another
//     sandbox's ([ErrForeignContext]), which would otherwise land in that
//     sandbox's test database. No context at all (context.Background() or
//     TODO, which database/sql passes for its methods without one: Tx.Exec,
//     Stmt.Exec...) is the holder's and passes. As for [Guard], Rows read
//     later and the driver's connection reached through sql.Conn.Raw are
//     not checked.
//
//   - A [Provider] says where each sandbox's test database is:
//     [Postgres] adapts any [dbroute.Provider] (dbroute.Static,
//     dbroute.FromTable, the provisioners of dbroute/provision) to pgx's
//     stdlib; [MySQL] reads MySQL connection strings from one
//     (dbroute.FromTable), [StaticMySQL] from a fixed map; provision.MySQLDatabasePerSandbox
//     creates a MySQL/MariaDB database per sandbox.
//
// Put together:
//
//	baseline := sql.OpenDB(sqlroute.Guard(connector))
//	router, err := sqlroute.New(baseline, provider, sqlroute.WithRoutes(table))
//	...
//	router.ExecContext(ctx, "INSERT INTO orders ...") // baseline or the sandbox's test database
//
// A context without a sandbox costs one context lookup and no allocation
// over the bare *sql.DB.
//
// # Errors
//
// The sentinels are dbroute's, classified the same way whether the
// failure arose on first use or later: [dbroute.ErrNoTestDatabase]
// (permanent; refined by [dbroute.ErrNotOwned]), [dbroute.ErrUnavailable]
// (transient; refined by [dbroute.ErrPoolLimit]),
// [dbroute.ErrSandboxOnBaseline] (the guard), [dbroute.ErrClosed]; and
// one of sqlroute's own, [ErrForeignContext] (a sandbox's Conn, Tx or
// Stmt used with another context).
// Errors the server reports about a statement itself are the driver's
// own. A refused QueryRowContext returns a *sql.Row whose Scan and Err
// report the refusal.
//
// # Not the baseline, whatever the spelling
//
// Every new connection of a sandbox's *sql.DB (the first one when the
// router opens it) asks its server what it is (MySQL and MariaDB:
// @@hostname, @@port, @@datadir and the database; PostgreSQL: the system
// identifier, or the postmaster's start time, port and version, and the
// database's OID) before database/sql uses it, and the router compares the
// answer with the baseline's: a test database that is the baseline
// database is refused with [dbroute.ErrNoTestDatabase], whatever host
// name, address, proxy, unix socket, role or session settings (time zone,
// date style) its connection string used, and also when a later connection
// of the same string reaches it (a host list, a pooler's alias repointed).
// The baseline is asked once, on a new connection of the connector inside
// its guard (one connection beyond its pool's, for the time of the
// question), not on a pooled session that a USE may have moved to another
// database (PostgreSQL's fallback, whose answer changes when the server
// restarts, is asked on the pool: no session moves it). Each answer is
// compared with the baseline's answer to the same question: where
// pg_control_system() is revoked for one of the two roles, both are
// compared on the fallback. It costs a round trip per new connection. A
// baseline whose driver wraps one of them (instrumentation such as
// otelsql) is asked the same questions; when the test database answers and
// the baseline does not, the test database is refused, since the two
// cannot be told apart. A test database whose server answers none of them
// is not checked. A MySQL baseline whose connection string names no
// database reaches those its statements name: a test database on its
// server is refused, since it cannot be told apart from production's.
//
// # What a sandbox's SQL names, it reaches
//
// The router picks the connection; it does not read SQL. On MySQL and
// MariaDB a connection reaches every database its user has grants on: a
// sandbox statement that names the baseline's database (ledger.orders),
// or a USE of it — which stays on the pooled connection for the
// sandbox's next statements — reaches production when the test database
// is on the baseline's server and its user is granted on production
// (root, or the admin user of provision.MySQLDatabasePerSandbox, whose
// connection string the sandboxes share). Give test databases a user
// granted on them only (GRANT ALL ON `prefix%`.* for the provisioner);
// the server then refuses those statements
// (TestMySQLSandboxReachesWhatItsUserMay). On PostgreSQL a connection
// reaches one database, but with a schema per sandbox a statement naming
// another schema, or a SET search_path, reaches it if the role may.
//
// # Options
//
// Options are typed by role: [RouterOption] for [New], [GuardOption] for
// [Guard], and [Option] (both) for [WithLogger]. Nil options are skipped.
// A misconfiguration is an error from [New] wrapping [dbroute.ErrConfig],
// naming the option.
//
// # Lifecycle
//
// The router opens a *sql.DB per sandbox on first use (one Open of the
// provider however many requests ask at once), keeps at most
// [WithMaxPools] of them, each with at most [DefaultMaxOpenConns]
// connections unless [WithDBConfig] says otherwise, and closes those
// unused for [WithIdleTimeout]. One in use (a call running, rows, a
// transaction or a Conn open) is never evicted: a request finding every
// slot in use waits until one frees or its context ends
// ([dbroute.ErrPoolLimit]).
//
// # Audit
//
// With [WithLogger], the router emits one audit record (protocol "sql")
// per sandbox *sql.DB opened, one per sandbox request refused, and one
// per later connection of a sandbox's *sql.DB refused (it reached the
// baseline database); the guards (the baseline's, and a sandbox's handles
// refusing other contexts) one per refusal. Statements themselves are not
// logged.
//
// # Concurrency
//
// A [Router], a guarded connector and the providers are safe for
// concurrent use. The zero value of Router is not usable: build it with
// [New].
package sqlroute
