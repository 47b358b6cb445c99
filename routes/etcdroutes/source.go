package etcdroutes

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"

	"github.com/sandboxkit/sandboxkit/routes"
)

// Source is a set of sandboxes in etcd, one key per sandbox under a
// prefix. Build it with [New].
type Source struct {
	client *clientv3.Client
	prefix string
	cfg    config
}

// New returns the source of the sandboxes stored under prefix. prefix must
// end with a slash ("/sandboxkit/routes/"): without it the prefix would
// also cover the keys of others ("/sandboxes" covers "/sandboxes-old/…"),
// and every one of them would fail the read.
func New(client *clientv3.Client, prefix string, opts ...Option) (*Source, error) {
	if client == nil {
		return nil, fmt.Errorf("%w: nil client", ErrConfig)
	}
	if prefix == "" {
		return nil, fmt.Errorf("%w: empty prefix", ErrConfig)
	}
	if !strings.HasSuffix(prefix, "/") {
		return nil, fmt.Errorf("%w: prefix %q must end with a slash, or it also covers keys such as %q", ErrConfig, prefix, prefix+"-old/x")
	}
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	return &Source{client: client, prefix: prefix, cfg: cfg}, nil
}

// Key returns the key of sandbox id.
func (s *Source) Key(id string) string { return s.prefix + id }

// Prefix returns the prefix the source's keys share.
func (s *Source) Prefix() string { return s.prefix }

// errCompacted ends a watch whose revisions etcd has compacted: Sync reads
// afresh at once.
var errCompacted = errors.New("etcdroutes: watch revision compacted")

// errStoreReset ends a watch on a store that is not the one it started
// on: another cluster, or revisions that went back (etcd restored from a
// backup, or started over empty). Its watch would wait for revisions the
// new store reaches with other changes, so Sync reads afresh at once.
var errStoreReset = errors.New("etcdroutes: the store was reset")

// Sync keeps table in sync with the store until ctx is done, and returns
// ctx's error then. See the package documentation for what it proves and
// when.
func (s *Source) Sync(ctx context.Context, table *routes.Table) error {
	if table == nil {
		return fmt.Errorf("%w: nil table", ErrConfig)
	}
	wait := s.cfg.every
	for {
		err := s.session(ctx, table, func() { wait = s.cfg.every })
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, errCompacted) || errors.Is(err, errStoreReset) {
			continue // read afresh at once
		}
		timer := time.NewTimer(s.cfg.spread(wait))
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		}
		wait = min(wait*2, s.cfg.maxBackoff)
	}
}

// fail records a failure that an attempt started at start met.
func (s *Source) fail(table *routes.Table, start time.Time, err error) error {
	err = table.MarkFailed(start, err)
	if s.cfg.onError != nil {
		s.cfg.onError(err)
	}
	return err
}

// loaded is what a read of the prefix saw.
type loaded struct {
	rev     int64  // the store's revision
	cluster uint64 // the cluster's ID
	keys    int64  // how many keys the prefix holds
}

// load reads every key under the prefix into table.
func (s *Source) load(ctx context.Context, table *routes.Table) (loaded, error) {
	var l loaded
	read := routes.SourceFunc(func(ctx context.Context) ([]routes.Sandbox, error) {
		resp, err := s.client.Get(ctx, s.prefix, clientv3.WithPrefix())
		if err != nil {
			return nil, fmt.Errorf("etcdroutes: reading %s: %w", s.prefix, err)
		}
		sbs := make([]routes.Sandbox, 0, len(resp.Kvs))
		for _, kv := range resp.Kvs {
			sb, err := Unmarshal(strings.TrimPrefix(string(kv.Key), s.prefix), kv.Value)
			if err != nil {
				return nil, fmt.Errorf("etcdroutes: key %q: %w", kv.Key, err)
			}
			sbs = append(sbs, sb)
		}
		l = loaded{rev: resp.Header.Revision, cluster: resp.Header.ClusterId, keys: int64(len(resp.Kvs))}
		return sbs, nil
	})
	lctx, cancel := context.WithTimeout(ctx, s.cfg.timeout)
	defer cancel()
	if err := table.Load(lctx, read); err != nil {
		if ctx.Err() == nil && s.cfg.onError != nil {
			s.cfg.onError(err)
		}
		return loaded{}, err
	}
	return l, nil
}

