package propagation_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	otelbaggage "go.opentelemetry.io/otel/baggage"
	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/propagation"
)

func header(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func TestReadHTTP(t *testing.T) {
	long := strings.Repeat("x", 8200)
	many := make([]string, 70)
	for i := range many {
		many[i] = "k" + string(rune('a'+i%26)) + strings.Repeat("z", i/26) + "=v"
	}
	tests := []struct {
		name    string
		h       http.Header
		want    propagation.Sandbox
		found   bool
		ticket  string
		wantErr error
	}{
		{name: "none", h: header()},
		{name: "foreign baggage only", h: header("baggage", "userid=alice,tenant=acme")},
		{name: "dedicated header", h: header("Sandbox-Id", "pr-42"), want: propagation.Sandbox{ID: "pr-42"}, found: true},
		{name: "header name case", h: http.Header{"Sandbox-Id": {"pr-42"}}, want: propagation.Sandbox{ID: "pr-42"}, found: true},
		{name: "baggage only", h: header("baggage", "sandbox.id=pr-42,sandbox.actor=alice"), want: propagation.Sandbox{ID: "pr-42", Actor: "alice"}, found: true},
		{name: "both agree", h: header("Sandbox-Id", "pr-42", "baggage", "a=1, sandbox.id = pr-42 ;prop=1, sandbox.origin=PR%2042"),
			want: propagation.Sandbox{ID: "pr-42", Origin: "PR 42"}, found: true},
		{name: "percent-encoded actor", h: header("baggage", "sandbox.id=pr-42,sandbox.actor=alice%40example.com"), want: propagation.Sandbox{ID: "pr-42", Actor: "alice@example.com"}, found: true},
		{name: "ticket", h: header("baggage", "sandbox.id=pr-42,sandbox.ticket=v1.k.1.sig"), want: propagation.Sandbox{ID: "pr-42"}, found: true, ticket: "v1.k.1.sig"},
		{name: "ours among bad foreign members", h: header("baggage", "=broken,;;,key without value,sandbox.id=pr-7,\x01weird=\x02"), want: propagation.Sandbox{ID: "pr-7"}, found: true},
		{name: "ours on second header line", h: header("baggage", "a=1", "baggage", "sandbox.id=pr-7"), want: propagation.Sandbox{ID: "pr-7"}, found: true},
		{name: "same id twice", h: header("Sandbox-Id", "pr-7", "Sandbox-Id", "pr-7"), want: propagation.Sandbox{ID: "pr-7"}, found: true},
		{name: "oversized foreign baggage is not ours", h: header("baggage", "big="+long)},
		{name: "too many foreign members is not ours", h: header("baggage", strings.Join(many, ","))},

		{name: "header vs baggage", h: header("Sandbox-Id", "pr-1", "baggage", "sandbox.id=pr-2"), found: true, wantErr: propagation.ErrConflict},
		{name: "two header values", h: header("Sandbox-Id", "pr-1", "Sandbox-Id", "pr-2"), found: true, wantErr: propagation.ErrConflict},
		{name: "comma-joined header", h: header("Sandbox-Id", "pr-1, pr-2"), found: true, wantErr: propagation.ErrInvalidID},
		{name: "two baggage ids", h: header("baggage", "sandbox.id=pr-1,sandbox.id=pr-2"), found: true, wantErr: propagation.ErrConflict},
		{name: "two baggage lines disagree", h: header("baggage", "sandbox.id=pr-1", "baggage", "sandbox.id=pr-2"), found: true, wantErr: propagation.ErrConflict},
		{name: "upper case id", h: header("Sandbox-Id", "PR-42"), found: true, wantErr: propagation.ErrInvalidID},
		{name: "underscore", h: header("Sandbox-Id", "pr_42"), found: true, wantErr: propagation.ErrInvalidID},
		{name: "leading hyphen", h: header("Sandbox-Id", "-pr"), found: true, wantErr: propagation.ErrInvalidID},
		{name: "too long", h: header("Sandbox-Id", strings.Repeat("a", 64)), found: true, wantErr: propagation.ErrInvalidID},
		{name: "encoded newline in id", h: header("baggage", "sandbox.id=pr%0A42"), found: true, wantErr: propagation.ErrInvalidID},
		{name: "encoded upper case id", h: header("baggage", "sandbox.id=%50R-1"), found: true, wantErr: propagation.ErrInvalidID},
		{name: "bad escape", h: header("baggage", "sandbox.id=pr-1%G1"), found: true, wantErr: propagation.ErrMalformed},
		{name: "truncated escape", h: header("baggage", "sandbox.id=pr-1%4"), found: true, wantErr: propagation.ErrMalformed},
		{name: "member without value", h: header("baggage", "sandbox.id"), found: true, wantErr: propagation.ErrMalformed},
		{name: "member with property only", h: header("baggage", "sandbox.id;p=1"), found: true, wantErr: propagation.ErrMalformed},
		{name: "empty value", h: header("baggage", "sandbox.id="), found: true, wantErr: propagation.ErrMalformed},
		{name: "actor without id", h: header("baggage", "sandbox.actor=alice"), found: true, wantErr: propagation.ErrMalformed},
		{name: "control char actor", h: header("baggage", "sandbox.id=pr-1,sandbox.actor=a%07b"), found: true, wantErr: propagation.ErrInvalidActor},
		{name: "long origin", h: header("baggage", "sandbox.id=pr-1,sandbox.origin="+strings.Repeat("o", 300)), found: true, wantErr: propagation.ErrInvalidOrigin},
		{name: "ours in oversized baggage", h: header("baggage", "big="+long+",sandbox.id=pr-1"), found: true, wantErr: propagation.ErrBaggageLimit},
		{name: "ours over byte limit across lines", h: header("baggage", "big="+long[:5000], "baggage", "big2="+long[:3200]+",sandbox.id=pr-1"), found: true, wantErr: propagation.ErrBaggageLimit},
		{name: "ours as 65th member", h: header("baggage", strings.Join(many[:64], ",")+",sandbox.id=pr-1"), found: true, wantErr: propagation.ErrBaggageLimit},
		{name: "ours with header and oversized baggage", h: header("Sandbox-Id", "pr-1", "baggage", "big="+long+",sandbox.actor=x"), found: true, wantErr: propagation.ErrBaggageLimit},
	}
	c := propagation.Default()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := c.Read(otelprop.HeaderCarrier(tt.h))
			if m.Found != tt.found {
				t.Errorf("Found = %v, want %v", m.Found, tt.found)
			}
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				ctx, err := c.Extract(context.Background(), otelprop.HeaderCarrier(tt.h))
				if err == nil {
					t.Fatal("strict Extract returned no error")
				}
				if _, ok := propagation.FromContext(ctx); ok {
					t.Fatal("strict Extract put a sandbox in the context despite the error")
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if m.Sandbox != tt.want || m.Ticket != tt.ticket {
				t.Fatalf("got %+v ticket %q, want %+v ticket %q", m.Sandbox, m.Ticket, tt.want, tt.ticket)
			}
			ctx, err := c.Extract(context.Background(), otelprop.HeaderCarrier(tt.h))
			if err != nil {
				t.Fatal(err)
			}
			got, ok := propagation.FromContext(ctx)
			if ok != tt.found || got != tt.want {
				t.Fatalf("FromContext = %+v, %v; want %+v, %v", got, ok, tt.want, tt.found)
			}
		})
	}
}

