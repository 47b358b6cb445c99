// Package dbroute keeps a sandbox's data in its test database: a pgx v5
// [Router] with the query methods of [*pgxpool.Pool] sends each query to
// the baseline pool, or, when its context carries a sandbox
// ([propagation.FromContext]), to that sandbox's test database — or fails
// with an error of one of the classes below. A sandbox query never
// reaches the baseline.
//
//	router, err := dbroute.New(baseline, provider, dbroute.WithRoutes(table))
//	...
//	router.Exec(ctx, "INSERT INTO orders ...") // baseline or the sandbox's test database
//
// A context without a sandbox costs one context lookup and no allocation.
//
// # The baseline guard
//
// [Guard] makes the baseline pool's configuration refuse sandbox contexts
// twice over: every acquisition from a sandbox context fails (a
// PrepareConn hook), and every statement sent with a sandbox context over
// one of its connections fails before anything is written (a tracer),
// however the connection or transaction was obtained. The errors wrap
// [ErrSandboxOnBaseline]. [Guard] documents exactly what it cannot catch.
//
// # Errors
//
// Every error of a sandbox request is in one class, found with
// [errors.Is] whether it arose on first use or later: [ErrNoTestDatabase]
// (permanent; refined by [ErrNotOwned]), [ErrUnavailable] (transient;
// refined by [ErrPoolLimit]), [ErrSandboxOnBaseline], [ErrClosed]. See
// [ErrNoTestDatabase] for the full classification.
//
// # Not the baseline, whatever the spelling
//
// Every new connection of a sandbox pool asks its server for the cluster's
// system identifier (pg_control_system(), executable by every role unless
// an administrator revoked it; otherwise the postmaster's start time, port
// and version) and the database's OID, and is refused with
// [ErrNoTestDatabase] when they are the baseline's — whatever host name,
// address, host list or socket the connection string used.
//
// # Providers
//
// A [Provider] says where each sandbox's test database is:
//
//   - [Static]: a fixed map from sandbox ID to connection string.
//   - [FromTable]: the Database field of the sandbox's entry in a
//     [routes.Table]; a changed entry reopens the pool.
//   - the provisioners of package dbroute/provision: a database per
//     sandbox cloned from a migrated template, or a schema per sandbox,
//     created on first use, recovered after an interrupted creation, and
//     removed by their Destroy and Reap. Each is a [Reclaimer]: the
//     router closes a sandbox's pool before its test database is removed.
//
// # Options
//
// Options are typed by role: [RouterOption] for [New], [GuardOption] for
// [Guard] and [GuardConn], and [Option] (both) for [WithLogger]. An
// option given to a constructor that cannot use it does not compile (the
// provisioners take provision.ProvisionerOption). Nil options are
// skipped. A misconfiguration is an error from the constructor wrapping
// [ErrConfig], naming the option.
//
// # Lifecycle
//
// The router opens a pool per sandbox on first use (one creation however
// many requests ask at once), keeps at most [WithMaxPools] of them open,
// and closes pools unused for [WithIdleTimeout]. To make room it closes
// the least recently used pool that is not in use (no call of the router
// running on it, none of its connections checked out) and has had its
// turn ([WithPoolTurn]); when there is none, the request waits until its
// context ends and then fails with [ErrPoolLimit], and the pool whose turn
// ended first drains (takes no new call until the calls on it end, a turn
// at most) to make room. A slot that frees up goes to the sandbox that has
// waited longest, one swap at a time; a pool that could not connect to
// its test database (and holds no connection) gives its slot up at once.
// A closed pool is
// reopened on the next request from what the provider returned before,
// without provisioning again (unless its database has disappeared or its
// [Reclaimer] removed it).
//
// # Audit
//
// With [WithLogger], the router emits one audit record (protocol "sql")
// when it opens a sandbox's pool (routed, with the database as target,
// never credentials), one when a request starts to wait for a pool slot
// (throttled), and one when it refuses a sandbox request (rejected, with
// the reason). Queries themselves are not logged. The metric
// [MetricPoolLimit] counts the waits.
//
// # Concurrency
//
// A [Router] and the providers are safe for concurrent use. Their zero
// values are not usable: build them with [New], [Static] and [FromTable]
// (and the provisioners with their constructors in dbroute/provision).
package dbroute