// proof is a moment up to which the table reflects the store once the
// watch has delivered revision rev.
type proof struct {
	at  time.Time
	rev int64
}

// session reads the prefix, then follows it with a watch until the watch
// fails or ctx ends. It calls connected once the read succeeded.
func (s *Source) session(ctx context.Context, table *routes.Table, connected func()) error {
	l, err := s.load(ctx, table)
	if err != nil {
		return err
	}
	connected()
	rev := l.rev

	// etcd's client shares one gRPC stream between the watches whose
	// contexts carry the same metadata, and etcd answers a progress
	// request only when every watch of the stream is synced, to all of
	// them. Each session gets a stream of its own, so that tables sharing
	// a client neither wait for each other's watches nor receive each
	// other's notifications; the progress requests carry the same
	// metadata, to reach this stream.
	wctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(clientv3.WithRequireLeader(ctx),
		"sandboxkit-watch", strconv.FormatUint(rand.Uint64(), 36)))
	// Watch blocks until it has a stream to the server, which a hung
	// server never gives: start it aside, and prove (and fail) meanwhile.
	started := make(chan clientv3.WatchChan, 1)
	go func() {
		started <- s.client.Watch(wctx, s.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithProgressNotify())
	}()
	var events clientv3.WatchChan // nil until the watch has started
	defer func() {
		cancel()
		if events == nil {
			<-started
		}
	}()
	w := &watch{s: s, table: table, seen: rev, cluster: l.cluster, keys: l.keys, bad: map[string]error{}}
	// Prove by reading until every endpoint has said it runs an etcd
	// whose progress notifications can be trusted. Ask aside, so that a
	// member that does not answer delays nothing, and ask again later
	// while one does not.
	var (
		versions = make(chan versionCheck, 1)
		asking   = !s.cfg.byReading
		recheck  *time.Timer
		again    <-chan time.Time
	)
	ask := func() { go func() { versions <- s.progressTrusted(wctx) }() }
	if asking {
		ask()
	}
	defer func() {
		if asking {
			cancel() // the session is over: stop asking
			<-versions
		}
		if recheck != nil {
			recheck.Stop()
		}
	}()
	ticker := time.NewTicker(s.cfg.every)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case v := <-versions:
			asking = false
			w.byProgress = v.trusted
			if !v.known {
				recheck = time.NewTimer(s.cfg.spread(s.cfg.maxBackoff))
				again = recheck.C
			}
		case <-again:
			again, asking = nil, true
			ask()
		case events = <-started:
		case resp, ok := <-events:
			if !ok {
				return s.fail(table, s.cfg.now(), errors.New("etcdroutes: watch closed"))
			}
			if resp.CompactRevision != 0 {
				return errCompacted
			}
			if err := resp.Err(); err != nil {
				return s.fail(table, s.cfg.now(), fmt.Errorf("etcdroutes: watch: %w", err))
			}
			w.apply(&resp)
		case <-ticker.C:
			if err := w.prove(wctx); err != nil {
				return err
			}
		}
	}
}

// watch is the state of one session's watch.
type watch struct {
	s     *Source
	table *routes.Table
	// seen is the revision up to which the watch has delivered every
	// change under the prefix.
	seen    int64
	cluster uint64           // the ID of the cluster the session reads
	keys    int64            // how many keys the prefix holds as of seen
	pending []proof          // oldest first
	bad     map[string]error // keys whose value is invalid, by sandbox ID
	// byProgress: the server's progress notifications prove the watch
	// caught up. Otherwise a read of the keys changed since seen does.
	byProgress bool
	// netZero: a read proved that the store at this revision is what it
	// was at seen, so that the events up to it, still on their way,
	// cancel out (a put and a delete of the same key).
	netZero int64
}

