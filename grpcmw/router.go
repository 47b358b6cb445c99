package grpcmw

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

	pub "github.com/sandboxkit/sandboxkit/audit"
	"github.com/sandboxkit/sandboxkit/internal/audit"
	"github.com/sandboxkit/sandboxkit/propagation"
	"github.com/sandboxkit/sandboxkit/routes"
)

// Router is a grpc.ClientConnInterface that sends each call to the
// connection of the sandbox in the call's context when that sandbox
// overrides the router's service in the route table, and to the baseline
// connection otherwise. Generated clients accept it:
//
//	cart := pb.NewCartClient(router)
//
// Calls with a sandbox also carry it in their outgoing metadata, whichever
// connection they take, so the connections need not have the client
// interceptors; as with them, the sandbox goes into the context's
// OpenTelemetry baggage too when it has any, for otelgrpc's stats handler
// on those connections.
//
// Sandbox connections are made lazily, with grpc.NewClient and the
// [WithDialOptions] options, on the first call that needs one; they are
// shared by all calls to that sandbox, and closed once their route is gone
// from the table (removed, moved to another upstream, expired) and the calls
// using them have finished, or when the router is closed.
//
// A Router is safe for concurrent use. The zero value is not usable; build
// one with [NewRouter] and [Router.Close] it when done.
type Router struct {
	baseline grpc.ClientConnInterface
	table    *routes.Table
	service  string
	codec    *propagation.Codec
	named    []string // the codec's KeyHeaders
	logger   *slog.Logger
	dialOpts []grpc.DialOption
	fallback bool
	budget   budget

	closed atomic.Bool
	mu     sync.RWMutex
	conns  map[string]*sandboxConn // by sandbox ID; guarded by mu
	done   chan struct{}
	added  chan struct{} // a connection was made: the watcher re-arms its timer
	wg     sync.WaitGroup
}

var _ grpc.ClientConnInterface = (*Router)(nil)

// sandboxConn is one sandbox's connection. refs counts the router's own
// reference (while the conn is in the map) plus one per call in flight; the
// connection is closed when it drops to zero.
type sandboxConn struct {
	id       string
	upstream string // as the route table has it
	cc       *grpc.ClientConn
	dialErr  error // grpc.NewClient refused the target; cc is nil
	refs     atomic.Int64
	once     sync.Once
}

func (c *sandboxConn) release() {
	if c.refs.Add(-1) == 0 {
		c.close()
	}
}

func (c *sandboxConn) close() {
	c.once.Do(func() {
		if c.cc != nil {
			c.cc.Close()
		}
	})
}

// NewRouter returns a router for calls to service: each call goes to the
// connection of the sandbox in its context if table routes (sandbox,
// service) to an upstream, and to baseline otherwise. The dial options
// ([WithDialOptions]) must give transport credentials; they are checked
// here. [WithCodec], [WithLogger], [WithFallbackOnUnavailable] and
// [WithBreaker] apply too. With [WithBreaker] every sandbox call through
// the router, to the sandbox's connection or to the baseline, spends the
// sandbox's budget, and a call over it is refused before a connection is
// chosen. A nil baseline or table, and an empty or invalid service
// ([routes.ValidateService]), are [ErrConfig] errors.
//
// Until table has loaded ([routes.Table.SyncedAt] is zero: a table from
// [routes.New] never filled nor loaded), a sandbox call the table does not
// route cannot be decided: it fails as an unavailable upstream does
// ([ErrSandboxUnavailable], codes.Unavailable; the baseline with
// [WithFallbackOnUnavailable]), audited with reason
// audit.ReasonNotSynced. A table from [routes.NewStatic], even empty,
// counts as loaded.
//
// NewRouter starts one goroutine that watches the table; [Router.Close]
// stops it.
func NewRouter(baseline grpc.ClientConnInterface, table *routes.Table, service string, opts ...RouterOption) (*Router, error) {
	if baseline == nil {
		return nil, configErrorf("NewRouter", "nil baseline connection")
	}
	if table == nil {
		return nil, configErrorf("NewRouter", "nil route table")
	}
	if service == "" {
		return nil, configErrorf("NewRouter", "empty service name")
	}
	if err := routes.ValidateService(service); err != nil {
		return nil, configErrorf("NewRouter", "%w", err)
	}
	cfg, err := newRouterConfig(opts)
	if err != nil {
		return nil, err
	}
	// grpc.NewClient connects lazily: building a client for a dummy target
	// checks the options (credentials above all) without any I/O.
	probe, err := grpc.NewClient("passthrough:///sandboxkit-probe", cfg.dialOpts...)
	if err != nil {
		return nil, configErrorf("WithDialOptions", "%w", err)
	}
	probe.Close()

	r := &Router{
		baseline: baseline,
		table:    table,
		service:  service,
		codec:    cfg.codec,
		named:    cfg.codec.KeyHeaders(),
		logger:   cfg.logger,
		dialOpts: cfg.dialOpts,
		fallback: cfg.fallback,
		budget:   newBudget(&cfg),
		conns:    make(map[string]*sandboxConn),
		done:     make(chan struct{}),
		added:    make(chan struct{}, 1),
	}
	r.wg.Add(1)
	go r.watch()
	return r, nil
}

