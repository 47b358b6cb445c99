package redisroute

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	pub "github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/internal/audit"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// Databases is the range of logical databases, First to Last inclusive,
// that a [Router] hands out to sandboxes, one each. It must not hold the
// baseline client's database, and every database in it must exist on the
// server (16 by default: 0 to 15, the `databases` setting).
type Databases struct {
	First, Last int
}

// Router isolates the sandbox commands of a baseline [*redis.Client] in a
// logical database per sandbox. It is safe for concurrent use.
type Router struct {
	baseline *redis.Client
	dbs      Databases
	cfg      config
	admin    *redis.Client // claims, flushes: SELECTs before every use

	mu      sync.RWMutex
	clients map[string]*sandboxClient
	closed  bool
	// destroying counts the Destroy calls under way for each sandbox: its
	// commands are refused until they return.
	destroying map[string]int

	timeoutsMu sync.Mutex
	timeouts   map[time.Duration]*redis.Client // Router.WithTimeout's clones
}

// sandboxClient is one sandbox's client: the baseline's options on the
// sandbox's database, with the sandbox policy as its only hook.
type sandboxClient struct {
	id     string
	db     int
	client *redis.Client
}

// New installs the router on baseline, a client of a standalone server
// (not a cluster: a cluster has one database): from then on, every command,
// pipeline and transaction sent through baseline with a sandbox in its
// context runs in that sandbox's database from dbs, under the sandbox
// policy (see the package doc), and commands without a sandbox run as
// before. The router does not own baseline; [Router.Close] closes the
// sandbox clients only.
//
// A sandbox's database is claimed on its first command (see [MarkerKey])
// and kept until [Router.Destroy] or [Router.Reap] flushes it.
//
// Errors wrap [ErrConfig]: a nil baseline, an empty or negative range, a
// range that holds the baseline's database, a nil option value, a baseline
// whose Options.AutoPipelineOptions sets FullDuplex or whose cached
// AutoPipeliner runs full duplex, a closed baseline (see the package doc,
// "What it does not cover").
//
// New builds the baseline's two cached AutoPipeliners (client.AutoPipeline,
// client.AsyncAutoPipeline) with the baseline's own options, in half-duplex
// mode: go-redis keeps the first, so a later AutoPipelineWithOptions asking
// for FullDuplex, whose writes no hook could stop, gets them instead. Set
// custom AutoPipeliner options in Options.AutoPipelineOptions.
func New(baseline *redis.Client, dbs Databases, opts ...RouterOption) (*Router, error) {
	if baseline == nil {
		return nil, fmt.Errorf("%w: redisroute: New: nil baseline client", ErrConfig)
	}
	if dbs.First < 0 || dbs.Last < dbs.First {
		return nil, fmt.Errorf("%w: redisroute: New: databases %d to %d: not a range", ErrConfig, dbs.First, dbs.Last)
	}
	if b := baseline.Options().DB; b >= dbs.First && b <= dbs.Last {
		return nil, fmt.Errorf("%w: redisroute: New: databases %d to %d hold the baseline's database %d", ErrConfig, dbs.First, dbs.Last, b)
	}
	cfg := newRouterConfig(opts)
	if cfg.err != nil {
		return nil, cfg.err
	}
	if baseCmdType == nil {
		return nil, errCommandContexts("New")
	}
	if fullDuplexConfigured(baseline.Options()) {
		return nil, errFullDuplex("New")
	}
	if err := pinHalfDuplex(baseline, "New"); err != nil {
		return nil, err
	}
	adminOpts := clientOptions(baseline, dbs.First)
	adminOpts.PoolSize = 2
	// The baseline's OnConnect would run on the admin's connections in
	// whatever database they start in, before any SELECT: a write there
	// lands in a sandbox's database, or leaves a free one unmarked and
	// non-empty, never to be claimed again.
	adminOpts.OnConnect = nil
	r := &Router{
		baseline: baseline,
		dbs:      dbs,
		cfg:      cfg,
		admin:    redis.NewClient(adminOpts),
		clients:  make(map[string]*sandboxClient),
	}
	baseline.AddHook(routeHook{r})
	return r, nil
}

// routeHook sends sandbox traffic of the baseline client to the sandbox's
// client.
type routeHook struct{ r *Router }

// DialHook refuses a new baseline connection for a sandbox context: only a
// pub/sub subscription dials with its caller's context (the pool dials
// with its own), and channels are shared by every database.
func (h routeHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if s, ok := propagation.FromContext(ctx); ok {
			return nil, h.r.refuse(ctx, s, fmt.Errorf("%w: pub/sub: channels are shared by every database of the server", ErrRefused))
		}
		return next(ctx, network, addr)
	}
}

