package httpmw

import (
	"net/http"

	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/internal/audit"
	"github.com/sandboxkit/sandboxkit/internal/ingress"
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
// over their budget are answered 429 or 503 and do not reach h.
//
// A nil h, and misconfigured options, are errors wrapping [ErrConfig].
func NewHandler(h http.Handler, opts ...HandlerOption) (http.Handler, error) {
	if h == nil {
		return nil, configErr("NewHandler: nil handler")
	}
	cfg, err := handlerConfig(opts)
	if err != nil {
		return nil, err
	}
	return newHandler(h, &cfg), nil
}

// NewMiddleware returns a function that wraps handlers as [NewHandler]
// does, with options resolved once for all of them. Misconfigured options
// are an error wrapping [ErrConfig]. The function wraps a nil handler
// around http.NotFoundHandler.
func NewMiddleware(opts ...HandlerOption) (func(http.Handler) http.Handler, error) {
	cfg, err := handlerConfig(opts)
	if err != nil {
		return nil, err
	}
	return func(h http.Handler) http.Handler {
		if h == nil {
			h = http.NotFoundHandler()
		}
		return newHandler(h, &cfg)
	}, nil
}

func newHandler(h http.Handler, cfg *config) *handler {
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
	if !h.budget.Active() {
		h.next.ServeHTTP(w, r)
		return
	}
	h.budget.serve(w, r, h.next, h.gate.target)
}

// gate applies the trust policy to incoming requests: the part
// [NewHandler] and [NewProxy] share. The outcome of a verdict (audit
// record, span attributes, context) is the shared kernel's
// (internal/ingress); reading the headers and judging the source are
// HTTP's. It is immutable.
type gate struct {
	in     ingress.Gate
	hops   int
	target string // audit target: the proxied service, if any
	// keepForeign is set when the codec keeps other tools' routing keys
	// (propagation.KeepForeignRoutingKeys): nothing to look for.
	keepForeign bool
	// names are the marker header names (markerNames) of a proxy's gate,
	// whose next hop is the service itself, CGI-style perhaps: it reads
	// a trusted client's Sandbox_Id as Sandbox-Id. nil for a handler's.
	names []string
}

func newGate(cfg *config, target string) gate {
	return gate{
		in:          ingress.Gate{Codec: cfg.codec, Logger: cfg.logger, Policy: cfg.policy, Protocol: audit.HTTP},
		hops:        cfg.hops,
		target:      target,
		keepForeign: !cfg.codec.StripsForeign(),
	}
}

// newProxyGate returns the gate of a proxy for service: as a handler's,
// and a trusted client's marker header spelt with '_' for '-', which
// the proxied service may read and the gate does not, is rejected.
func newProxyGate(cfg *config, service string) gate {
	g := newGate(cfg, service)
	g.names = markerNames(cfg.codec)
	return g
}

// pass returns the request to serve: r itself when it carries no markers,
// r with the sandbox in its context when the markers are admitted, a copy
// of r without markers when they are stripped. It returns false when it
// has answered the request itself (400).
func (g *gate) pass(w http.ResponseWriter, r *http.Request) (*http.Request, bool) {
	// Most requests carry nothing of ours nor other tools' routing keys:
	// they need no trust decision, and the source is not judged.
	if g.in.Codec.Quiet(r.Header) {
		return r, true
	}
	m, err := g.in.Codec.Read(otelprop.HeaderCarrier(r.Header))
	if !m.Found {
		r = g.foreign(r)
		if g.names != nil {
			// A proxy's: what the gate left in is what the service
			// reads (an untrusted client's was stripped).
			if why := underscoreMarkerError(r.Header, g.names); why != nil {
				g.in.Refuse(r.Context(), audit.Rejected, propagation.Sandbox{}, r.RemoteAddr, g.target, why, nil)
				http.Error(w, "bad sandbox markers: "+why.Error(), http.StatusBadRequest)
				return nil, false
			}
		}
		return r, true
	}
	return g.decide(w, r, &m, err)
}

// foreign returns r without other tools' routing keys (Signadot's and
// Okteto's, see propagation.Codec.Foreign), with an audit record, when it
// comes from an untrusted source: a hop of those tools further on would act
// on them. Otherwise it returns r itself. The keys are looked for first:
// the source is judged only when there is something to strip.
func (g *gate) foreign(r *http.Request) *http.Request {
	if g.keepForeign || g.in.Policy.All || !g.in.Codec.Foreign(otelprop.HeaderCarrier(r.Header)) {
		return r
	}
	src := judge(&g.in.Policy, g.hops, r.RemoteAddr, r.Header)
	if src.trusted() {
		return r
	}
	ctx := r.Context()
	g.in.Refuse(ctx, audit.Stripped, propagation.Sandbox{}, r.RemoteAddr, g.target, ingress.ErrForeign, src.reason)
	return g.strip(r)
}

func (g *gate) decide(w http.ResponseWriter, r *http.Request, m *propagation.Markers, readErr error) (*http.Request, bool) {
	src := judge(&g.in.Policy, g.hops, r.RemoteAddr, r.Header)
	verdict, why := g.in.Decide(m, readErr, src.trusted())
	ctx := r.Context()
	switch verdict {
	case trust.Admit:
		if !src.trusted() {
			r = g.ticketForeign(r)
			ctx = r.Context()
		}
		if m.Ticket != "" {
			r = g.dropTicket(r)
		}
		return r.WithContext(g.in.Admit(ctx, m, r.RemoteAddr, g.target)), true
	case trust.Strip:
		g.in.Refuse(ctx, audit.Stripped, m.Sandbox, r.RemoteAddr, g.target, why, src.reason)
		return g.strip(r), true
	default: // trust.Reject
		g.in.Refuse(ctx, audit.Rejected, m.Sandbox, r.RemoteAddr, g.target, why, nil)
		http.Error(w, "bad sandbox markers: "+why.Error(), http.StatusBadRequest)
		return nil, false
	}
}

// ticketForeign returns r, from an untrusted source admitted on its
// ticket, without other tools' routing keys (and underscore spellings of
// marker headers) in its headers and its context's OpenTelemetry baggage,
// with an audit record when there were any: the ticket vouches for its
// sandbox and for nothing else, and a hop of those tools further on would
// act on them. Our markers stay. r's headers are the caller's and are not
// modified.
func (g *gate) ticketForeign(r *http.Request) *http.Request {
	if g.keepForeign || !g.in.Codec.Foreign(otelprop.HeaderCarrier(r.Header)) {
		return r
	}
	ctx := r.Context()
	g.in.Refuse(ctx, audit.Stripped, propagation.Sandbox{}, r.RemoteAddr, g.target, ingress.ErrForeign, nil)
	h := r.Header.Clone()
	g.in.Codec.StripForeign(otelprop.HeaderCarrier(h))
	r2 := r.WithContext(g.in.Codec.StripForeignContext(ctx))
	r2.Header = h
	return r2
}

// dropTicket returns a copy of r without the ticket in its headers
// (propagation.Codec.StripTicket): the ticket admitted r here and goes no
// further, not even through a handler that forwards r's headers; r's
// headers are the caller's and are not modified. The context's copy goes
// in ingress.Gate.Admit.
func (g *gate) dropTicket(r *http.Request) *http.Request {
	h := r.Header.Clone()
	g.in.Codec.StripTicket(otelprop.HeaderCarrier(h))
	r2 := r.WithContext(r.Context())
	r2.Header = h
	return r2
}

// strip returns a copy of r whose headers and context are free of
// markers; r's headers are the caller's and are not modified.
func (g *gate) strip(r *http.Request) *http.Request {
	h := r.Header.Clone()
	r2 := r.WithContext(g.in.Strip(r.Context(), otelprop.HeaderCarrier(h)))
	r2.Header = h
	return r2
}