func TestCompatKeys(t *testing.T) {
	h := header("baggage", "sd-routing-key=abc123,okteto-divert=dev-ns")
	m, err := propagation.Default().Read(otelprop.HeaderCarrier(h))
	if err != nil || m.Found {
		t.Fatalf("default codec read compatibility keys: %+v, %v", m, err)
	}

	sd, err := propagation.NewCodec(propagation.WithSignadot())
	if err != nil {
		t.Fatal(err)
	}
	m, err = sd.Read(otelprop.HeaderCarrier(header("baggage", "sd-routing-key=abc123")))
	if err != nil || m.Sandbox.ID != "abc123" {
		t.Fatalf("signadot: %+v, %v", m, err)
	}
	if _, err := sd.Read(otelprop.HeaderCarrier(header("baggage", "sd-routing-key=abc123", "Sandbox-Id", "pr-1"))); !errors.Is(err, propagation.ErrConflict) {
		t.Fatalf("signadot key disagreeing with header: err = %v", err)
	}
	if m, err := sd.Read(otelprop.HeaderCarrier(header("baggage", "sd-routing-key=pr-1,sandbox.id=pr-1"))); err != nil || m.Sandbox.ID != "pr-1" {
		t.Fatalf("agreeing keys: %+v, %v", m, err)
	}

	ok, err := propagation.NewCodec(propagation.WithOkteto())
	if err != nil {
		t.Fatal(err)
	}
	m, err = ok.Read(otelprop.HeaderCarrier(h))
	if err != nil || m.Sandbox.ID != "dev-ns" {
		t.Fatalf("okteto: %+v, %v", m, err)
	}
	if _, err := ok.Read(otelprop.HeaderCarrier(header("baggage", "okteto-divert=Bad_NS"))); !errors.Is(err, propagation.ErrInvalidID) {
		t.Fatalf("invalid okteto value: err = %v", err)
	}
}