func (h routeHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		s, ok := propagation.FromContext(ctx)
		if !ok {
			if cs, ok := cmdSandbox(cmd); ok {
				fd, err := fullDuplex(ctx, cmd, cs.ID, next)
				if !fd {
					err = mixedErr(cmd.Name(), cs)
				}
				err = h.r.refuse(ctx, cs, err)
				cmd.SetErr(err)
				return err
			}
			if args := cmd.Args(); mayReachRange(args) {
				if err := h.r.intoRangeArgs(cmd, args); err != nil {
					cmd.SetErr(err)
					return err
				}
			}
			return next(ctx, cmd)
		}
		// A full-duplex AutoPipeliner has written the command already (or
		// its engine is about to): routing it now would run it twice.
		if fd, err := fullDuplex(ctx, cmd, s.ID, next); fd {
			err = h.r.refuse(ctx, s, err)
			cmd.SetErr(err)
			return err
		}
		if err := h.r.foreign(ctx, s, cmd); err != nil {
			cmd.SetErr(err)
			return err
		}
		// By the name go-redis writes (cmd.Name() is "" for a name given
		// as an encoding.BinaryMarshaler).
		switch sandboxWireName(cmd) {
		case "watch", "unwatch", "multi", "exec", "discard":
			// Each routed command may take another connection: a bare
			// WATCH or MULTI would lose its meaning.
			err := h.r.refuse(ctx, s, fmt.Errorf("%w: %s: use Router.Watch, TxPipelined or TxPipeline for a sandbox's transactions", ErrRefused, cmd.Name()))
			cmd.SetErr(err)
			return err
		}
		sc, err := h.r.sandbox(ctx, s)
		if err != nil {
			cmd.SetErr(err)
			return err
		}
		return sc.client.Process(ctx, cmd)
	}
}

func (h routeHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		s, ok := propagation.FromContext(ctx)
		if !ok {
			// An AutoPipeliner's batch, or a pipeline Exec'd with another
			// context than its commands were built with.
			for _, cmd := range cmds {
				args := cmd.Args()
				if !mayReachRange(args) {
					continue
				}
				if err := h.r.intoRangeArgs(cmd, args); err != nil {
					for _, c := range cmds {
						c.SetErr(err)
					}
					return err
				}
			}
			prod := splitProduction(cmds, func(cs propagation.Sandbox) error {
				return h.r.refuse(ctx, cs, mixedErr("pipeline", cs))
			})
			if len(prod) == len(cmds) {
				return next(ctx, cmds)
			}
			if len(prod) == 0 {
				return cmds[0].Err()
			}
			return next(ctx, prod)
		}
		err := h.routePipeline(ctx, s, cmds)
		if err != nil {
			for _, c := range cmds {
				if c.Err() == nil {
					c.SetErr(err)
				}
			}
		}
		return err
	}
}

func (h routeHook) routePipeline(ctx context.Context, s propagation.Sandbox, cmds []redis.Cmder) error {
	if len(cmds) > 0 && fullDuplexPlace() != fdNone {
		// A full-duplex engine initialising its held connection with the
		// context of the sandbox command that started its session.
		return h.r.refuse(ctx, s, fmt.Errorf("%w: sandbox %q: pipeline sent by a full-duplex AutoPipeliner's engine (AutoPipelineOptions.FullDuplex), whose writes no hook can stop: do not use one with sandbox contexts", ErrRefused, s.ID))
	}
	for _, cmd := range cmds {
		if err := h.r.foreign(ctx, s, cmd); err != nil {
			return err
		}
	}
	sc, err := h.r.sandbox(ctx, s)
	if err != nil {
		return err
	}
	tx := isTx(cmds)
	inner := cmds
	if tx {
		inner = cmds[1 : len(cmds)-1]
	}
	for _, cmd := range inner {
		switch sandboxWireName(cmd) {
		case "watch", "unwatch", "multi", "exec", "discard":
			return h.r.refuse(ctx, s, fmt.Errorf("%w: %s in a pipeline: use Router.Watch, TxPipelined or TxPipeline for a sandbox's transactions", ErrRefused, cmd.Name()))
		}
	}
	var pipe redis.Pipeliner
	if tx {
		pipe = sc.client.TxPipeline()
	} else {
		pipe = sc.client.Pipeline()
	}
	for _, cmd := range inner {
		_ = pipe.Process(ctx, cmd) // queues cmd; Exec fills it in
	}
	_, err = pipe.Exec(ctx)
	return err
}

