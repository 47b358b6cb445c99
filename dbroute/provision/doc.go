// Package provision creates, recovers and removes the test databases of
// sandboxes, for a [dbroute.Router]: the provisioning half of dbroute,
// whose routing half (the router, the guard, static providers) is package
// dbroute.
//
//	provider, err := provision.NewDatabasePerSandbox(adminDSN, provision.Migration{Version: "7", Apply: migrate})
//	...
//	router, err := dbroute.New(baseline, provider, dbroute.WithRoutes(table))
//	...
//	dropped, err := provider.Reap(ctx, table) // now and then
//
// # Provisioners
//
//   - [DatabasePerSandbox]: a database per sandbox, cloned with CREATE
//     DATABASE ... TEMPLATE from a template database that the user's
//     [Migration] builds once and that is rebuilt when its version changes.
//   - [SchemaPerSandbox]: one test database, a schema per sandbox created
//     by the [Migration], pools with search_path set to it.
//
// Each is a [dbroute.Provider] and a [dbroute.Reclaimer], built on one
// skeleton: the names, the ownership markers, the recoverable steps of a
// creation (create marked as ours, mark, finish), listing
// ([DatabasePerSandbox.Provisioned]), Destroy (DROP DATABASE ... WITH
// (FORCE), or DROP SCHEMA ... CASCADE) and Reap (the objects of sandboxes
// that expired or left the route table, after a grace,
// [WithReapGrace]). Before either removes a sandbox's test database, the
// router that uses the provisioner closes the sandbox's pool. What is
// particular to a kind of object is small: how to lock a name, read an
// object's state, create, mark, finish, drop and list.
//
// Errors are dbroute's: [dbroute.ErrNoTestDatabase] (refined by
// [dbroute.ErrNotOwned]) and [dbroute.ErrUnavailable] from Open;
// [dbroute.ErrConfig] from the constructors.
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
// Every object the provisioners create carries a marker comment naming the
// sandbox and the creation time. Only an object whose name starts with the
// prefix and whose comment is exactly the marker for that name is the
// library's: it never uses, lists or drops anything else. A database of
// the right name without the marker yields [dbroute.ErrNotOwned].
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
// LIMIT -1), and Destroy and Reap drop it. Nobody can
// connect to it meanwhile. The template is built the same way. Every step
// runs under an advisory lock of the name, so a creation in progress
// elsewhere is never mistaken for an abandoned one. Once built, the
// template is closed to connections (ALLOW_CONNECTIONS false), so no
// session on it can make the clones fail. Schemas need none of
// this: [SchemaPerSandbox] creates, marks and migrates each in one
// transaction.
//
// A DROP DATABASE cut short (Destroy or Reap interrupted) leaves, on
// PostgreSQL 15.4 and later, an invalid database that only DROP works on:
// the next request for the sandbox finishes the drop, if the database
// carries the sandbox's marker, and creates a fresh one.
//
// # Options
//
// The constructors take options of type [ProvisionerOption] ([WithPrefix],
// [WithReapGrace]); the options of a router are of another type and do not
// compile here. Nil options are skipped.
//
// # Concurrency
//
// The provisioners are safe for concurrent use, across processes too
// (advisory locks on the server). Their zero values are not usable: build
// them with [NewDatabasePerSandbox] and [NewSchemaPerSandbox].
package provision
