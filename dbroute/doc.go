// Package dbroute keeps a sandbox's data in its test database: a pgx v5
// [Router] with the query methods of [*pgxpool.Pool] sends each query to
// the baseline pool, or, when its context carries a sandbox
// ([propagation.FromContext]), to that sandbox's test database — or fails
// with [ErrNoTestDatabase]. A sandbox query never reaches the baseline.
//
//	router, err := dbroute.New(baseline, provider, dbroute.WithTable(table))
//	...
//	router.Exec(ctx, "INSERT INTO orders ...") // baseline or the sandbox's test database
//
// A context without a sandbox costs one context lookup and no allocation.
//
// # The baseline guard
//
// [Guard] installs a PrepareConn hook on the baseline pool's
// [pgxpool.Config] that refuses every acquisition from a sandbox context
// with [ErrSandboxOnBaseline], so code that bypasses the router (a library
// holding the raw pool) cannot touch production data from a sandbox
// request either.
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
// # Lifecycle
//
// The router opens a pool per sandbox on first use (one creation however
// many requests ask at once), keeps at most [WithMaxPools] of them open
// (closing the least recently used first), and closes pools unused for
// [WithIdleTimeout]. A closed pool is reopened on the next request.
//
// # Audit
//
// With [WithLogger], the router emits one audit record (protocol "sql")
// when it opens a sandbox's pool (routed, with the database as target,
// never credentials) and one when it refuses a sandbox request (rejected,
// with the reason). Queries themselves are not logged.
//
// # Concurrency
//
// A [Router] and the providers are safe for concurrent use. Their zero
// values are not usable: build them with [New], [Static], [FromTable],
// [NewDatabasePerSandbox] and [NewSchemaPerSandbox].
package dbroute