// sandboxWireName is wireName for a sandbox command, whose name the router
// reads before the sandbox policy: a name that is not a string (a
// marshaler that answered "get" here and "multi" to the policy and the
// writer) is frozen first, in the command's own copy of its arguments, so
// the router, the policy and the writer read the same name.
func sandboxWireName(cmd redis.Cmder) string {
	if args := cmd.Args(); len(args) > 0 {
		if _, ok := args[0].(string); !ok {
			own, _ := ownArgs(cmd) // the policy refuses a command it cannot own
			if err := freeze(own[:1], true); err != nil {
				return "" // the policy refuses it
			}
		}
	}
	return wireName(cmd)
}

// mayReachRange is the first test of [Router.intoRangeArgs], small enough
// to inline into the hooks: a command whose name is a string of a length
// none of the refused names has (MOVE, COPY, RESET, SELECT, SWAPDB,
// FLUSHALL: 4 to 8 bytes; of 7, MIGRATE only, told by its first letter)
// cannot reach the range, so the commands production usually sends pay a
// type assertion and a length test, and no call.
func mayReachRange(args []any) bool {
	if len(args) == 0 {
		return false
	}
	name, ok := args[0].(string)
	return !ok || len(name) >= 4 && len(name) <= 8 && (len(name) != 7 || name[0]|0x20 == 'm')
}

// intoRangeArgs refuses a production command that would reach the databases
// of the router's range, where production would see (or move, or flush)
// sandboxes' keys: SELECT, MOVE, MIGRATE, COPY ... DB and SWAPDB of a
// database in the range, FLUSHALL, and RESET when database 0 is in the
// range. The hooks call it only when [mayReachRange] reports true. Lua
// scripts, which may SELECT any database, are not checked.
func (r *Router) intoRangeArgs(cmd redis.Cmder, args []any) error {
	_, named := args[0].(string)
	if !named || readsDatabases(args[0].(string)) {
		// go-redis keeps the caller's argument slice (Do(ctx, args...))
		// and reads it, and the bytes of a []byte, again when it writes:
		// check a copy of them that the command owns. (One allocation, for
		// these rare commands only.)
		own, ok := ownArgs(cmd)
		if !ok {
			return fmt.Errorf("%w: a command of type %T, whose Args are not those of the go-redis command it holds: go-redis reads them again when it writes, so the check could differ from what is written", ErrProductionIntoSandboxes, cmd)
		}
		args = own
	}
	if !named {
		// go-redis reads the name again when it writes it: read it once.
		if err := freeze(args[:1], true); err != nil {
			return fmt.Errorf("%w: command name: %w", ErrProductionIntoSandboxes, err)
		}
	}
	name := arg(args, 0)
	dbs := r.dbs
	// Read the database numbers go-redis will write, not a first reading of
	// a *int, a []byte or a marshaler that may change before the write.
	unreadable := false
	if readsDatabases(name) {
		unreadable = freeze(args, true) != nil
	}
	in := func(i int) bool {
		if i >= len(args) {
			return false
		}
		n, err := strconv.Atoi(arg(args, i))
		return unreadable || err != nil || (n >= dbs.First && n <= dbs.Last) // unreadable: fail closed
	}
	var what string
	switch {
	case strings.EqualFold(name, "select") && in(1):
		what = "SELECT of a sandbox's database"
	case strings.EqualFold(name, "swapdb") && (in(1) || in(2)):
		what = "SWAPDB with a sandbox's database"
	case strings.EqualFold(name, "move") && in(2):
		what = "MOVE to a sandbox's database"
	case strings.EqualFold(name, "migrate") && in(4):
		// To any host: the router cannot tell which address is this
		// server's (MIGRATE to itself restores the key in that database).
		what = "MIGRATE to a database numbered as a sandbox's (to any host)"
	case strings.EqualFold(name, "copy"):
		for i := 3; i < len(args); i++ {
			if strings.EqualFold(arg(args, i), "db") && in(i+1) {
				what = "COPY to a sandbox's database"
			}
		}
	case strings.EqualFold(name, "flushall"):
		what = "FLUSHALL: it would flush the sandboxes' databases, and free them while in use"
	case strings.EqualFold(name, "reset") && dbs.First == 0:
		what = "RESET: it selects database 0, a sandbox's"
	}
	if what == "" {
		return nil
	}
	return fmt.Errorf("%w: %s (databases %d to %d are the router's)", ErrProductionIntoSandboxes, what, dbs.First, dbs.Last)
}