func TestCustomNames(t *testing.T) {
	c, err := propagation.NewCodec(propagation.WithHeader("X-Env"), propagation.WithBaggageKeys("env.id", "env.actor", "env.origin"))
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	ctx := propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "pr-1", Actor: "bob"})
	c.Inject(ctx, otelprop.HeaderCarrier(h))
	if h.Get("X-Env") != "pr-1" || h.Get("Sandbox-Id") != "" || h.Get("baggage") != "env.id=pr-1,env.actor=bob" {
		t.Fatalf("headers = %v", h)
	}
	m, err := c.Read(otelprop.HeaderCarrier(h))
	if err != nil || m.Sandbox != (propagation.Sandbox{ID: "pr-1", Actor: "bob"}) {
		t.Fatalf("read back %+v, %v", m, err)
	}

	bagOnly, err := propagation.NewCodec(propagation.WithHeader(""))
	if err != nil {
		t.Fatal(err)
	}
	h = http.Header{}
	bagOnly.Inject(ctx, otelprop.HeaderCarrier(h))
	if len(h) != 1 || h.Get("baggage") == "" {
		t.Fatalf("header disabled, got %v", h)
	}

	for _, opts := range [][]propagation.Option{
		{propagation.WithHeader("bad header")},
		{propagation.WithHeader("baggage")},
		{propagation.WithBaggageKeys("a", "a", "b")},
		{propagation.WithBaggageKeys("", "a", "b")},
		{propagation.WithTicketKey("sandbox.id")},
	} {
		if _, err := propagation.NewCodec(opts...); err == nil {
			t.Errorf("NewCodec(%v) accepted an invalid configuration", opts)
		}
	}
}