// apply applies a watch response: its events, coalesced per key, then what
// it proves.
func (w *watch) apply(resp *clientv3.WatchResponse) {
	if len(resp.Events) > 0 {
		last := map[string]*clientv3.Event{}
		for _, ev := range resp.Events {
			if ev.Kv.ModRevision <= w.netZero {
				// Proved by reading to cancel out: applying it would
				// take the table back to an older state of the store
				// after SyncedAt moved past it.
				continue
			}
			last[string(ev.Kv.Key)] = ev
			w.seen = max(w.seen, ev.Kv.ModRevision)
			switch {
			case ev.Type == clientv3.EventTypeDelete:
				w.keys--
			case ev.IsCreate():
				w.keys++
			}
		}
		var (
			puts []routes.Sandbox
			dels []string
		)
		for key, ev := range last {
			id := strings.TrimPrefix(key, w.s.prefix)
			delete(w.bad, id)
			if ev.Type == clientv3.EventTypeDelete {
				dels = append(dels, id)
				continue
			}
			sb, err := Unmarshal(id, ev.Kv.Value)
			if err != nil {
				w.bad[id] = fmt.Errorf("etcdroutes: key %q: %w", key, err)
				continue
			}
			puts = append(puts, sb)
		}
		if len(puts) > 0 {
			// Each sandbox is valid on its own and the IDs differ (they
			// are the keys'), so Put cannot fail.
			if err := w.table.Put(puts...); err != nil {
				w.bad[puts[0].ID] = err
			}
		}
		if len(dels) > 0 {
			w.table.Remove(dels...)
		}
		if len(w.bad) > 0 {
			w.s.fail(w.table, w.s.cfg.now(), w.badErr())
		}
	} else if resp.IsProgressNotify() && w.byProgress {
		w.seen = max(w.seen, resp.Header.Revision)
	}
	w.settle()
}

// badErr names the invalid keys.
func (w *watch) badErr() error {
	ids := slices.Sorted(maps.Keys(w.bad))
	errs := make([]error, len(ids))
	for i, id := range ids {
		errs[i] = w.bad[id]
	}
	return errors.Join(errs...)
}

// settle records the newest proof the watch has caught up with.
func (w *watch) settle() {
	n := 0
	for n < len(w.pending) && w.pending[n].rev <= w.seen {
		n++
	}
	if n == 0 {
		return
	}
	p := w.pending[n-1]
	w.pending = slices.Delete(w.pending, 0, n)
	if len(w.bad) > 0 {
		return // the table does not reflect the keys it kept back
	}
	w.table.MarkSynced(p.at)
}

// prove starts a proof: the store's revision now, and a progress request
// so that a quiet watch reports it has delivered it (or, without progress
// notifications, a read of what changed since the watch's revision). It
// fails when the store does not answer, or when the oldest proof waits
// too long, and ends the session when the store is not the one it
// started on.
func (w *watch) prove(wctx context.Context) error {
	cfg := &w.s.cfg
	at := cfg.now()
	if len(w.pending) > 0 && at.Sub(w.pending[0].at) > cfg.timeout {
		return w.s.fail(w.table, w.pending[0].at, fmt.Errorf("etcdroutes: the watch has not delivered revision %d within %v", w.pending[0].rev, cfg.timeout))
	}
	ctx, cancel := context.WithTimeout(wctx, cfg.timeout)
	defer cancel()
	// A linearizable read: its revision holds every write completed
	// before at. The key is the prefix itself, which holds no sandbox.
	// Without progress notifications it also counts the keys under the
	// prefix and lists those changed since seen, at the same revision.
	var (
		rev      int64
		cluster  uint64
		caughtUp bool
		err      error
	)
	if w.byProgress {
		var resp *clientv3.GetResponse
		if resp, err = w.s.client.Get(ctx, w.s.prefix, clientv3.WithCountOnly()); err == nil {
			rev, cluster = resp.Header.Revision, resp.Header.ClusterId
		}
	} else {
		var resp *clientv3.TxnResponse
		resp, err = w.s.client.Txn(ctx).Then(
			clientv3.OpGet(w.s.prefix, clientv3.WithPrefix(), clientv3.WithCountOnly()),
			clientv3.OpGet(w.s.prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithMinModRev(w.seen+1)),
		).Commit()
		if err == nil {
			rev, cluster = resp.Header.Revision, resp.Header.ClusterId
			// Every key the store holds at that revision was last
			// changed at or before seen, and there are as many as the
			// watch knows of: the store holds what it held at seen.
			caughtUp = resp.Responses[0].GetResponseRange().Count == w.keys && len(resp.Responses[1].GetResponseRange().Kvs) == 0
		}
	}
	if err != nil {
		if wctx.Err() != nil {
			return wctx.Err()
		}
		// The watch may still be fine (the client reconnects it): keep
		// it, and report the store as failing meanwhile.
		w.s.fail(w.table, at, fmt.Errorf("etcdroutes: reading the revision: %w", err))
		return nil
	}
	if rev < w.seen || cluster != w.cluster {
		w.s.fail(w.table, at, fmt.Errorf("%w: cluster %x at revision %d, the watch is on cluster %x at revision %d: reading afresh", errStoreReset, cluster, rev, w.cluster, w.seen))
		return errStoreReset
	}
	if caughtUp {
		w.netZero = max(w.netZero, rev)
		w.seen = rev
	}
	w.pending = append(w.pending, proof{at: at, rev: rev})
	if len(w.bad) > 0 {
		w.s.fail(w.table, at, w.badErr())
	}
	if w.seen >= rev {
		w.settle()
		return nil
	}
	if !w.byProgress {
		return nil // the next read proves it, once the watch caught up
	}
	if err := w.s.client.RequestProgress(ctx); err != nil && wctx.Err() == nil {
		w.s.fail(w.table, at, fmt.Errorf("etcdroutes: requesting progress: %w", err))
	}
	return nil
}

