package gateway

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sandboxkit/sandboxkit/examples/shop/cart"
	"github.com/sandboxkit/sandboxkit/examples/shop/orders"
	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// Receipt is what POST /checkout answers.
type Receipt struct {
	Order      int64  `json:"order"`
	Database   string `json:"database"`
	Item       string `json:"item"`
	Qty        int    `json:"qty"`
	TotalCents int64  `json:"totalCents"`
	Rule       string `json:"rule"`
	PricedBy   string `json:"pricedBy"`
	// Sandbox is the sandbox the request was served in, "" for production.
	Sandbox string `json:"sandbox,omitempty"`
}

// New returns the gateway: POST /checkout with the form values item and
// qty. Sandbox markers are admitted only with a ticket that verifier
// accepts (see the package documentation); opts add to the
// [httpmw.NewHandler] around the endpoint: the logger and the budget (a
// trust option among them would widen the policy). Calls to cart and
// orders go with the request's context, so an admitted sandbox goes along.
// Its error is httpmw's, for misconfigured options (a nil verifier among
// them).
func New(verifier *propagation.Verifier, cart *cart.Client, orders *orders.Client, opts ...httpmw.HandlerOption) (http.Handler, error) {
	g := &gateway{cart: cart, orders: orders}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /checkout", g.checkout)
	return httpmw.NewHandler(mux, append([]httpmw.HandlerOption{httpmw.WithVerifier(verifier)}, opts...)...)
}

type gateway struct {
	cart   *cart.Client
	orders *orders.Client
}

func (g *gateway) checkout(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context() // carries the sandbox when its ticket was valid
	item := r.FormValue("item")
	qty, err := strconv.Atoi(r.FormValue("qty"))
	if err != nil {
		http.Error(w, "gateway: qty must be a number", http.StatusBadRequest)
		return
	}
	q, err := g.cart.Price(ctx, item, qty)
	if err != nil {
		http.Error(w, "gateway: "+err.Error(), statusOf(err))
		return
	}
	p, err := g.orders.Place(ctx, orders.Order{Item: q.GetItem(), Qty: int(q.GetQty()), TotalCents: q.GetTotalCents(), PricedBy: q.GetServer()})
	if err != nil {
		http.Error(w, "gateway: "+err.Error(), statusOf(err))
		return
	}
	rc := Receipt{
		Order: p.ID, Database: p.Database, Item: q.GetItem(), Qty: int(q.GetQty()),
		TotalCents: q.GetTotalCents(), Rule: q.GetRule(), PricedBy: q.GetServer(),
	}
	if sb, ok := propagation.FromContext(ctx); ok {
		rc.Sandbox = sb.ID
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(rc)
}

// statusOf translates a service error to the gateway's HTTP status.
func statusOf(err error) int {
	if oe := (*orders.Error)(nil); errors.As(err, &oe) {
		return oe.Status
	}
	if s, ok := status.FromError(err); ok {
		switch s.Code() {
		case codes.NotFound:
			return http.StatusNotFound
		case codes.InvalidArgument:
			return http.StatusBadRequest
		case codes.Unavailable:
			return http.StatusServiceUnavailable
		case codes.ResourceExhausted:
			return http.StatusTooManyRequests
		}
	}
	return http.StatusBadGateway
}
