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
// not be empty; it usually ends with a slash ("/sandboxkit/routes/"), so
// that no other key begins with it by accident.
func New(client *clientv3.Client, prefix string, opts ...Option) (*Source, error) {
	if client == nil {
		return nil, fmt.Errorf("%w: nil client", ErrConfig)
	}
	if prefix == "" {
		return nil, fmt.Errorf("%w: empty prefix", ErrConfig)
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
		if errors.Is(err, errCompacted) {
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

// load reads every key under the prefix into table, and returns the
// revision of that read.
func (s *Source) load(ctx context.Context, table *routes.Table) (int64, error) {
	var rev int64
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
		rev = resp.Header.Revision
		return sbs, nil
	})
	lctx, cancel := context.WithTimeout(ctx, s.cfg.timeout)
	defer cancel()
	if err := table.Load(lctx, read); err != nil {
		if ctx.Err() == nil && s.cfg.onError != nil {
			s.cfg.onError(err)
		}
		return 0, err
	}
	return rev, nil
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
	rev, err := s.load(ctx, table)
	if err != nil {
		return err
	}
	connected()

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
	w := &watch{s: s, table: table, seen: rev, bad: map[string]error{}}
	ticker := time.NewTicker(s.cfg.every)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
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
	pending []proof          // oldest first
	bad     map[string]error // keys whose value is invalid, by sandbox ID
}

// apply applies a watch response: its events, coalesced per key, then what
// it proves.
func (w *watch) apply(resp *clientv3.WatchResponse) {
	if len(resp.Events) > 0 {
		last := map[string]*clientv3.Event{}
		for _, ev := range resp.Events {
			last[string(ev.Kv.Key)] = ev
			w.seen = max(w.seen, ev.Kv.ModRevision)
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
		w.table.Remove(dels...)
		if len(w.bad) > 0 {
			w.s.fail(w.table, w.s.cfg.now(), w.badErr())
		}
	} else if resp.IsProgressNotify() {
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
// so that a quiet watch reports it has delivered it. It fails when the
// store does not answer, or when the oldest proof waits too long.
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
	resp, err := w.s.client.Get(ctx, w.s.prefix, clientv3.WithCountOnly())
	if err != nil {
		if wctx.Err() != nil {
			return wctx.Err()
		}
		// The watch may still be fine (the client reconnects it): keep
		// it, and report the store as failing meanwhile.
		w.s.fail(w.table, at, fmt.Errorf("etcdroutes: reading the revision: %w", err))
		return nil
	}
	w.pending = append(w.pending, proof{at: at, rev: resp.Header.Revision})
	if len(w.bad) > 0 {
		w.s.fail(w.table, at, w.badErr())
	}
	if w.seen >= resp.Header.Revision {
		w.settle()
		return nil
	}
	if err := w.s.client.RequestProgress(ctx); err != nil && wctx.Err() == nil {
		w.s.fail(w.table, at, fmt.Errorf("etcdroutes: requesting progress: %w", err))
	}
	return nil
}