func TestInjectMergesBaggage(t *testing.T) {
	c := propagation.Default()
	h := header("baggage", "userid=alice,sandbox.id=old-one,sandbox.actor=mallory", "baggage", "tenant=acme;p=1")
	ctx := propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "pr-42", Actor: "alice smith", Origin: "PR#42,x;y"})
	c.Inject(ctx, otelprop.HeaderCarrier(h))

	if got := h.Get("Sandbox-Id"); got != "pr-42" {
		t.Fatalf("Sandbox-Id = %q", got)
	}
	if n := len(h.Values("baggage")); n != 1 {
		t.Fatalf("%d baggage lines, want 1", n)
	}
	bag, err := otelbaggage.Parse(h.Get("baggage"))
	if err != nil {
		t.Fatalf("OpenTelemetry cannot parse our baggage %q: %v", h.Get("baggage"), err)
	}
	want := map[string]string{"userid": "alice", "tenant": "acme", "sandbox.id": "pr-42", "sandbox.actor": "alice smith", "sandbox.origin": "PR#42,x;y"}
	if bag.Len() != len(want) {
		t.Fatalf("baggage %q has %d members, want %d", h.Get("baggage"), bag.Len(), len(want))
	}
	for k, v := range want {
		if got := bag.Member(k).Value(); got != v {
			t.Errorf("member %s = %q, want %q", k, got, v)
		}
	}
	if p := bag.Member("tenant").Properties(); len(p) != 1 || p[0].Key() != "p" {
		t.Errorf("tenant lost its property: %v", p)
	}
	m, err := c.Read(otelprop.HeaderCarrier(h))
	if err != nil || m.Sandbox.ID != "pr-42" || m.Sandbox.Origin != "PR#42,x;y" {
		t.Fatalf("read back %+v, %v", m, err)
	}
}

func TestInjectWithoutSandbox(t *testing.T) {
	h := header("baggage", "a=1")
	c := propagation.Default()
	allocs := testing.AllocsPerRun(100, func() { c.Inject(context.Background(), otelprop.HeaderCarrier(h)) })
	if allocs != 0 {
		t.Errorf("Inject without a sandbox: %v allocs, want 0", allocs)
	}
	if len(h) != 1 || h.Get("baggage") != "a=1" {
		t.Fatalf("headers changed: %v", h)
	}
}

func TestStrip(t *testing.T) {
	c := propagation.Default()
	h := header("Sandbox-Id", "pr-1", "baggage", "a=1,sandbox.id=pr-1,sandbox.ticket=x", "baggage", "sandbox.actor=eve, b=2;q")
	c.Strip(otelprop.HeaderCarrier(h))
	if _, ok := h["Sandbox-Id"]; ok {
		t.Error("dedicated header not removed")
	}
	if got := h.Get("baggage"); got != "a=1,b=2;q" {
		t.Errorf("baggage = %q, want a=1,b=2;q", got)
	}
	if m, err := c.Read(otelprop.HeaderCarrier(h)); err != nil || m.Found {
		t.Errorf("markers remain: %+v, %v", m, err)
	}

	h = header("baggage", "sandbox.id=pr-1")
	c.Strip(otelprop.HeaderCarrier(h))
	if _, ok := h["Baggage"]; ok {
		t.Errorf("empty baggage header left: %v", h)
	}

	mc := otelprop.MapCarrier{"sandbox-id": "pr-1", "baggage": "sandbox.id=pr-1,k=v"}
	c.Strip(mc)
	if mc["sandbox-id"] != "" || mc["baggage"] != "k=v" {
		t.Errorf("map carrier after strip: %v", mc)
	}
}

func TestMapCarrierRoundTrip(t *testing.T) {
	// The generic path used by carriers other than http.Header: lower-case
	// keys, one value per key.
	c := propagation.Default()
	s := propagation.Sandbox{ID: "feat-x", Actor: "Zoë", Origin: "session 7"}
	mc := otelprop.MapCarrier{}
	c.Inject(propagation.ContextWithSandbox(context.Background(), s), mc)
	if mc["sandbox-id"] != "feat-x" {
		t.Fatalf("carrier = %v", mc)
	}
	ctx, err := c.Extract(context.Background(), mc)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := propagation.FromContext(ctx); got != s {
		t.Fatalf("got %+v, want %+v", got, s)
	}
}