// Invoke sends a unary call to the sandbox's or the baseline connection.
func (r *Router) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	s, ok := propagation.FromContext(ctx)
	if !r.budget.Covers(ok) {
		return r.invoke(ctx, s, ok, method, args, reply, opts)
	}
	done, err := r.budget.allow(ctx, s, r.service, false)
	if err != nil {
		return err
	}
	err = r.invoke(ctx, s, ok, method, args, reply, opts)
	done(outcome(err))
	return err
}

func (r *Router) invoke(ctx context.Context, s propagation.Sandbox, ok bool, method string, args, reply any, opts []grpc.CallOption) error {
	if !ok {
		if r.closed.Load() {
			return errClosed()
		}
		return r.baseline.Invoke(ctx, method, args, reply, opts...)
	}
	c, err := r.pick(ctx, s)
	if err != nil {
		return err
	}
	ctx = outgoing(ctx, r.codec, r.named, s)
	if c == nil {
		return r.baseline.Invoke(ctx, method, args, reply, opts...)
	}
	if c.cc == nil {
		err = c.dialErr
	} else {
		err = c.cc.Invoke(ctx, method, args, reply, opts...)
	}
	c.release()
	if err == nil || !r.unreachable(ctx, c, err) {
		return err
	}
	return r.unavailable(ctx, c, s, err, func() error {
		return r.baseline.Invoke(ctx, method, args, reply, opts...)
	})
}

// NewStream opens a stream on the sandbox's or the baseline connection. A
// sandbox connection stays open (even if its route goes away) until the
// stream ends.
func (r *Router) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s, ok := propagation.FromContext(ctx)
	if !r.budget.Covers(ok) {
		return r.newStream(ctx, s, ok, desc, method, nil, opts)
	}
	done, err := r.budget.allow(ctx, s, r.service, false)
	if err != nil {
		return nil, err
	}
	end := newStreamEnd(done)
	cs, err := r.newStream(ctx, s, ok, desc, method, end, append(opts[:len(opts):len(opts)], end.option()))
	end.opened(err)
	return cs, err
}

// newStream opens the stream; end, when not nil, is told when an attempt
// that failed is followed by the fallback to the baseline.
func (r *Router) newStream(ctx context.Context, s propagation.Sandbox, ok bool, desc *grpc.StreamDesc, method string, end *streamEnd, opts []grpc.CallOption) (grpc.ClientStream, error) {
	if !ok {
		if r.closed.Load() {
			return nil, errClosed()
		}
		return r.baseline.NewStream(ctx, desc, method, opts...)
	}
	c, err := r.pick(ctx, s)
	if err != nil {
		return nil, err
	}
	ctx = outgoing(ctx, r.codec, r.named, s)
	if c == nil {
		return r.baseline.NewStream(ctx, desc, method, opts...)
	}
	var cs grpc.ClientStream
	if c.cc == nil {
		err = c.dialErr
		c.release()
	} else {
		var released atomic.Bool
		release := func(error) {
			if released.CompareAndSwap(false, true) {
				c.release()
			}
		}
		cs, err = c.cc.NewStream(ctx, desc, method, append(opts[:len(opts):len(opts)], grpc.OnFinish(release))...)
		if err != nil {
			release(err) // gRPC calls OnFinish on failure too, unless an interceptor cut the call short
		}
	}
	if err == nil || !r.unreachable(ctx, c, err) {
		return cs, err
	}
	err = r.unavailable(ctx, c, s, err, func() error {
		if end != nil {
			end.retry()
		}
		cs, err = r.baseline.NewStream(ctx, desc, method, opts...)
		return err
	})
	return cs, err
}

