package httpmw_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	otelbaggage "go.opentelemetry.io/otel/baggage"
	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/httpmw"
	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestAttackBehindOTelOnLoopback sends attack headers byte for byte to a
// real loopback server running the middleware behind otelhttp with the
// README's propagators, from an untrusted peer. Whatever the bytes, the
// handler must not run in a sandbox, and neither its OpenTelemetry
// baggage nor what an otelhttp client would send on may hold one of our
// keys (stripped, with an audit record) — unless the request was refused.
func TestAttackBehindOTelOnLoopback(t *testing.T) {
	plus := must(propagation.NewCodec(propagation.WithBaggageKeys("a+b", "xx.yx", "kk"), propagation.WithTicketKey("zz")))
	for _, tc := range []struct {
		name  string
		c     *propagation.Codec
		extra [][]string
	}{
		{"default", propagation.Default(), nil},
		{"plus", plus, [][]string{
			{"Baggage: \u00a0a+b=pr-1"},
			{"Baggage: k=v,a+b\u3000=pr-1"},
			{"Baggage: a%2Bb=pr-1"},
			{"Baggage: a+b=pr-1"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { attackBehindOTel(t, tc.c, tc.extra) })
	}
}

func attackBehindOTel(t *testing.T, c *propagation.Codec, extra [][]string) {
	keys := c.Keys()
	type report struct {
		Sandbox string   `json:"sandbox"`
		Ctx     []string `json:"ctx"`
		Out     []string `json:"out"`
	}
	var mu sync.Mutex
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		var rep report
		s, _ := propagation.FromContext(r.Context())
		rep.Sandbox = s.ID
		for _, m := range otelbaggage.FromContext(r.Context()).Members() {
			if slices.Contains(keys, m.Key()) {
				rep.Ctx = append(rep.Ctx, m.Key()+"="+m.Value())
			}
		}
		out := http.Header{}
		otelprop.Baggage{}.Inject(r.Context(), otelprop.HeaderCarrier(out))
		// What the next hop's OpenTelemetry reads of our keys.
		next := otelprop.Baggage{}.Extract(r.Context(), otelprop.HeaderCarrier(out))
		for _, m := range otelbaggage.FromContext(next).Members() {
			if slices.Contains(keys, m.Key()) {
				rep.Out = append(rep.Out, m.Key()+"="+m.Value())
			}
		}
		json.NewEncoder(w).Encode(rep)
	})
	props := otelprop.NewCompositeTextMapPropagator(otelprop.TraceContext{}, otelprop.Baggage{}, propagation.NewPropagator(c))
	mw := must(httpmw.NewHandler(inner, httpmw.WithCodec(c), httpmw.WithTrustedNetworks(netip.MustParsePrefix("10.0.0.0/8"))))
	srv := httptest.NewServer(otelhttp.NewHandler(mw, "svc", otelhttp.WithPropagators(props)))
	defer srv.Close()

	var attacks [][]string
	for off := 0; off <= 17; off++ {
		pad := strings.Repeat("a", off)
		for _, fill := range []string{"", "\x80\x80\x80\x80\x80\x80\x80\x80", "\xff\xfe\xfd\xfc\xfb\xfa\xf9", "\xc2\xa0"} {
			attacks = append(attacks,
				[]string{"Baggage: " + pad + "=1," + fill + "sandbox.id=pr-1"},
				[]string{"Baggage: k" + fill + pad + "," + "sandbox.id=pr-1"},
				[]string{"Baggage: " + pad + "=1", "Baggage: " + fill + " sandbox.id=pr-1"},
				[]string{"baggage: " + pad + "=1," + "sandbox.id=pr-1", "X-A: 1", "X-B: 1", "X-C: 1", "X-D: 1", "X-E: 1", "X-F: 1", "X-G: 1", "X-H: 1"},
				[]string{"BAGGAGE: \u2003sandbox.id=pr-1" + fill},
			)
		}
	}
	attacks = append(attacks,
		[]string{"Baggage: a=b,", "Baggage: sandbox.id=pr-1"},
		[]string{"Baggage: sandbox", "Baggage: .id=pr-1"},
		[]string{"Baggage: a=b", " sandbox.id=pr-1"}, // obs-fold
		[]string{"Baggage: %73andbox.id=pr-1"},
		[]string{"Baggage: sandbox%2Eid=pr-1"},
		[]string{"Baggage: \u00a0sandbox.id\u00a0=pr-1"},
		[]string{"Baggage: sandbox.id=pr-1;p=1"},
		[]string{"Baggage: sandbox.id=" + strings.Repeat("x", 60) + ""},
		[]string{"Baggage: " + strings.Repeat("k=v,", 300) + "sandbox.id=pr-1"},
		[]string{"Baggage: sandbox.id=pr-1", "Sandbox-Id: pr-2"},
		[]string{"Uberctx-Sandbox.id: pr-1"},
		[]string{"Sandbox_Id: pr-1"},
		[]string{"Baggage: sandbox.actor=mallory"},
	)
	attacks = append(attacks, extra...)
	for i, a := range attacks {
		resp := sendRaw(t, srv, a)
		if resp.status == http.StatusBadRequest {
			continue // refused: nothing reached the handler
		}
		if resp.status != http.StatusOK {
			t.Fatalf("attack %d %q: status %d %s", i, a, resp.status, resp.body)
		}
		var rep report
		if err := json.Unmarshal([]byte(resp.body), &rep); err != nil {
			t.Fatalf("attack %d: %v in %q", i, err, resp.body)
		}
		if rep.Sandbox != "" || len(rep.Ctx) > 0 || len(rep.Out) > 0 {
			t.Errorf("attack %d %q from an untrusted peer: handler in sandbox %q, context baggage %v, sent on %v",
				i, fmt.Sprint(a), rep.Sandbox, rep.Ctx, rep.Out)
		}
	}
	t.Logf("%d attacks", len(attacks))
}

// TestLatin1SpaceKeyStrippedOnLoopback: the raw byte 0xA0 before our key
// reaches the handler through Go's HTTP server as it was sent; a Node.js
// hop further on reads it as U+00A0, which OpenTelemetry JS trims, and
// then reads sandbox.id. From an untrusted peer the member must be gone
// from the request the handler (and so any proxy or client) sees.
func TestLatin1SpaceKeyStrippedOnLoopback(t *testing.T) {
	mw := must(httpmw.NewHandler(echo("svc"), httpmw.WithTrustedNetworks(netip.MustParsePrefix("10.0.0.0/8"))))
	srv := httptest.NewServer(mw)
	defer srv.Close()
	for _, h := range []string{"Baggage: k=v,\xa0sandbox.id=pr-1", "Baggage: k=v,sandbox.id\xa0=pr-1", "Baggage: k=v,\x85sandbox.id=pr-1"} {
		resp := sendRaw(t, srv, []string{h})
		if resp.status != http.StatusOK {
			t.Fatalf("%q: status %d %s", h, resp.status, resp.body)
		}
		var s struct {
			Sandbox string   `json:"sandbox"`
			Baggage []string `json:"baggage"`
		}
		if err := json.Unmarshal([]byte(resp.body), &s); err != nil {
			t.Fatal(err)
		}
		if s.Sandbox != "" || strings.Contains(strings.Join(s.Baggage, ","), "sandbox") {
			t.Errorf("%q from an untrusted peer: handler saw sandbox %q, baggage %q", h, s.Sandbox, s.Baggage)
		}
	}
}