// readsDatabases reports whether name is that of a command whose arguments
// intoRangeArgs reads as database numbers: SELECT, SWAPDB, MOVE, COPY,
// MIGRATE.
func readsDatabases(name string) bool {
	switch len(name) {
	case 4:
		return strings.EqualFold(name, "move") || strings.EqualFold(name, "copy")
	case 6:
		return strings.EqualFold(name, "select") || strings.EqualFold(name, "swapdb")
	case 7:
		return strings.EqualFold(name, "migrate")
	}
	return false
}

// foreign refuses cmd, sent with sandbox s's context, when it was built
// with another sandbox's context.
func (r *Router) foreign(ctx context.Context, s propagation.Sandbox, cmd redis.Cmder) error {
	if cs, ok := cmdSandbox(cmd); ok && cs.ID != s.ID {
		return r.refuse(ctx, s, fmt.Errorf("%w: %s: built with sandbox %q's context, sent with sandbox %q's", ErrRefused, cmd.Name(), cs.ID, s.ID))
	}
	return nil
}

// mixedErr is the error of a command built with sandbox s's context and
// sent with a production one.
func mixedErr(what string, s propagation.Sandbox) error {
	return fmt.Errorf("%w: %s: built with sandbox %q's context, sent with a production one (an AutoPipeliner's batch, or a pipeline Exec'd with another context): send a sandbox's commands with its context through the client itself", ErrRefused, what, s.ID)
}

// sandbox returns the client of s, claiming a database for it on first
// use.
func (r *Router) sandbox(ctx context.Context, s propagation.Sandbox) (*sandboxClient, error) {
	if err := propagation.ValidateID(s.ID); err != nil {
		// The empty ID above all: a database without a marker reads as
		// owned by "", so find would hand it somebody else's data.
		return nil, r.refuse(ctx, s, fmt.Errorf("%w: %w", ErrNoSandboxDatabase, err))
	}
	if t := r.cfg.table; t != nil {
		if _, ok := t.Sandbox(s.ID); !ok {
			if t.SyncedAt().IsZero() {
				return nil, r.refuse(ctx, s, fmt.Errorf("%w: sandbox %q: %w (%s)", ErrNoSandboxDatabase, s.ID, ErrNotSynced, pub.ReasonNotSynced))
			}
			return nil, r.refuse(ctx, s, fmt.Errorf("%w: sandbox %q is not in the route table", ErrNoSandboxDatabase, s.ID))
		}
	}
	r.mu.RLock()
	sc, closed := r.clients[s.ID], r.closed
	r.mu.RUnlock()
	if closed {
		return nil, ErrClosed
	}
	if sc != nil {
		return sc, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, ErrClosed
	}
	if sc := r.clients[s.ID]; sc != nil {
		return sc, nil
	}
	if r.destroying[s.ID] > 0 {
		// Its database still reads as its own until Destroy flushes it:
		// a client of it now would write, after the flush, into a
		// database no marker keeps anyone else out of.
		return nil, r.refuse(ctx, s, fmt.Errorf("%w: sandbox %q is being destroyed (Router.Destroy): its commands are refused until Destroy returns", ErrNoSandboxDatabase, s.ID))
	}
	// Claims are rare (once per sandbox and process) and short: holding
	// the lock keeps two claims of one sandbox from racing in-process.
	db, err := r.claim(context.WithoutCancel(ctx), s.ID)
	if err != nil {
		return nil, r.refuse(ctx, s, err)
	}
	sc = &sandboxClient{id: s.ID, db: db}
	opts := clientOptions(r.baseline, db)
	opts.OnConnect = r.stillOwned(sc, opts.OnConnect)
	sc.client = redis.NewClient(opts)
	sc.client.AddHook(policyHook{r: r, db: db, id: s.ID})
	r.clients[s.ID] = sc
	if r.cfg.logger != nil {
		audit.Emit(ctx, r.cfg.logger, audit.Event{
			Decision: audit.Routed,
			Sandbox:  s,
			Protocol: audit.Redis,
			Target:   "db " + strconv.Itoa(db),
			Reason:   "sandbox database " + strconv.Itoa(db),
		})
	}
	return sc, nil
}

// ownerCheck is the context key under which a sandbox client's own
// connection check (stillOwned) runs the claim script past the sandbox
// policy; its value is the sandbox's ID. No caller can build the key.
type ownerCheck struct{}

