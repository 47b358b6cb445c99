// Package dbroute keeps a sandbox's data in its test database: a pgx v5
// [Router] with the query methods of [*pgxpool.Pool] sends each query to
// the baseline pool, or, when its context carries a sandbox
// ([propagation.FromContext]), to that sandbox's test database — or fails
// with an error of one of the classes below. A sandbox query never
// reaches the baseline.
//
//	router, err := dbroute.New(baseline, provider, dbroute.WithTable(table))
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
//   - [DatabasePerSandbox]: a database per sandbox, cloned with CREATE
//     DATABASE ... TEMPLATE from a template database that the user's
//     [Migration] builds once and that is rebuilt when its version changes.
//   - [SchemaPerSandbox]: one test database, a schema per sandbox created
//     by the [Migration], pools with search_path set to it.
//
// The last two implement [Reclaimer]: [Router.Destroy] drops a sandbox's
// database (DROP DATABASE ... WITH (FORCE)) or schema, and [Router.Reap]
// drops those of sandboxes that expired or left the route table.
//
// # Names and ownership
//
// A sandbox's database or schema is named by the prefix ([WithPrefix],
// default "sbx_") followed by its ID with '-' replaced by '_' (so "pr-42"
// becomes "sbx_pr_42"). IDs are lower-case letters, digits and '-', so this
// is one-to-one. When the result would not fit PostgreSQL's 63-byte
// identifiers (the server would silently cut it), the name is instead
// exactly 63 bytes: the prefix, the start of the ID, '_' and 16 hex digits
// of the ID's SHA-256. Short names are at most 62 bytes, so the two forms
// never meet. The template database is prefix + "_template", which no
// sandbox name can be.
//
// Every object the providers create carries a marker comment naming the
// sandbox and the creation time. Only an object whose name starts with the
// prefix and whose comment is exactly the marker for that name is the
// library's: it never uses, lists or drops anything else. A database of
// the right name without the marker yields [ErrNotOwned].
//
// # Interrupted creations
//
// CREATE DATABASE cannot share a transaction with the COMMENT that marks
// the database, so [DatabasePerSandbox] creates it with a mark that
// commits with it: ALLOW_CONNECTIONS false and CONNECTION LIMIT 5813. A
// database of the sandbox's name with that mark and no comment (or its
// marker comment) is one whose creation was interrupted — the connection
// dropped, the process died — between steps: the next request finishes it
// (comment, then ALTER DATABASE ... ALLOW_CONNECTIONS true CONNECTION
// LIMIT -1), and [Router.Destroy] and [Router.Reap] drop it. Nobody can
// connect to it meanwhile. The template is built the same way. Every step
// runs under an advisory lock of the name, so a creation in progress
// elsewhere is never mistaken for an abandoned one. Once built, the
// template is closed to connections (ALLOW_CONNECTIONS false), so no
// session on it can make the clones fail. Schemas need none of
// this: [SchemaPerSandbox] creates, marks and migrates each in one
// transaction.
//
// # Lifecycle
//
// The router opens a pool per sandbox on first use (one creation however
// many requests ask at once), keeps at most [WithMaxPools] of them open,
// and closes pools unused for [WithIdleTimeout]. To make room it closes
// the least recently used pool that is not in use (no call of the router
// running on it, none of its connections checked out) and has had its
// turn ([WithPoolTurn]); when there is none, the request waits until its
// context ends and then fails with [ErrPoolLimit]. A closed pool is
// reopened on the next request from what the provider returned before,
// without provisioning again (unless its database has disappeared).
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
// values are not usable: build them with [New], [Static], [FromTable],
// [NewDatabasePerSandbox] and [NewSchemaPerSandbox].
package dbroute
