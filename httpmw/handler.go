package httpmw

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/internal/audit"
	"github.com/sandboxkit/sandboxkit/internal/trust"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// NewHandler returns h wrapped in the sandbox middleware: requests whose
// sandbox markers come from a trusted source reach h with the sandbox in
// their context ([propagation.FromContext]); markers from anyone else are
// stripped and the request reaches h as production traffic; unreadable
// markers from a trusted source are answered with 400 Bad Request and do
// not reach h. See the package documentation for the trust rules. With no
// trust option, nothing is trusted. With [WithBreaker], sandbox requests
// over their budget are answered 429 or 503 and do not reach h. A nil h
// answers 404 Not Found.
func NewHandler(h http.Handler, opts ...Option) http.Handler {
	cfg := newConfig(opts)
	return newHandler(h, &cfg)
}

// NewMiddleware returns a function that wraps handlers as [NewHandler]
// does, with options resolved once for all of them.
func NewMiddleware(opts ...Option) func(http.Handler) http.Handler {
	cfg := newConfig(opts)
	return func(h http.Handler) http.Handler { return newHandler(h, &cfg) }
}

func newHandler(h http.Handler, cfg *config) *handler {
	if h == nil {
		h = http.NotFoundHandler()
	}
	return &handler{next: h, gate: newGate(cfg, ""), budget: newBudget(cfg)}
}

type handler struct {
	next   http.Handler
	gate   gate
	budget budget
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r, ok := h.gate.pass(w, r)
	if !ok {
		return
	}
	if h.budget.g == nil {
		h.next.ServeHTTP(w, r)
		return
	}
	h.budget.serve(w, r, h.next, h.gate.target)
}

// gate applies the trust policy to incoming requests: the part
// [NewHandler] and [NewProxy] share. It is immutable.
type gate struct {
	codec  *propagation.Codec
	logger *slog.Logger
	policy trust.Policy
	hops   int
	target string // audit target: the proxied service, if any
	// keepForeign is set when the codec keeps other tools' routing keys
	// (propagation.KeepForeignRoutingKeys): nothing to look for.
	keepForeign bool
}

func newGate(cfg *config, target string) gate {
	return gate{codec: cfg.codec, logger: cfg.logger, policy: cfg.policy, hops: cfg.hops, target: target,
		keepForeign: !cfg.codec.StripsForeign()}
}

// errUnexplained stands in for a missing reason, which the trust policy
// does not return today.
var errUnexplained = errors.New("sandbox markers refused")

// Reasons given in admitted records.
const (
	byPeer   = "trusted source"
	byTicket = "valid ticket"
)

// pass returns the request to serve: r itself when it carries no markers,
// r with the sandbox in its context when the markers are admitted, a copy
// of r without markers when they are stripped. It returns false when it
// has answered the request itself (400).
func (g *gate) pass(w http.ResponseWriter, r *http.Request) (*http.Request, bool) {
	m, err := g.codec.Read(otelprop.HeaderCarrier(r.Header))
	if !m.Found {
		return g.foreign(r), true
	}
	return g.decide(w, r, &m, err)
}

// errForeign is the reason given when only other tools' routing keys are
// stripped.
var errForeign = errors.New("foreign routing keys from an untrusted source")

// foreign returns r without other tools' routing keys (Signadot's and
// Okteto's, see propagation.Codec.Foreign), with an audit record, when it
// comes from an untrusted source: a hop of those tools further on would act
// on them. Otherwise it returns r itself. The source is judged first: for
// the common trusted request that is cheaper than looking for the keys.
func (g *gate) foreign(r *http.Request) *http.Request {
	if g.keepForeign || g.policy.All {
		return r
	}
	src := judge(&g.policy, g.hops, r.RemoteAddr, r.Header)
	if src.trusted() || !g.codec.Foreign(otelprop.HeaderCarrier(r.Header)) {
		return r
	}
	ctx := r.Context()
	if g.logger != nil {
		reason := errForeign.Error()
		if s := src.reason(); s != "" {
			reason += ": " + s
		}
		g.emit(ctx, audit.Stripped, propagation.Sandbox{}, r, reason)
	}
	h := r.Header.Clone()
	g.codec.Strip(otelprop.HeaderCarrier(h))
	r2 := r.WithContext(g.codec.StripContext(ctx))
	r2.Header = h
	return r2
}

func (g *gate) decide(w http.ResponseWriter, r *http.Request, m *propagation.Markers, readErr error) (*http.Request, bool) {
	src := judge(&g.policy, g.hops, r.RemoteAddr, r.Header)
	verdict, why := g.policy.Decide(m, readErr, src.trusted())
	if why == nil && (verdict == trust.Strip || verdict == trust.Reject) {
		why = errUnexplained
	}
	ctx := r.Context()
	switch verdict {
	case trust.Admit:
		audit.Annotate(ctx, &m.Sandbox)
		ctx = g.codec.ContextWithSandbox(ctx, m.Sandbox)
		reason := byPeer
		if m.Ticket != "" && g.policy.Verifier != nil {
			reason = byTicket
		}
		if g.logger != nil {
			g.emit(ctx, audit.Admitted, m.Sandbox, r, reason)
		}
		return r.WithContext(ctx), true
	case trust.Strip:
		if g.logger != nil {
			reason := why.Error()
			if s := src.reason(); s != "" {
				reason += ": " + s
			}
			g.emit(ctx, audit.Stripped, clip(m.Sandbox), r, reason)
		}
		h := r.Header.Clone()
		g.codec.Strip(otelprop.HeaderCarrier(h))
		// Instrumentation in front of us (otelhttp) may have extracted the
		// markers into the context already: take them out there too.
		r2 := r.WithContext(g.codec.StripContext(ctx))
		r2.Header = h
		return r2, true
	default: // trust.Reject
		g.emit(ctx, audit.Rejected, clip(m.Sandbox), r, why.Error())
		http.Error(w, "bad sandbox markers: "+why.Error(), http.StatusBadRequest)
		return nil, false
	}
}

func (g *gate) emit(ctx context.Context, d audit.Decision, s propagation.Sandbox, r *http.Request, reason string) {
	audit.Emit(ctx, g.logger, audit.Event{
		Decision: d,
		Sandbox:  s,
		Protocol: audit.HTTP,
		Peer:     r.RemoteAddr,
		Target:   g.target,
		Reason:   reason,
	})
}

// clip shortens the parts of a sandbox that was not admitted, whose values
// are whatever the sender wrote, before they go to the audit log.
func clip(s propagation.Sandbox) propagation.Sandbox {
	const max = 128
	for _, p := range [...]*string{&s.ID, &s.Actor, &s.Origin} {
		if len(*p) > max {
			*p = (*p)[:max] + "..."
		}
	}
	return s
}
