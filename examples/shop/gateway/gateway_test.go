package gateway

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sandboxkit/sandboxkit/examples/shop/orders"
)

// Errors of the services become HTTP statuses at the edge, also when
// wrapped.
func TestStatusOf(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{fmt.Errorf("cart: %w", status.Error(codes.NotFound, "no item")), http.StatusNotFound},
		{fmt.Errorf("cart: %w", status.Error(codes.InvalidArgument, "bad markers")), http.StatusBadRequest},
		{fmt.Errorf("cart: %w", status.Error(codes.Unavailable, "sandbox upstream down")), http.StatusServiceUnavailable},
		{fmt.Errorf("cart: %w", status.Error(codes.ResourceExhausted, "budget")), http.StatusTooManyRequests},
		{fmt.Errorf("cart: %w", status.Error(codes.Internal, "boom")), http.StatusBadGateway},
		{&orders.Error{Status: http.StatusServiceUnavailable, Message: "no test database"}, http.StatusServiceUnavailable},
		{fmt.Errorf("placing: %w", &orders.Error{Status: http.StatusBadRequest}), http.StatusBadRequest},
		{errors.New("connection refused"), http.StatusBadGateway},
	} {
		if got := statusOf(tc.err); got != tc.want {
			t.Errorf("statusOf(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}