func TestBaggageMirror(t *testing.T) {
	c, err := propagation.NewCodec(propagation.WithBaggageMirror())
	if err != nil {
		t.Fatal(err)
	}
	base := otelbaggage.ContextWithBaggage(context.Background(), mustBaggage(t, "userid=alice,sandbox.id=stale"))
	ctx, err := c.Extract(base, otelprop.HeaderCarrier(header("Sandbox-Id", "pr-9")))
	if err != nil {
		t.Fatal(err)
	}
	bag := otelbaggage.FromContext(ctx)
	if bag.Member("sandbox.id").Value() != "pr-9" || bag.Member("userid").Value() != "alice" {
		t.Fatalf("mirrored baggage = %v", bag)
	}
	// OpenTelemetry's own Baggage propagator now carries the sandbox.
	h := http.Header{}
	otelprop.Baggage{}.Inject(ctx, otelprop.HeaderCarrier(h))
	m, err := propagation.Default().Read(otelprop.HeaderCarrier(h))
	if err != nil || m.Sandbox.ID != "pr-9" {
		t.Fatalf("after Baggage{}.Inject: %+v, %v (header %v)", m, err, h)
	}

	// Off by default.
	ctx, _ = propagation.Default().Extract(context.Background(), otelprop.HeaderCarrier(header("Sandbox-Id", "pr-9")))
	if otelbaggage.FromContext(ctx).Len() != 0 {
		t.Fatal("default codec mirrored into OTel baggage")
	}
}

