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
// every process. Until then the stale client's connections still write to
// the flushed database: writes that land before any claim make it
// non-empty and unmarked, so no other sandbox is given it until someone
// flushes it; but a router that claims the emptied database for another
// sandbox first shares it with the stale client's open connections (its
// new connections are refused, below), as in
// TestFlushedDatabaseTakenByAnotherRouterIsLeft. Destroy a sandbox only
// once no process sends its commands.
//
// A database can also lose its marker under a live sandbox: a server
// restarted without its data, or a FLUSHALL or FLUSHDB sent by a client
// the router does not route. Two checks keep a second sandbox out of it.
// A claim never gives away a database that a client of the same router
// uses, and marks it again for its sandbox when it finds it empty
// (TestEmptiedDatabaseOfALiveSandboxIsNotGivenAway), or drops that client
// when another sandbox's marker, or keys without a marker, are there
// (TestFlushedDatabaseTakenByAnotherRouterIsLeft). And each new
// connection of a sandbox's client first runs the claim script for its
// sandbox (one round trip a connection, none a command): it marks the
// database again if it is empty, and if the database is marked by another
// sandbox, or holds keys without a marker, the connection fails with
// [ErrNoSandboxDatabase] and the client is dropped, so the sandbox's next
// command claims a database anew (TestRestartWithoutDataDoesNotShareADatabase:
// after a restart, another process's router had given the emptied database
// to its own sandbox, and the first sandbox reconnected into it). A
// connection opened before the data was lost is not checked again: after a
// FLUSHALL that cuts no connection, a router in another process may claim
// the emptied database before this one's next new connection or claim.
// While Destroy runs for a sandbox, the sandbox's commands fail with
// [ErrNoSandboxDatabase]: one given a client then would find its database
// still marked and write after the flush
// (TestSandboxCommandDuringDestroyIsNotRoutedToTheFlushedDatabase).
//
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
//     (but see below: a PubSub already connected is not covered, nor
//     ps.Channel() on a PubSub whose subscription was refused).
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
// # Production stays out of the range
//
// The databases of the router's range are the sandboxes', and no other
// client of the server may use one: a client the router does not route
// (another service's, a guarded one, another process's baseline on
// another database) is invisible to it, and an empty database of the
// range reads as free, so the next sandbox claims it and shares it with
// that client. (New refuses only a range that holds its own baseline's
// database.) Give every service on the server the same range, outside
// all of their databases. A production
// command (no sandbox in its context) sent through the routed client that
// would reach them fails with [ErrProductionIntoSandboxes], nothing sent:
// SELECT, MOVE, COPY ... DB and SWAPDB of a database in the range (or of
// one whose number does not read as a number), MIGRATE to a database
// numbered as one of the range, on any host (the router cannot tell which
// address is this server's, and a MIGRATE to the server itself restores
// the key in that database: TestProductionMigrateKeptOutOfTheRange),
// FLUSHALL (it would flush
// the sandboxes' databases, and a database freed while its sandbox still
// writes to it can be claimed by a second sandbox), and RESET when
// database 0 is in the range. Production Lua scripts may still SELECT
// any database; the router's own connections, and clients it does not
// route, are not checked.
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
// context, and a command of sandbox A in sandbox B's pipeline. A command
// of the caller's type is read the same way, however it holds its go-redis
// command: embedded by value or by pointer, behind wrappers of wrappers
// at any depth, or through an embedded interface that implements
// redis.Cmder (a decorator of any command); before, the last two read as
// production's, and such a sandbox SET batched by an AutoPipeliner ran in
// production (TestWrappedCommandContextRead,
// TestInterfaceWrappedCommandContextRead).
//
// Full-duplex AutoPipeliners are kept off the client, and WithTimeout
// clones have a routed counterpart:
//
//   - An AutoPipeliner in full-duplex mode (AutoPipelineOptions.FullDuplex,
//     either face) writes each command to its held connection first and
//     runs the hooks afterwards, on a goroutine of its own
//     (autopipeline_fullduplex.go: fdEngine.submit queues the write, then
//     starts hostHook; "a hook cannot cancel a full-duplex command", as
//     AutoPipeliner.AddHook says). Nothing consults a hook or the context
//     before that write. So [New] and [Guard] refuse ([ErrConfig]) a client
//     whose Options.AutoPipelineOptions sets FullDuplex, or whose cached
//     AutoPipeliner was built full duplex before them; and they build the
//     client's two cached AutoPipeliners (client.AutoPipeline and
//     client.AsyncAutoPipeline) at once, with the client's own options:
//     go-redis caches one instance a face and the first config wins
//     (redis.go: Client.AutoPipelineWithOptions -> autopipeline.go:
//     getOrCreateAutoPipeliner returns the cached instance, whatever config
//     is passed), so a later AutoPipelineWithOptions or
//     AsyncAutoPipelineWithOptions asking for FullDuplex gets the pinned
//     half-duplex instance, whose batches the hooks gate
//     (TestFullDuplexPinnedAway). The price: custom AutoPipeliner options
//     must be set in Options.AutoPipelineOptions (a later
//     AutoPipelineWithOptions gets the pinned instance, whatever it asks),
//     and each client keeps two idle flusher goroutines and about 48 KB of
//     heap until it is closed, with go-redis's default options. Larger
//     AutoPipelineOptions are paid at New or Guard, even by a client that
//     never autopipelines: go-redis gives each face NumShards flushers, and
//     preallocates queues of MaxBatchSize commands (16 bytes each) for 8
//     stripes a shard where it stripes (the blocking face, or Unordered):
//     NumShards 64, Unordered and MaxBatchSize 100000 is 130 goroutines
//     and 1.6 GB of (untouched) heap a client, measured by HeapAlloc with
//     RSS up 4 MB. A client built with PipelinePoolSize < 0 cannot run
//     full duplex at all.
//   - client.WithTimeout returns a clone with no hooks at all, whenever it
//     is taken: redis.go's baseClient.withTimeout builds the clone's
//     baseClient with baseClient.clone, a new struct that does not copy the
//     embedded hooksMixin, so Client.init's initHooks finds no hook state
//     to keep (no go-redis issue reports it; redis/go-redis#3267 was the
//     same bug for Conn). [Router.WithTimeout] returns a clone with the
//     router's hook (and pinned AutoPipeliners); a guarded client's clone
//     is guarded with Guard(client.WithTimeout(d)) (TestRouterWithTimeout).
//     It keeps one clone per timeout, and refuses ([ErrConfig]) a timeout
//     past [MaxTimeoutClones] distinct ones, since each clone's pinned
//     AutoPipeliners live until the baseline closes
//     (TestWithTimeoutClonesAreBounded).
//
// What is still not covered, because no hook sees it in time; the tests
// named pin each one, so a go-redis upgrade that changes them fails a test:
//
//   - A full-duplex AutoPipeliner built after the pinned instance of its
//     face was closed (ap.Close() on the instance client.AutoPipeline
//     returns, then AutoPipelineWithOptions with FullDuplex):
//     getOrCreateAutoPipeliner builds a new one once the cached one is
//     closed, and nothing tells the router. The hooks find each sandbox command after
//     it ran in production, fail it with [ErrLeaked], clear its reply
//     (production's data), audit it, and never run it again in the sandbox
//     (TestFullDuplexLeakIsCaught). A sandbox command that opens the
//     engine's session on a fresh connection is not sent: the engine
//     initialises the connection with that command's context, and the hooks
//     refuse that (TestFullDuplexSessionOpenedBySandbox). Commands go-redis
//     diverts off the full-duplex stream (Do, blocking commands) run
//     through the hooks first and are routed as usual.
//   - A [redis.PubSub] already connected (with a production context) writes
//     later Subscribe, PSubscribe, SSubscribe and Ping calls straight to
//     its connection (pubsub.go: subscribe -> conn returns the open c.cn ->
//     _subscribe -> writeCmd -> internal/pool Conn.WithWriter, which reads
//     nothing of the context but its deadline), with no hook, no callback
//     and no dial on the way: a sandbox context given to them is not seen,
//     and the sandbox subscribes to production's channels
//     (TestConnectedPubSubIsNotSeen). Only connecting runs hooks (the dial
//     hook, and HELLO, AUTH, SELECT on the new connection, with the context
//     of the call that connects): a PubSub that is not connected yet dials
//     with the sandbox's context and is refused, but a production call that
//     reconnects a lost connection subscribes again to every channel the
//     PubSub holds, the sandbox's included (pubsub.go: reconnect -> conn ->
//     resubscribe). A PubSub is go-redis's own type, built by
//     Client.Subscribe, which connects only when given channels: the
//     router cannot wrap it. Nor does a PubSub of the sandbox's own,
//     used with its context only, stay refused: Client.Subscribe,
//     PSubscribe and SSubscribe drop the refusal of their first dial
//     (redis.go: `_ = pubsub.Subscribe(ctx, channels...)`), the PubSub
//     keeps the channels whatever the error (pubsub.go: Subscribe), and
//     its Channel(), ChannelSize and ChannelWithSubscriptions receive
//     with context.TODO() and ping and reconnect with
//     context.Background() (pubsub.go: initMsgChan, initHealthCheck): the
//     next dial carries no sandbox, passes, and subscribes to every
//     channel the PubSub holds, so the sandbox's range loop over
//     ps.Channel() receives production's messages
//     (TestRefusedSubscriptionIsMadeByChannel). Nothing on that path
//     carries the sandbox. Do not subscribe with a sandbox's context:
//     such a call is refused only as long as every later call on the
//     PubSub is given the sandbox's context too (Receive, ReceiveMessage,
//     ReceiveTimeout), never Channel().
//   - client.WithTimeout itself (rather than [Router.WithTimeout]): nothing
//     on its clone's path sees the context. Its commands take the shared
//     pool's connections (internal/pool ConnPool.Get: go-redis's own pool
//     hooks only, which no public API lets a user define), dial with
//     context.Background() (ConnPool.queuedNewConn), ask
//     Options.Limiter.Allow() with no context, and write through
//     Conn.WithWriter, which reads only the context's deadline. Neither the
//     router nor the guard applies to it: a sandbox command sent through it,
//     FLUSHDB included, runs on the baseline's database
//     (TestWithTimeoutCloneHasNoHooks). Nor can the shared pool tell the
//     clone's production commands (legitimate) from its sandbox ones, so it
//     cannot refuse them either. So does any client built from the
//     baseline's options (redis.NewClient(client.Options()),
//     TestCopiesOfTheOptions). Send sandbox traffic through the client
//     given to [New] or [Guard] (or its Conn, pipelines, AutoPipelines and
//     [Router.WithTimeout]), and set timeouts with a context deadline.
//
// What the server itself shares between databases is not the router's to
// separate: with keyspace notifications on (the notify-keyspace-events
// setting, off by default), a sandbox's writes publish its key names on
// __keyspace@N__ and __keyevent@N__ channels, which a production
// subscriber to a pattern such as __key*@*__:* receives; and production's
// MONITOR, INFO keyspace and CLIENT LIST show the sandboxes' commands,
// key counts and connections.
//
// Hooks added to the baseline client before [New] run for sandbox
// commands too (they see the command, then the router sends it to the
// sandbox); hooks added after it run for production commands only. The
// sandbox clients have the baseline client's options (address, TLS,
// credentials, timeouts, pool size, OnConnect, which runs under the
// sandbox policy in the sandbox's database) on their own database, and no
// hook but the policy; the router's own connections (claims, flushes) run
// no OnConnect. A [redis.Conn] from client.Conn() (or EphemeralConn(),
// or the *redis.Tx of client.Watch) routes each sandbox command on its
// own, so connection state (CLIENT SETNAME) does not carry over between
// them. Unlike a WithTimeout clone, a Conn has the client's hooks, but
// those of the moment it was taken (go-redis newConn clones them): one
// taken before [New] or [Guard] has neither (TestConnTakenBeforeNew).
// Commands built and sent with a context that lost its sandbox (a
// goroutine started with context.Background()) are production commands.
//
// The policy checks the bytes that are written: before it reads a
// sandbox command, it gives the command its own copy of its arguments
// (go-redis keeps the slice a caller gives Do and reads it again when it
// writes: TestArgumentSliceCannotChangeAfterTheCheck; one allocation a
// sandbox command), and replaces in it each *string argument by
// its string, each pointer to a number, bool or time by its value
// (go-redis reads pointers again when it writes), each
// encoding.BinaryMarshaler by its bytes (what go-redis would write), and
// each []byte or net.IP that could read as a name, the marker or a
// database number by a copy of its bytes, which the caller still holds
// (TestByteArgumentsCannotChangeAfterTheCheck), so an
// argument that reads one way to the policy and another to the writer
// (SELECT of the sandbox's database, then of production's, through a *int
// another goroutine changes) cannot move a sandbox connection. The
// router's production check does the same with a command name that is not
// a string, and with the arguments of SELECT, SWAPDB, MOVE and COPY, in a
// copy of the argument slice that it gives the command (one allocation
// for these commands, none for the others), so a production connection
// cannot be moved into the range that way either
// (TestPointerArgumentsCannotChangeAfterTheCheck,
// TestProductionArgumentsCannotChangeAfterTheCheck). It does not copy the
// arguments of other production commands (an allocation a command): a
// production caller that rewrites the name in its own slice given to Do
// ("echo" checked, "select" written), or overwrites its command object,
// after the check is not stopped, nor a production command of a type with
// its own Args method that answers differently to the writer: only
// copying every production command would, an allocation a command. A sandbox command of
// the caller's type whose Args method is its own, not that of the go-redis
// command it embeds, is refused: go-redis calls it again when it writes
// (TestOwnArgsMethodRefused). Nor does the caller's command object itself
// reach the writer: the policy checks, and go-redis writes, a private copy
// of the go-redis command (one allocation a sandbox command), and its
// reply is copied back into the caller's, so a caller that overwrites its
// command (*cmd = *other) between the check and the write changes nothing
// that is written. A sandbox command of the caller's type that holds its
// go-redis command through a pointer or an interface (a wrapper, which
// could swap it after the check: the copy would share it) is refused;
// send the go-redis command itself (TestSwappedCommandCannotPassTheCheck).
// MULTI, EXEC and DISCARD outside a transaction's pipeline, and WATCH and
// UNWATCH inside a pipeline, are refused by the policy too, on the copy,
// whatever the router read of the caller's command. A command built with
// another sandbox's context is refused inside [Router.Watch] too.
//
// # Cost
//
// A command without a sandbox costs two context lookups in the router's
// or the guard's hook (the call's context and the command's own, found
// by its type in a map): about 18 ns a command and 23 ns a pipeline of
// two through the router, 17 and 19 ns through the guard, on a quiet
// 2-core machine, and no allocation (BenchmarkHookCost,
// TestBaselineHooksDoNotAllocate); a production SELECT, SWAPDB, MOVE or
// COPY pays one in the router, for its own copy of its arguments. The router's check that production
// stays out of its range (below) adds about 25 instructions a command
// (callgrind: 206 to 231 for the routed hook alone, 382 to 422 for a
// pipeline of two). A sandbox command pays, besides its
// routing, a walk of its goroutine's stack to find out whether it runs on
// a full-duplex engine (see above): 0.3 to 0.6 us and no allocation once
// each call site has been seen, 1 to 3 percent of a routed SET's round
// trip on loopback on a loaded 2-core machine (BenchmarkSandboxPath).
// Production commands never pay it. A sandbox command also pays the
// policy's private copy of it (see below): a routed SET 10 allocations
// and 569 bytes instead of 9 and 468 (BenchmarkSandboxPath/routed-set,
// scripts/bench-ab.sh 359fcbb 93fa7b4 ./redisroute).
//
// # Audit
//
// With [WithLogger], the router writes one audit record (package
// github.com/sandboxkit/sandboxkit/audit, protocol redis) when a sandbox's
// database is opened (routed, target "db N"), and one for each refused
// command (rejected, reason the error); the guard one for each refusal.
package redisroute