// pick returns the connection for sandbox s, holding a reference the
// caller releases, or nil for the baseline.
func (r *Router) pick(ctx context.Context, s propagation.Sandbox) (*sandboxConn, error) {
	upstream, ok := r.table.Lookup(s.ID, r.service)
	if !ok {
		if r.closed.Load() {
			return nil, errClosed()
		}
		// A table that never loaded cannot say whether the sandbox
		// overrides the service: fail closed, as for an unreachable
		// upstream. (A fresh table is empty, so only a miss asks.)
		if r.table.SyncedAt().IsZero() {
			return nil, r.notSynced(ctx, s)
		}
		if r.logger != nil {
			reason := pub.ReasonNotOverridden
			if _, known := r.table.Sandbox(s.ID); !known {
				reason = pub.ReasonUnknownSandbox
			}
			audit.Emit(ctx, r.logger, audit.Event{
				Decision: audit.Fallback, Sandbox: s, Protocol: audit.GRPC, Target: r.service, Reason: reason,
			})
		}
		return nil, nil
	}
	c, err := r.conn(s.ID, upstream)
	if err != nil {
		return nil, err
	}
	if r.logger != nil {
		audit.Emit(ctx, r.logger, audit.Event{
			Decision: audit.Routed, Sandbox: s, Protocol: audit.GRPC, Target: r.service, Reason: "upstream " + upstream,
		})
	}
	return c, nil
}

// conn returns the shared connection for (id, upstream), making it on
// first use, with a reference taken for the caller.
func (r *Router) conn(id, upstream string) (*sandboxConn, error) {
	r.mu.RLock()
	c := r.conns[id]
	if c != nil && c.upstream == upstream {
		c.refs.Add(1)
		r.mu.RUnlock()
		return c, nil
	}
	r.mu.RUnlock()

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed.Load() {
		return nil, errClosed()
	}
	c = r.conns[id]
	if c != nil && c.upstream == upstream {
		c.refs.Add(1)
		return c, nil
	}
	if c != nil { // the sandbox moved to another upstream
		delete(r.conns, id)
		c.release()
	}
	c = &sandboxConn{id: id, upstream: upstream}
	c.cc, c.dialErr = grpc.NewClient(target(upstream), r.dialOpts...)
	c.refs.Store(2) // the map's and the caller's
	r.conns[id] = c
	select {
	case r.added <- struct{}{}:
	default: // the watcher has a wake-up pending already
	}
	return c, nil
}

// target turns a route upstream (host:port, or an http(s) URL as the
// route table also allows) into a gRPC target. The host of a URL ends
// where a path, query or fragment would begin: the table takes
// "http://h:1/", "http://h:1?" and "http://h:1/#" (routes.ValidateUpstream),
// and dialling "h:1/?" never connects.
func target(upstream string) string {
	scheme, hostport, ok := strings.Cut(upstream, "://")
	if !ok {
		// gRPC reads a target as a URL ("dns:///" + target when it has
		// no scheme): the zone of an IPv6 literal, "[::1%lo]:80", is
		// written escaped there, as in the URL form of the upstream.
		return strings.ReplaceAll(upstream, "%", "%25")
	}
	if i := strings.IndexAny(hostport, "/?#"); i >= 0 {
		hostport = hostport[:i]
	}
	if _, _, err := net.SplitHostPort(hostport); err != nil {
		port := "80"
		if scheme == "https" {
			port = "443"
		}
		hostport = net.JoinHostPort(strings.Trim(hostport, "[]"), port)
	}
	return hostport
}