func mustBaggage(t *testing.T, s string) otelbaggage.Baggage {
	t.Helper()
	b, err := otelbaggage.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestReadAllocs(t *testing.T) {
	c := propagation.Default()
	cases := map[string]struct {
		h    http.Header
		want float64
	}{
		"no headers":      {http.Header{}, 0},
		"foreign baggage": {header("baggage", "userid=alice,tenant=acme,region=eu,tier=gold,flag=on"), 0},
		"sandbox":         {header("Sandbox-Id", "pr-42", "baggage", "userid=alice,sandbox.id=pr-42,sandbox.actor=alice"), 0},
	}
	for name, tc := range cases {
		got := testing.AllocsPerRun(200, func() {
			if _, err := c.Read(otelprop.HeaderCarrier(tc.h)); err != nil {
				t.Fatal(err)
			}
		})
		if got > tc.want {
			t.Errorf("%s: Read allocates %v, want %v", name, got, tc.want)
		}
	}
	h := header("Sandbox-Id", "pr-42")
	got := testing.AllocsPerRun(200, func() {
		if _, err := c.Extract(context.Background(), otelprop.HeaderCarrier(h)); err != nil {
			t.Fatal(err)
		}
	})
	if got > 1 {
		t.Errorf("Extract with a sandbox allocates %v, want at most 1", got)
	}
}

func TestInjectReplacesStaleTicketAndCompat(t *testing.T) {
	c, err := propagation.NewCodec(propagation.WithSignadot())
	if err != nil {
		t.Fatal(err)
	}
	h := header("baggage", "sandbox.ticket=v1.k1.1.sig,sd-routing-key=pr-1,foo=bar")
	c.Inject(propagation.ContextWithSandbox(context.Background(), propagation.Sandbox{ID: "pr-2"}), otelprop.HeaderCarrier(h))
	m, err := c.Read(otelprop.HeaderCarrier(h))
	if err != nil || m.Sandbox.ID != "pr-2" || m.Ticket != "" {
		t.Fatalf("after inject: %+v, %v (baggage %q)", m, err, h.Get("baggage"))
	}
	if !strings.Contains(h.Get("baggage"), "foo=bar") {
		t.Fatalf("foreign member lost: %q", h.Get("baggage"))
	}
}

func TestStripContext(t *testing.T) {
	c := propagation.Default()
	ctx := otelbaggage.ContextWithBaggage(context.Background(), mustBaggage(t, "userid=alice,sandbox.id=pr-1,sandbox.actor=eve"))
	ctx = propagation.ContextWithSandbox(ctx, propagation.Sandbox{ID: "pr-1"})
	out := c.StripContext(ctx)
	if _, ok := propagation.FromContext(out); ok {
		t.Fatal("sandbox survived StripContext")
	}
	bag := otelbaggage.FromContext(out)
	if bag.Len() != 1 || bag.Member("userid").Value() != "alice" {
		t.Fatalf("baggage after StripContext: %v", bag)
	}
	// What an OTel-only client would now send on carries no marker.
	h := http.Header{}
	otelprop.Baggage{}.Inject(out, otelprop.HeaderCarrier(h))
	if m, err := c.Read(otelprop.HeaderCarrier(h)); err != nil || m.Found {
		t.Fatalf("markers after StripContext: %+v %v", m, err)
	}
	bg := context.Background()
	if c.StripContext(bg) != bg {
		t.Fatal("StripContext wrapped a clean context")
	}
}

// TestQuiet checks the cheap test middleware runs first: it may only say
// "nothing to act on" when Read finds no markers and Foreign reports
// nothing, wherever our keys' text sits in baggage (inside or across the
// eight-byte words it reads, in the overlapping last word, in a value
// shorter than a word) and in headers of every size.
func TestQuiet(t *testing.T) {
	c := propagation.Default()
	pad := func(n int) string { return strings.Repeat("x", n) }
	var loud []http.Header
	for _, key := range []string{"sandbox.id=pr-1", "s a n d b o x . id=pr-1", "\u00a0sandbox.id=pr-1", "%73andbox.id=pr-1", "sd-routing-key=k", "okteto-divert=d", "sandbox.actor=a"} {
		for n := range 17 {
			loud = append(loud,
				http.Header{"Baggage": {pad(n) + "=1," + key}},
				http.Header{"Baggage": {key + "," + pad(n) + "=1"}},
				http.Header{"Baggage": {"a=" + pad(n), key}})
		}
	}
	many := func(extra string) http.Header {
		h := http.Header{}
		for i := range 12 {
			h["X-Pad-"+strings.Repeat("a", i)] = []string{"v"}
		}
		h[extra] = []string{"pr-1"}
		return h
	}
	for _, name := range []string{"Sandbox-Id", "Sandbox.id", "Uberctx-Sandbox.id", "Ot-Baggage-Sandbox.id", "Sandbox_id", "Uberctx-Sd-Routing-Key"} {
		loud = append(loud, http.Header{name: {"pr-1"}}, http.Header{name: nil}, many(name))
	}
	for _, h := range loud {
		if c.Quiet(h) {
			t.Errorf("Quiet(%q) = true; want false", h)
		}
	}
	// One-byte keys: a key may start in the last bytes of a line.
	short, err := propagation.NewCodec(propagation.WithBaggageKeys("i", "a", "o"), propagation.WithTicketKey("t"))
	if err != nil {
		t.Fatal(err)
	}
	for n := range 17 {
		h := http.Header{"Baggage": {"x" + pad(n) + "=1,i=pr-1"}}
		if short.Quiet(h) {
			t.Errorf("short keys: Quiet(%q) = true; want false", h)
		}
		if m, _ := short.Read(otelprop.HeaderCarrier(h)); !m.Found {
			t.Errorf("short keys: Read(%q) finds no markers", h)
		}
	}
	for _, h := range []http.Header{
		{},
		{"Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}},
		{"Baggage": {"tenant=acme,region=eu-west-1"}},
		{"Baggage": {"a=b"}},
		many("X-Other"),
	} {
		if !c.Quiet(h) {
			t.Errorf("Quiet(%q) = false; want true", h)
		}
		if m, err := c.Read(otelprop.HeaderCarrier(h)); m.Found || err != nil {
			t.Errorf("Read(%q) = %+v, %v", h, m, err)
		}
	}
}
