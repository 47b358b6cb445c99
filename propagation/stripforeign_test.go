package propagation_test

import (
	"context"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/baggage"
	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestStripForeign: StripForeign removes what Foreign reports, under every
// spelling Foreign reads, and leaves our markers readable as they were;
// StripForeignContext does the same to the context's baggage and keeps
// the sandbox.
func TestStripForeign(t *testing.T) {
	codec := propagation.Default()
	for _, tc := range []struct {
		name string
		h    http.Header
		want http.Header
	}{
		{
			name: "baggage and header forms",
			h: http.Header{
				"Sandbox-Id":                {"feat-1"},
				"Baggage":                   {"foo=bar,sd-routing-key=x,sandbox.id=feat-1,%20okteto-divert=y,sandbox.actor=alice"},
				"Uberctx-Sd-Routing-Key":    {"x"},
				"Ot-Baggage-Sd-Routing-Key": {"x"},
				"Sandbox_id":                {"feat-9"},
				"X-User":                    {"u1"},
			},
			want: http.Header{
				"Sandbox-Id": {"feat-1"},
				"Baggage":    {"foo=bar,sandbox.id=feat-1,sandbox.actor=alice"},
				"X-User":     {"u1"},
			},
		},
		{
			name: "only foreign baggage",
			h:    http.Header{"Baggage": {"sd-routing-key=x"}},
			want: http.Header{},
		},
		{
			name: "nothing foreign",
			h:    http.Header{"Sandbox-Id": {"feat-1"}, "Baggage": {"a=1,sandbox.id=feat-1"}},
			want: http.Header{"Sandbox-Id": {"feat-1"}, "Baggage": {"a=1,sandbox.id=feat-1"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, beforeErr := codec.Read(otelprop.HeaderCarrier(tc.h.Clone()))
			h := tc.h.Clone()
			codec.StripForeign(otelprop.HeaderCarrier(h))
			if !reflect.DeepEqual(h, tc.want) {
				t.Errorf("after StripForeign: %v, want %v", h, tc.want)
			}
			if codec.Foreign(otelprop.HeaderCarrier(h)) {
				t.Errorf("Foreign still reports %v", h)
			}
			after, afterErr := codec.Read(otelprop.HeaderCarrier(h))
			if after != before || (afterErr == nil) != (beforeErr == nil) {
				t.Errorf("Read: %+v, %v after; %+v, %v before", after, afterErr, before, beforeErr)
			}
		})
	}

	bag, err := baggage.Parse("foo=bar,sd-routing-key=x,okteto-divert=y,sandbox.id=feat-1")
	if err != nil {
		t.Fatal(err)
	}
	s := propagation.Sandbox{ID: "feat-1"}
	ctx := propagation.ContextWithSandbox(baggage.ContextWithBaggage(context.Background(), bag), s)
	ctx = codec.StripForeignContext(ctx)
	if got, ok := propagation.FromContext(ctx); !ok || got != s {
		t.Errorf("StripForeignContext took the sandbox: %+v, %v", got, ok)
	}
	got := baggage.FromContext(ctx)
	if got.Member("sd-routing-key").Key() != "" || got.Member("okteto-divert").Key() != "" || got.Member("sandbox.id").Value() != "feat-1" || got.Member("foo").Value() != "bar" {
		t.Errorf("StripForeignContext left baggage %q", got.String())
	}
	plain := context.Background()
	if codec.StripForeignContext(plain) != plain {
		t.Error("StripForeignContext of a context without baggage is not the context itself")
	}
	keep, err := propagation.NewCodec(propagation.KeepForeignRoutingKeys())
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{"Baggage": {"sd-routing-key=x"}}
	keep.StripForeign(otelprop.HeaderCarrier(h))
	if !strings.Contains(h.Get("Baggage"), "sd-routing-key") {
		t.Errorf("KeepForeignRoutingKeys: StripForeign removed %v", h)
	}
}