// unreachable reports whether err means the call could not be sent to c's
// upstream: the target was refused, or the call failed with Unavailable
// while the connection is in TRANSIENT_FAILURE (gRPC fails calls before
// sending them in that state). An Unavailable status returned by the
// sandbox's own handler, on a healthy connection, is passed through.
func (r *Router) unreachable(ctx context.Context, c *sandboxConn, err error) bool {
	if c.cc == nil {
		return true
	}
	if status.Code(err) != codes.Unavailable {
		return false
	}
	st := c.cc.GetState()
	if st == connectivity.Connecting {
		// gRPC installs the failing picker a moment before it publishes
		// TRANSIENT_FAILURE: wait for the state to catch up.
		wctx, cancel := context.WithTimeout(ctx, stateWait)
		c.cc.WaitForStateChange(wctx, st)
		cancel()
		st = c.cc.GetState()
	}
	return st == connectivity.TransientFailure
}

// stateWait bounds the wait for the connection state after a failed call.
const stateWait = 100 * time.Millisecond

// unavailable handles a sandbox call that could not reach its upstream:
// it falls back to the baseline when configured, audited, and otherwise
// returns ErrSandboxUnavailable naming the sandbox.
func (r *Router) unavailable(ctx context.Context, c *sandboxConn, s propagation.Sandbox, cause error, baseline func() error) error {
	err := fmt.Errorf("%w: sandbox %q, service %q, upstream %s: %w", ErrSandboxUnavailable, s.ID, r.service, c.upstream, cause)
	if !r.fallback {
		return &statusError{code: codes.Unavailable, err: err}
	}
	if r.logger != nil {
		audit.Emit(ctx, r.logger, audit.Event{
			Decision: audit.Fallback, Sandbox: s, Protocol: audit.GRPC, Target: r.service, Reason: "sandbox upstream unavailable: " + cause.Error(),
		})
	}
	return baseline()
}

// notSynced handles a sandbox call the never-loaded table cannot decide:
// with [WithFallbackOnUnavailable] it goes to the baseline (pick's nil
// connection), audited as a fallback; otherwise it is refused with
// ErrSandboxUnavailable, audited as rejected.
func (r *Router) notSynced(ctx context.Context, s propagation.Sandbox) error {
	d := audit.Rejected
	if r.fallback {
		d = audit.Fallback
	}
	audit.Emit(ctx, r.logger, audit.Event{
		Decision: d, Sandbox: s, Protocol: audit.GRPC, Target: r.service, Reason: pub.ReasonNotSynced,
	})
	if r.fallback {
		return nil
	}
	return &statusError{code: codes.Unavailable, err: fmt.Errorf("%w: sandbox %q, service %q: %s", ErrSandboxUnavailable, s.ID, r.service, pub.ReasonNotSynced)}
}

func errClosed() error { return &statusError{code: codes.Canceled, err: ErrClosed} }

// watch closes connections whose route is gone, on every table change and
// when a route's end (removal time or sandbox expiry) comes. A new
// connection wakes it to take that connection's end into account.
func (r *Router) watch() {
	defer r.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		changed := r.table.Changed()
		next := r.prune()
		timer.Stop() // since Go 1.23 no stale tick survives Stop
		if !next.IsZero() {
			timer.Reset(time.Until(next))
		}
		select {
		case <-r.done:
			return
		case <-changed:
		case <-r.added:
		case <-timer.C:
		}
	}
}

// prune retires the connections whose route no longer leads to their
// upstream and returns the earliest future end of a remaining route (zero
// when none).
func (r *Router) prune() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	var next time.Time
	now := time.Now()
	for id, c := range r.conns {
		if up, ok := r.table.Lookup(id, r.service); ok && up == c.upstream {
			if rt, ok := r.table.Route(id, r.service); ok && rt.RemovedAt.After(now) && (next.IsZero() || rt.RemovedAt.Before(next)) {
				next = rt.RemovedAt
			}
			continue
		}
		delete(r.conns, id)
		c.release()
	}
	return next
}

// Conns returns how many sandbox connections the router holds open.
func (r *Router) Conns() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.conns)
}

// Close stops the table watcher and closes every sandbox connection,
// cancelling the calls still using them. It does not close the baseline.
// Calls made after Close fail with [ErrClosed]. Close is idempotent.
func (r *Router) Close() error {
	if !r.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(r.done)
	r.wg.Wait()
	r.mu.Lock()
	conns := r.conns
	r.conns = map[string]*sandboxConn{}
	r.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
	return nil
}