// stillOwned is the OnConnect of sc's client: before each new connection
// serves the sandbox, it checks that sc's database is still the sandbox's
// (claimScript: marked by it, or empty and marked again), then runs the
// baseline's own OnConnect, if any. A server restarted without its data
// comes back with every database empty and unmarked, and every connection
// new: a second router (another process) may claim the emptied database
// for another sandbox first, and the client, still naming the database,
// would read and write that sandbox's keys
// (TestRestartWithoutDataDoesNotShareADatabase). Found so, the connection
// is refused (ErrNoSandboxDatabase) and the client dropped: the sandbox's
// next command claims a database anew. One round trip a new connection.
func (r *Router) stillOwned(sc *sandboxClient, next func(context.Context, *redis.Conn) error) func(context.Context, *redis.Conn) error {
	return func(ctx context.Context, cn *redis.Conn) error {
		n, err := claimScript.Run(context.WithValue(ctx, ownerCheck{}, sc.id), cn, []string{MarkerKey}, sc.id).Int()
		if err != nil {
			return fmt.Errorf("redisroute: sandbox %q: checking that database %d is still its own: %w", sc.id, sc.db, err)
		}
		if n != 1 {
			r.drop(sc)
			err := fmt.Errorf("%w: sandbox %q: database %d is no longer its own (the server lost its data, or it was flushed, and another sandbox or somebody else's keys took it): its next command claims a database anew", ErrNoSandboxDatabase, sc.id, sc.db)
			s, _ := propagation.FromContext(ctx)
			// go-redis returns what the error given it wraps: wrap it once
			// more, so that the caller sees the whole of it.
			return fmt.Errorf("redisroute: new connection: %w", r.refuse(ctx, s, err))
		}
		if next != nil {
			return next(ctx, cn)
		}
		return nil
	}
}

// drop forgets sc, if it is still its sandbox's client, and closes it.
func (r *Router) drop(sc *sandboxClient) {
	r.mu.Lock()
	mine := r.clients[sc.id] == sc
	if mine {
		delete(r.clients, sc.id)
	}
	r.mu.Unlock()
	if mine {
		// Not here: the connection being initialised is the client's own.
		go func() { _ = sc.client.Close() }()
	}
}

// clientOptions returns the options of a client like baseline on
// database db: the router's own, and each sandbox's. Maintenance
// notifications are off (the baseline client handles them for the
// server; a second client on the same options cannot register for them),
// and so are idle connections kept open in advance.
func clientOptions(baseline *redis.Client, db int) *redis.Options {
	opts := *baseline.Options()
	opts.DB = db
	opts.MinIdleConns = 0
	opts.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	return &opts
}

// onDB runs fn on an admin connection that has selected database db.
func (r *Router) onDB(ctx context.Context, db int, fn func(*redis.Conn) error) error {
	cn := r.admin.Conn()
	defer cn.Close()
	if err := cn.Select(ctx, db).Err(); err != nil {
		return fmt.Errorf("redisroute: select %d: %w", db, err)
	}
	return fn(cn)
}

// owner returns the sandbox that owns database db ("" when none).
func (r *Router) owner(ctx context.Context, db int) (string, error) {
	var id string
	err := r.onDB(ctx, db, func(cn *redis.Conn) error {
		v, err := cn.Get(ctx, MarkerKey).Result()
		if errors.Is(err, redis.Nil) {
			return nil
		}
		id = v
		return err
	})
	return id, err
}

// claimScript marks the connection's database as owned by ARGV[1] when it
// is empty, in one step: a claim interrupted anywhere (a connection cut, a
// crash) leaves the database marked by a whole claim or not at all, never
// a marker on somebody else's keys. It returns 1 when the database is
// ARGV[1]'s.
var claimScript = redis.NewScript(`
if redis.call('dbsize') == 0 then
	redis.call('set', KEYS[1], ARGV[1])
	return 1
end
if redis.call('get', KEYS[1]) == ARGV[1] then return 1 end
return 0`)

