// Package routes holds the route table: which sandboxes exist (ID, actor,
// origin, expiry, test database, budget overrides) and which services each
// one overrides, with the upstream address of the sandboxed version.
//
// Every other package reads it: httpmw and grpcmw to choose an upstream,
// kafkamw to decide who consumes a message, dbroute to know which sandboxes
// exist.
//
// # Reading
//
// [Table.Lookup] is the hot path: allocation-free, and safe while the table
// is being updated (each update swaps in a new immutable snapshot). A
// sandbox past its expiry drops out of lookups by itself.
//
// An update costs what it changes: snapshots share the parts an update
// leaves alone, and sandboxes equal to the ones the table holds are
// neither validated again nor copied, so one changed sandbox in a table of
// 100,000 is a fraction of a millisecond with [Table.Put].
//
// # Activation windows
//
// Each route records when it became active and, once removed, when it was
// removed; a removed route stays as a tombstone for a grace period
// ([WithTombstoneGrace]). Kafka consumers decide which reader owns a message
// by comparing its timestamp with that window ([Table.ActiveAt]), so two
// processes that see an update at different moments still agree. For that
// to hold across processes the times must come from the source: give
// activeFrom (and, to remove a route, removedAt) in the document. A route
// without activeFrom is active from the moment this table first saw it; a
// route that disappears without removedAt is removed at the moment this
// table noticed.
//
// # Sources
//
// A table is filled by hand ([Table.Update] with the whole list, or
// [Table.Put] and [Table.Remove] for a few sandboxes) or kept in sync with a
// [Source] by [Table.Sync]: [File] (a JSON file, re-read when it changes,
// also when it is a Kubernetes ConfigMap volume whose ..data link the
// kubelet swaps) or [HTTP] (an endpoint polled with conditional requests,
// ETag and Last-Modified). Sync polls with jitter ([Jitter]) so a fleet
// does not poll in lockstep, bounds every fetch ([FetchTimeout]), and backs
// off after failures. A source that fails or hangs keeps the last good
// table, and [Table.Err] reports why, since when, and when the source last
// answered; a document with an invalid entry is rejected whole with an
// error naming the entry.
//
// A source that pushes its changes (an etcd watch: the nested module
// github.com/sandboxkit/sandboxkit/routes/etcdroutes) applies them with
// [Table.Put] and [Table.Remove] and reports what it proved with
// [Table.MarkSynced] and [Table.MarkFailed].
//
// # Synced means synced
//
// [Table.SyncedAt] is the time up to which the table is known to reflect
// its source: the start of its last good load. It never runs ahead of what
// the source proved: before the first good load it is the zero time, and
// while the source fails it stays at the last good load. Decisions about
// past moments (a Kafka message's timestamp) wait for it with
// [Table.WaitSynced] rather than guess from an empty or stale table. A
// table filled only by hand ([NewStatic], [Table.Update]) is its own
// source and is always synced up to now; a table from [New] not yet filled
// nor given a source is synced up to nothing.
//
// # JSON format
//
//	{
//	  "sandboxes": [
//	    {
//	      "id": "pr-42",
//	      "actor": "alice",
//	      "origin": "github.com/acme/shop/pull/42",
//	      "expires": "2030-12-01T18:00:00Z",
//	      "database": "postgres://test@db-test:5432/shop_pr_42",
//	      "budget": {"rate": 50, "burst": 10, "maxInFlight": 20},
//	      "services": {
//	        "cart": "http://10.0.3.7:8080",
//	        "orders": {"upstream": "10.0.3.8:9090", "activeFrom": "2026-11-27T09:00:00Z"},
//	        "shipping": {"upstream": "10.0.3.9:9090", "activeFrom": "2026-11-27T09:00:00Z",
//	                     "removedAt": "2026-11-27T11:30:00Z"}
//	      }
//	    }
//	  ]
//	}
//
// The same document, with a consumer-only route, is testdata/example.json in
// this package's source. Only "sandboxes" and each sandbox's id are
// required. A service maps to its upstream, either a string or an object
// with upstream, activeFrom and removedAt (RFC 3339). Upstreams are
// "http://host:port", "https://host:port" or "host:port" (gRPC), the
// host a host name, an IPv4 address or a bracketed IPv6 address (with
// its zone, escaped as %25 in a URL), the port in digits
// ([ValidateUpstream]); an empty upstream marks a service whose sandbox
// runs only Kafka consumers.
//
// Documents are read strictly ([ParseDocument]): a repeated key at any
// depth, a repeated sandbox id or service name, a key that is not a field
// (also one that differs from a field only in case, which encoding/json
// would accept), null anywhere, or anything after the document rejects the
// whole document, with the JSON path in the error:
//
//	routes: invalid route table: $.sandboxes[3].id: duplicate key
//
// # Concurrency
//
// A [Table] is safe for concurrent use; its zero value is not usable, build
// it with [New].
package routes