// versionCheck is what the endpoints said of their versions.
type versionCheck struct {
	trusted bool // every endpoint runs an etcd whose notifications prove
	known   bool // every endpoint answered
}

// progressTrusted asks every endpoint of the client which etcd it runs,
// and reports whether all of them send progress notifications that prove
// the watch delivered every event up to their revision (see
// [ProgressNotifyTrusted]). An endpoint that does not answer makes the
// answer unknown, and untrusted.
func (s *Source) progressTrusted(ctx context.Context) versionCheck {
	eps := s.client.Endpoints()
	if len(eps) == 0 {
		return versionCheck{}
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.timeout)
	defer cancel()
	type answer struct {
		version string
		err     error
	}
	answers := make(chan answer, len(eps))
	for _, ep := range eps {
		go func() {
			resp, err := s.client.Status(ctx, ep)
			if err != nil {
				answers <- answer{err: err}
				return
			}
			answers <- answer{version: resp.Version}
		}()
	}
	v := versionCheck{trusted: true, known: true}
	for range eps {
		a := <-answers
		v.known = v.known && a.err == nil
		v.trusted = v.trusted && a.err == nil && ProgressNotifyTrusted(a.version)
	}
	return v
}

// ProgressNotifyTrusted reports whether etcd server version v sends a
// progress notification only once its watch has sent every event up to
// the notification's revision, so that [Source] may prove a quiet watch
// synced by one. Earlier servers can send the notification first: etcd
// issue 15220 (fixed in 3.4.25 and 3.5.8) for requested notifications,
// and etcd issue 20221 (fixed in 3.4.38, 3.5.22 and 3.6.2) for a watch
// that starts at a revision the member it reaches has not applied yet,
// which is how a Source watches from the revision of its read. For older
// servers a Source proves by reading instead ([ProveByReading]).
func ProgressNotifyTrusted(v string) bool {
	v, pre, _ := strings.Cut(strings.TrimPrefix(v, "v"), "-")
	parts := strings.Split(v, ".")
	if len(parts) != 3 {
		return false
	}
	var n [3]int
	for i, p := range parts {
		x, err := strconv.Atoi(p)
		if err != nil || x < 0 {
			return false
		}
		n[i] = x
	}
	var minPatch int
	switch {
	case n[0] == 3 && n[1] == 7 && n[2] == 0 && pre != "":
		// etcd's main branch called itself 3.7.0-alpha.0 from before
		// the fix of issue 20221 on.
		return false
	case n[0] > 3 || n[0] == 3 && n[1] >= 7:
		return true
	case n[0] == 3 && n[1] == 6:
		minPatch = 2
	case n[0] == 3 && n[1] == 5:
		minPatch = 22
	case n[0] == 3 && n[1] == 4:
		minPatch = 38
	default:
		return false
	}
	// A pre-release of the first fixed patch may predate the fix.
	return n[2] > minPatch || n[2] == minPatch && pre == ""
}