// claim returns the database that id owns, or claims a free one: an empty
// database, marked in the same step (claimScript). It holds r.mu.
//
// A database that a client of this router still uses is never claimed for
// another sandbox, even when it is empty and unmarked: a server restarted
// without its data (or a FLUSHALL through another client) empties it while
// the router keeps the client, whose next writes land there again. Given
// to a second sandbox, the two would share their keys
// (TestEmptiedDatabaseOfALiveSandboxIsNotGivenAway). Such a database found
// empty is marked again for the sandbox that uses it, so that other
// routers do not take it either.
func (r *Router) claim(ctx context.Context, id string) (int, error) {
	held := make(map[int]string, len(r.clients))
	for owner, sc := range r.clients {
		held[sc.db] = owner
	}
	if db, err := r.find(ctx, id, held); err != nil || db >= 0 {
		return db, err
	}
	for db := r.dbs.First; db <= r.dbs.Last; db++ {
		if owner, ok := held[db]; ok {
			n := 0
			err := r.onDB(ctx, db, func(cn *redis.Conn) error {
				var err error
				n, err = claimScript.Run(ctx, cn, []string{MarkerKey}, owner).Int()
				return err
			})
			if err != nil {
				return 0, err
			}
			if n != 1 {
				// Marked by another sandbox, or holding keys without a
				// marker: no longer owner's (stillOwned would refuse its
				// next connection). Its next command claims anew.
				sc := r.clients[owner]
				delete(r.clients, owner)
				go func() { _ = sc.client.Close() }()
			}
			continue
		}
		claimed := false
		err := r.onDB(ctx, db, func(cn *redis.Conn) error {
			n, err := claimScript.Run(ctx, cn, []string{MarkerKey}, id).Int()
			claimed = n == 1
			return err
		})
		if err != nil {
			return 0, err
		}
		if claimed {
			// Another process may have claimed a database for id at the
			// same time; the lowest one wins, the others are given back.
			if first, err := r.find(ctx, id, held); err == nil && first >= 0 && first < db {
				_, _ = r.flushIf(ctx, db, func(owner string) bool { return owner == id })
				return first, nil
			}
			return db, nil
		}
	}
	return 0, fmt.Errorf("%w: sandbox %q: every database from %d to %d is taken", ErrNoSandboxDatabase, id, r.dbs.First, r.dbs.Last)
}

// find returns the lowest database id owns, or -1, leaving out the
// databases that clients of this router hold for other sandboxes.
func (r *Router) find(ctx context.Context, id string, held map[int]string) (int, error) {
	for db := r.dbs.First; db <= r.dbs.Last; db++ {
		if owner, ok := held[db]; ok && owner != id {
			continue
		}
		owner, err := r.owner(ctx, db)
		if err != nil {
			return 0, err
		}
		if owner == id {
			return db, nil
		}
	}
	return -1, nil
}

// Database returns the database that ctx's commands run in: the
// baseline's without a sandbox, else the sandbox's (claimed if need be).
func (r *Router) Database(ctx context.Context) (int, error) {
	s, ok := propagation.FromContext(ctx)
	if !ok {
		return r.baseline.Options().DB, nil
	}
	sc, err := r.sandbox(ctx, s)
	if err != nil {
		return 0, err
	}
	return sc.db, nil
}

// Watch is [redis.Client.Watch] for ctx: on the baseline without a
// sandbox, else on one connection to the sandbox's database, with the
// sandbox policy on every command of the transaction.
func (r *Router) Watch(ctx context.Context, fn func(*redis.Tx) error, keys ...string) error {
	s, ok := propagation.FromContext(ctx)
	if !ok {
		return r.baseline.Watch(ctx, fn, keys...)
	}
	sc, err := r.sandbox(ctx, s)
	if err != nil {
		return err
	}
	return sc.client.Watch(ctx, fn, keys...)
}

// MaxTimeoutClones is how many distinct timeouts [Router.WithTimeout]
// keeps a clone for; a further one is refused.
const MaxTimeoutClones = 32

// WithTimeout is the routed counterpart of the baseline's
// client.WithTimeout, which must not be used with sandbox contexts: in
// go-redis 9.23 a WithTimeout clone has no hooks at all (see the package
// doc), so its sandbox commands run on the baseline's database. WithTimeout
// takes such a clone (it shares the baseline's pools, as go-redis's does),
// pins its AutoPipeliners to half duplex as [New] does, and installs the
// router on it: its production commands run with the given read and write
// timeouts, its sandbox commands are routed as the baseline's are, to the
// sandbox's client, with the baseline's timeouts (set a context deadline
// for them). The baseline's other hooks are not on the clone (go-redis
// copies none); add them to it if they must run. Closing the clone closes
// the pools it shares with the baseline, as go-redis's clones do.
//
// It returns the same client for the same timeout: each clone keeps two
// idle AutoPipeliner goroutines and their queues (about 48 KB with
// go-redis's defaults, far more with large AutoPipelineOptions: see the
// package doc) until the baseline is closed, Router.Close included (go-redis
// registers them on the pools it shares, and closing them would let the
// clone build a full-duplex AutoPipeliner), so a clone per call would pile
// them up. Use a few fixed timeouts, not computed ones: past
// [MaxTimeoutClones] distinct timeouts, WithTimeout fails with an error
// wrapping [ErrConfig] instead of growing without bound.
func (r *Router) WithTimeout(timeout time.Duration) (*redis.Client, error) {
	r.mu.RLock()
	closed := r.closed
	r.mu.RUnlock()
	if closed {
		return nil, ErrClosed
	}
	r.timeoutsMu.Lock()
	defer r.timeoutsMu.Unlock()
	if c, ok := r.timeouts[timeout]; ok {
		return c, nil
	}
	if len(r.timeouts) >= MaxTimeoutClones {
		return nil, fmt.Errorf("%w: redisroute: Router.WithTimeout(%v): the router already keeps %d clones, one per distinct timeout, each with two AutoPipeliner goroutines and their queues until the baseline closes: use a few fixed timeouts, or a context deadline", ErrConfig, timeout, len(r.timeouts))
	}
	c := r.baseline.WithTimeout(timeout)
	if err := pinHalfDuplex(c, "Router.WithTimeout"); err != nil {
		return nil, err
	}
	c.AddHook(routeHook{r})
	if r.timeouts == nil {
		r.timeouts = make(map[time.Duration]*redis.Client)
	}
	r.timeouts[timeout] = c
	return c, nil
}

