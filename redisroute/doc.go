// Package redisroute keeps a sandbox's Redis data in the sandbox: with a
// sandbox in the context, commands sent through a go-redis
// (github.com/redis/go-redis/v9) client never read or write production
// keys, and production never sees the sandbox's keys. A command that
// cannot be kept inside the sandbox fails with [ErrRefused]; none is ever
// passed through unisolated.
//
// [New] installs a [Router] on the baseline [*redis.Client] as a go-redis
// hook: commands without a sandbox run as before, and every command,
// pipeline and transaction with a sandbox runs, under the sandbox policy
// below, in the sandbox's own logical database from a range the router
// owns ([Databases]). [Guard] makes a client refuse sandbox contexts
// altogether ([ErrSandboxOnBaseline]). [Router.Destroy] and [Router.Reap]
// flush a sandbox's database when it is torn down.
//
// A Router is safe for concurrent use. Its zero value is not usable: build
// one with New.
//
// # Why a database per sandbox
//
// Two isolations were possible: a key namespace per sandbox (a prefix
// added to every key argument, found through the server's key
// specifications, COMMAND INFO and COMMAND GETKEYS), or a logical
// database per sandbox. This package uses a database per sandbox because
// the server itself then keeps the two apart, for every command that acts
// on keys, whatever its syntax:
//
//   - No command that acts on keys can reach another database, so no key
//     argument has to be found and rewritten. A prefix has to be added to
//     every key argument and removed from every reply that names a key
//     (KEYS, SCAN, RANDOMKEY, BLPOP, XREAD, SORT ... GET patterns, the
//     key names inside stream and sorted-set replies), and a command whose
//     keys the key specifications do not describe exactly would leak.
//   - Patterns (KEYS, SCAN MATCH), RANDOMKEY, DBSIZE and blocking commands
//     see only the sandbox's keys with no rewriting at all.
//   - Teardown is one FLUSHDB of a database that the sandbox owns, instead
//     of a SCAN of the whole production keyspace for a prefix.
//
// What a database per sandbox costs: a server has 16 databases by default
// (the `databases` setting), so a router serves as many sandboxes at a time
// as its range holds; Redis Cluster has one database only, so the router
// takes a [*redis.Client] of a standalone server (or a sentinel-managed
// primary through redis.NewFailoverClient), not a ClusterClient. And what
// databases do not separate is refused: channels (pub/sub), scripts and
// functions (a Lua script may SELECT another database, functions are
// shared by all), and commands that act on the server or on another
// database.
//
// # Ownership
//
// A database belongs to the sandbox whose ID is the value of [MarkerKey]
// in it. On a sandbox's first command the router looks for its database
// in the range, else claims the first empty one: one server-side script
// marks the database only if it is empty, so a claim cut short (a
// connection lost, a crash) never leaves a marker on somebody else's keys.
// A database that holds keys without a marker is somebody's and is never
// claimed. Destroy and Reap flush a database only
// when its marker names a sandbox they remove, checked and flushed in one
// WATCH/MULTI transaction. Sandboxes cannot name the marker key in any
// command (any argument equal to it, key or value, is refused), so they
// cannot free their own database while using it. They do see it: KEYS *,
// SCAN and RANDOMKEY may return it, and DBSIZE counts it.
//
// Destroy and Reap close the sandbox clients of their own router only. A
// router in another process keeps its client of a flushed database until
// it learns otherwise: with [WithRoutes] it refuses a sandbox the table no
// longer holds before using its client; without a table, call Destroy in
// every process (a stale client's writes make the database non-empty and
// unmarked, so no other sandbox is given it until someone flushes it).
// Claims hold the router's lock: while one sandbox's database is being
// claimed (a few round trips), other sandbox commands of the router wait;
// production commands never take the lock.
//
// # Command families
//
// Every command family of the go-redis API is isolated (runs in the
// sandbox's database) or refused ([ErrRefused], nothing sent). A command
// in no family below, and any command the server knows that is not listed
// as isolated, is refused: the policy fails closed.
//
// Isolated:
//
//   - strings: GET, SET, INCR, APPEND, MGET, MSET, GETEX, LCS, ...
//   - bitmaps: SETBIT, GETBIT, BITCOUNT, BITFIELD, BITOP, BITPOS
//   - lists: LPUSH, RPOP, LRANGE, LMOVE, LMPOP, ...
//   - blocking commands: BLPOP, BRPOP, BLMOVE, BLMPOP, BRPOPLPUSH,
//     BZPOPMIN, BZPOPMAX, BZMPOP (a blocked sandbox command waits on the
//     sandbox's keys only)
//   - hashes, including field expiry: HSET, HGETALL, HSCAN, HEXPIRE, ...
//   - sets, sorted sets, streams (XADD, XREAD, XREADGROUP, XGROUP, XINFO,
//     ...), hyperloglog, geo
//   - keys: DEL, EXISTS, EXPIRE, TTL, TYPE, RENAME, DUMP, RESTORE, OBJECT,
//     SORT, SCAN, KEYS, RANDOMKEY, DBSIZE, COPY (to the sandbox's own
//     database only)
//   - pipelines (Pipelined, Pipeline) and transactions: TxPipelined and
//     TxPipeline through the baseline client, and WATCH transactions
//     through [Router.Watch], on one connection to the sandbox's database.
//     A bare WATCH, MULTI, EXEC or DISCARD sent with a sandbox context
//     through the baseline client (client.Watch, Do("multi")) is refused:
//     each routed command may take another connection, so the WATCH would
//     not guard the EXEC. A pipeline with one refused command sends none.
//   - connection: PING, ECHO, and what go-redis sends when it connects
//     (HELLO, AUTH, SELECT of the sandbox's database, CLIENT SETINFO,
//     SETNAME, GETNAME, ID, MAINT_NOTIFICATIONS)
//
// Refused:
//
//   - pub/sub: PUBLISH, SPUBLISH, SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE and
//     their UNSUBSCRIBEs, PUBSUB: channels are shared by every database. A
//     subscription made with a sandbox context fails when it connects
//     (but see below: a PubSub already connected is not covered).
//   - scripting and functions: EVAL, EVAL_RO, EVALSHA, EVALSHA_RO, FCALL,
//     FCALL_RO, SCRIPT, FUNCTION (and redis.Script.Run): a script may
//     SELECT any database, whatever KEYS it declares.
//   - other databases: SELECT of another database, SWAPDB, MOVE, COPY ...
//     DB to another database, MIGRATE, RESET
//   - server: FLUSHDB and FLUSHALL (teardown is [Router.Destroy]'s),
//     CONFIG, INFO, CLIENT (other than the above), ACL, MODULE, DEBUG,
//     MONITOR, SAVE, BGSAVE, SHUTDOWN, REPLICAOF, SLOWLOG, LATENCY, MEMORY,
//     COMMAND, TIME, WAIT, ...
//   - cluster: CLUSTER, READONLY, READWRITE, ASKING
//   - module commands (JSON.*, FT.*, TS.*, BF.*, ...) and anything else
//     not listed: fail closed.
//
// # What it does not cover
//
// A command keeps the context it was built with, and the hooks read it:
// a command built with a sandbox's context and sent with another one is
// refused ([ErrRefused] from the router, [ErrSandboxOnBaseline] from the
// guard), and the production commands beside it still run. This covers
// the batches of an AutoPipeliner (client.AutoPipeline and
// AsyncAutoPipeline, which send each batch with context.Background()), a
// pipeline Exec'd with another context than its commands were built with
// (a whole MULTI/EXEC fails), a command given to Process with another
// context, and a command of sandbox A in sandbox B's pipeline. What it
// does not cover: an AutoPipeliner in full-duplex mode
// (AutoPipelineOptions.FullDuplex with the deferred face) writes a
// command before any hook runs, so no hook can stop it; do not use one
// with sandbox contexts.
//
// A [redis.PubSub] already connected (subscribed with a production
// context) sends later Subscribe, PSubscribe and Ping calls on its
// connection without any hook: a sandbox context given to them is not
// seen, and the sandbox subscribes to production's channels. Open a
// sandbox's subscriptions with its own context (they are refused).
//
// client.WithTimeout returns a clone without the client's hooks (go-redis
// 9.23 builds the clone's hooks afresh, and the hooks that would see each
// command's context on the shared pool are internal to go-redis): neither
// the router nor the guard applies to it, and a sandbox command sent
// through it, FLUSHDB included, runs on the baseline's database. Send sandbox traffic through the client given to
// [New] or [Guard], and set timeouts with a context deadline instead.
//
// Hooks added to the baseline client before [New] run for sandbox
// commands too (they see the command, then the router sends it to the
// sandbox); hooks added after it run for production commands only. The
// sandbox clients have the baseline client's options (address, TLS,
// credentials, timeouts, pool size) on their own database, and no hook
// but the policy. A [redis.Conn] from client.Conn() routes each sandbox
// command on its own, so connection state (CLIENT SETNAME) does not carry
// over between them. Commands sent with a context that lost its sandbox (a
// goroutine started with context.Background()) are production commands.
//
// # Cost
//
// A command without a sandbox costs two context lookups in the router's
// or the guard's hook (the call's context and the command's own, found
// by its type in a map): about 14 ns a command and 21 ns a pipeline of
// two, on a loaded 2-core machine, and no allocation (BenchmarkHookCost,
// TestBaselineHooksDoNotAllocate).
//
// # Audit
//
// With [WithLogger], the router writes one audit record (package
// github.com/sandboxkit/sandboxkit/audit, protocol redis) when a sandbox's
// database is opened (routed, target "db N"), and one for each refused
// command (rejected, reason the error); the guard one for each refusal.
package redisroute