// Destroy flushes the database that sandbox id owns in the router's range,
// if any, and closes its client: the database is free for another sandbox.
// The sandbox's commands that arrive while it runs fail with
// [ErrNoSandboxDatabase]; after it returns, the sandbox's next command
// claims a database anew. (A command given a client of the database
// during the flush, which found it still marked, wrote its keys after the
// flush into a database that no marker kept from other routers:
// TestSandboxCommandDuringDestroyIsNotRoutedToTheFlushedDatabase.)
// It touches no database whose marker names another sandbox, or none. An
// id that is not a valid sandbox ID is an error wrapping
// propagation.ErrInvalidID.
func (r *Router) Destroy(ctx context.Context, id string) error {
	if err := propagation.ValidateID(id); err != nil {
		return fmt.Errorf("redisroute: Destroy: %w", err)
	}
	r.mu.Lock()
	sc := r.clients[id]
	delete(r.clients, id)
	if r.destroying == nil {
		r.destroying = make(map[string]int)
	}
	r.destroying[id]++
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		if r.destroying[id]--; r.destroying[id] == 0 {
			delete(r.destroying, id)
		}
		r.mu.Unlock()
	}()
	if sc != nil {
		_ = sc.client.Close()
	}
	_, err := r.flushOwned(ctx, func(owner string) bool { return owner == id })
	return err
}

// Reap flushes the databases of the router's range whose owner the route
// table ([WithRoutes]) no longer holds, and returns their owners. Without a
// route table it is an ErrConfig error; with a table that has never
// loaded it flushes nothing and returns [ErrNotSynced].
func (r *Router) Reap(ctx context.Context) ([]string, error) {
	t := r.cfg.table
	if t == nil {
		return nil, fmt.Errorf("%w: redisroute: Reap: the router has no route table (WithRoutes)", ErrConfig)
	}
	if t.SyncedAt().IsZero() {
		// An empty table that never loaded would make every sandbox's
		// database look abandoned.
		return nil, fmt.Errorf("%w: redisroute: Reap: the table has never loaded; nothing flushed", ErrNotSynced)
	}
	gone, err := r.flushOwned(ctx, func(owner string) bool {
		_, ok := t.Sandbox(owner)
		return !ok
	})
	r.mu.Lock()
	var stale []*sandboxClient
	for _, id := range gone {
		if sc := r.clients[id]; sc != nil {
			stale = append(stale, sc)
			delete(r.clients, id)
		}
	}
	r.mu.Unlock()
	for _, sc := range stale {
		_ = sc.client.Close()
	}
	return gone, err
}

// flushOwned flushes every database of the range whose marker names an
// owner that remove selects, checking the marker and flushing in one
// transaction (WATCH) so a database claimed again in between is left alone.
func (r *Router) flushOwned(ctx context.Context, remove func(owner string) bool) ([]string, error) {
	var gone []string
	var errs []error
	for db := r.dbs.First; db <= r.dbs.Last; db++ {
		owner, err := r.flushIf(ctx, db, remove)
		if err != nil && !errors.Is(err, redis.TxFailedErr) {
			errs = append(errs, err)
		}
		if err == nil && owner != "" {
			gone = append(gone, owner)
		}
	}
	return gone, errors.Join(errs...)
}

// flushIf flushes database db when its marker names an owner that remove
// selects, checking and flushing in one transaction (WATCH), and returns
// the owner it flushed ("" when none).
func (r *Router) flushIf(ctx context.Context, db int, remove func(owner string) bool) (string, error) {
	var gone string
	err := r.onDB(ctx, db, func(cn *redis.Conn) error {
		if err := cn.Do(ctx, "watch", MarkerKey).Err(); err != nil {
			return err
		}
		owner, err := cn.Get(ctx, MarkerKey).Result()
		if errors.Is(err, redis.Nil) || (err == nil && !remove(owner)) {
			return cn.Do(ctx, "unwatch").Err()
		}
		if err != nil {
			return err
		}
		_, err = cn.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.FlushDB(ctx)
			return nil
		})
		if err == nil {
			gone = owner
		}
		return err
	})
	return gone, err
}

// Close closes the sandbox clients and the router's own connection; it
// leaves baseline open, still routing (every sandbox command then fails
// with ErrClosed). It flushes nothing.
func (r *Router) Close() error {
	r.mu.Lock()
	r.closed = true
	clients := r.clients
	r.clients = nil
	r.mu.Unlock()
	var errs []error
	for _, sc := range clients {
		errs = append(errs, sc.client.Close())
	}
	errs = append(errs, r.admin.Close())
	return errors.Join(errs...)
}

// refuse audits err for s and returns it.
func (r *Router) refuse(ctx context.Context, s propagation.Sandbox, err error) error {
	reject(ctx, r.cfg.logger, s, err)
	return err
}

func reject(ctx context.Context, l *slog.Logger, s propagation.Sandbox, err error) {
	if l != nil {
		audit.Emit(ctx, l, audit.Event{
			Decision: audit.Rejected,
			Sandbox:  s,
			Protocol: audit.Redis,
			Reason:   err.Error(),
		})
	}
}

// policyHook is the only hook of a sandbox client: it refuses every command
// that would leave the sandbox's database.
type policyHook struct {
	r  *Router
	db int
	id string // the sandbox that owns db
}

func (h policyHook) DialHook(next redis.DialHook) redis.DialHook { return next }

// The policy checks, and go-redis writes, a private copy of each command
// (privateCopy), never the caller's: a caller that overwrote its command
// (*cmd = *other), or swapped the command a wrapper of its holds, between
// the check and the write, sent a command the check never saw ("SELECT
// <the sandbox's database>" checked, "SELECT <production's>" written:
// TestSwappedCommandCannotPassTheCheck). The copy's reply is copied back
// into the caller's command when the write and read are done.
func (h policyHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		priv, err := privateCopy(cmd)
		if err == nil {
			err = h.check(priv)
		}
		if err != nil && priv != nil && ctx.Value(ownerCheck{}) == h.id {
			// The router's own check of a new connection (stillOwned):
			// the claim script, which names the marker.
			err = next(ctx, priv)
			copyBack(cmd, priv)
			return err
		}
		if err == nil {
			// go-redis sends these in pipelines only (TxPipelined); the
			// router refuses them bare, but read the name of the caller's
			// command, which may have changed since.
			switch wireName(priv) {
			case "multi", "exec", "discard":
				err = fmt.Errorf("%w: %s: use Router.Watch, TxPipelined or TxPipeline for a sandbox's transactions", ErrRefused, priv.Name())
			}
		}
		if err != nil {
			return h.refuse(ctx, err)
		}
		err = next(ctx, priv)
		copyBack(cmd, priv)
		return err
	}
}

func (h policyHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		privs := make([]redis.Cmder, len(cmds))
		var err error
		for i, cmd := range cmds {
			if privs[i], err = privateCopy(cmd); err != nil {
				break
			}
			if err = h.check(privs[i]); err != nil {
				break
			}
		}
		if err == nil {
			tx := isTx(privs)
			for i, p := range privs {
				switch wireName(p) {
				case "multi", "exec":
					if tx && (i == 0 || i == len(privs)-1) {
						continue
					}
					fallthrough
				case "discard", "watch", "unwatch":
					err = fmt.Errorf("%w: %s in a pipeline: use Router.Watch, TxPipelined or TxPipeline for a sandbox's transactions", ErrRefused, p.Name())
				}
				if err != nil {
					break
				}
			}
		}
		if err != nil {
			err = h.refuse(ctx, err)
			for _, c := range cmds {
				c.SetErr(err)
			}
			return err
		}
		err = next(ctx, privs)
		for i, c := range cmds {
			copyBack(c, privs[i])
		}
		return err
	}
}

// check is the policy, and refuses a command built with another
// sandbox's context (one sent through [Router.Watch]'s transaction: the
// baseline's hook checks the others).
func (h policyHook) check(cmd redis.Cmder) error {
	if cs, ok := cmdSandbox(cmd); ok && cs.ID != h.id {
		return fmt.Errorf("%w: %s: built with sandbox %q's context, sent in sandbox %q's database", ErrRefused, cmd.Name(), cs.ID, h.id)
	}
	return check(cmd, h.db)
}

func (h policyHook) refuse(ctx context.Context, err error) error {
	s, _ := propagation.FromContext(ctx)
	return h.r.refuse(ctx, s, err)
}
