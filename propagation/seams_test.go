package propagation_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	otelbaggage "go.opentelemetry.io/otel/baggage"
	otelprop "go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc/metadata"

	"github.com/sandboxkit/sandboxkit/propagation"
)

// TestReadLookalikes: every spelling of our keys that OpenTelemetry Go or a
// lenient W3C parser reads as ours is found (so it is stripped from
// untrusted sources) and unreadable (so a trusted source is refused).
func TestReadLookalikes(t *testing.T) {
	c := propagation.Default()
	for _, bag := range lookalikeSeeds {
		t.Run(bag, func(t *testing.T) {
			m, err := c.Read(otelprop.HeaderCarrier{"Baggage": {bag}})
			if !m.Found {
				t.Fatalf("Read(%q) found no markers", bag)
			}
			if err == nil {
				t.Fatalf("Read(%q) = %+v, want an error", bag, m.Sandbox)
			}
		})
	}
}

// TestReadHeaderKeys: an empty dedicated header and a header named as one
// of our baggage keys are markers that cannot be read, on every carrier.
func TestReadHeaderKeys(t *testing.T) {
	c := propagation.Default()
	for _, tc := range []struct {
		name    string
		carrier otelprop.TextMapCarrier
	}{
		{"http empty", otelprop.HeaderCarrier{"Sandbox-Id": {""}}},
		{"http blank", otelprop.HeaderCarrier{"Sandbox-Id": {" \t "}}},
		{"http nbsp", otelprop.HeaderCarrier{"Sandbox-Id": {"\u00a0"}}},
		{"http sandbox.id header disagreeing with the dedicated one", otelprop.HeaderCarrier{"Sandbox-Id": {"pr-1"}, "Sandbox.id": {"pr-2"}}},
		{"http sandbox.ticket header beside baggage", otelprop.HeaderCarrier{"Baggage": {"sandbox.id=pr-1"}, "Sandbox.ticket": {"v1.x"}}},
		{"metadata empty", valuesCarrier(metadata.Pairs("sandbox-id", ""))},
		{"metadata vertical tab", valuesCarrier(metadata.Pairs("sandbox-id", "\v"))},
		{"metadata sandbox.id key", valuesCarrier(metadata.Pairs("sandbox.id", "pr-1"))},
		{"map sandbox.actor key", otelprop.MapCarrier{"sandbox.actor": "alice"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := c.Read(tc.carrier)
			if !m.Found || !errors.Is(err, propagation.ErrMalformed) && !errors.Is(err, propagation.ErrInvalidID) && !errors.Is(err, propagation.ErrConflict) {
				t.Fatalf("Read = %+v, %v; want found and unreadable", m, err)
			}
			c.Strip(tc.carrier)
			if m, err := c.Read(tc.carrier); m.Found || err != nil {
				t.Fatalf("after Strip: %+v, %v", m, err)
			}
		})
	}
}

// TestReadHTTPKeyHeaderAlone: in an http.Header, a header named as our ID
// key is a marker even with no other marker beside it (curl -H
// 'sandbox.id: pr-1' must not be served as production), and Strip removes
// it.
func TestReadHTTPKeyHeaderAlone(t *testing.T) {
	m, err := propagation.Default().Read(otelprop.HeaderCarrier{"Sandbox.id": {"pr-1"}})
	if !m.Found || !errors.Is(err, propagation.ErrMalformed) {
		t.Fatalf("Read = %+v, %v; want found and ErrMalformed", m, err)
	}
	h := otelprop.HeaderCarrier{"Sandbox-Id": {"pr-1"}, "Sandbox.id": {"pr-1"}}
	propagation.Default().Strip(h)
	if len(h) != 0 {
		t.Fatalf("Strip left %v", h)
	}
}

// valuesCarrier is gRPC metadata as a TextMapCarrier with Values and
// Delete, as grpcmw adapts it.
type valuesCarrier metadata.MD

func (c valuesCarrier) Get(k string) string {
	if v := metadata.MD(c).Get(k); len(v) > 0 {
		return v[0]
	}
	return ""
}
func (c valuesCarrier) Values(k string) []string { return metadata.MD(c).Get(k) }
func (c valuesCarrier) Set(k, v string)          { metadata.MD(c).Set(k, v) }
func (c valuesCarrier) Delete(k string)          { metadata.MD(c).Delete(k) }
func (c valuesCarrier) Keys() []string           { return nil }

// TestInjectDropsLookalikes: merging our sandbox into baggage that holds a
// lookalike member leaves OpenTelemetry (last duplicate wins) reading ours.
func TestInjectDropsLookalikes(t *testing.T) {
	c := propagation.Default()
	h := http.Header{"Baggage": {"a=1,\u00a0sandbox.id=pr-evil,+sandbox.actor=mallory,b=2"}}
	c.InjectSandbox(propagation.Sandbox{ID: "pr-1", Actor: "alice"}, otelprop.HeaderCarrier(h))
	b, err := otelbaggage.Parse(h.Get("Baggage"))
	if err != nil {
		t.Fatal(err)
	}
	if got := b.Member("sandbox.id").Value(); got != "pr-1" {
		t.Errorf("OpenTelemetry reads sandbox.id=%q in %q", got, h.Get("Baggage"))
	}
	if b.Member("+sandbox.actor").Key() != "" || b.Member("a").Value() != "1" || b.Member("b").Value() != "2" {
		t.Errorf("merge kept a lookalike or lost a foreign member: %q", h.Get("Baggage"))
	}
}

// TestForeignRoutingKeys: Signadot's and Okteto's keys are reported and
// stripped by default, kept with KeepForeignRoutingKeys, and ours with
// WithSignadot.
func TestForeignRoutingKeys(t *testing.T) {
	keep, err := propagation.NewCodec(propagation.KeepForeignRoutingKeys())
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []http.Header{
		{"Baggage": {"a=1,sd-routing-key=abc"}},
		{"Baggage": {"okteto-divert=cindy"}},
		{"Baggage": {"\u00a0okteto-divert=cindy"}},
		{"Uberctx-Sd-Routing-Key": {"abc"}},
		{"Ot-Baggage-Sd-Routing-Key": {"abc"}},
	} {
		if !propagation.Default().Foreign(otelprop.HeaderCarrier(h)) {
			t.Errorf("Foreign(%v) = false", h)
		}
		if keep.Foreign(otelprop.HeaderCarrier(h)) {
			t.Errorf("with KeepForeignRoutingKeys, Foreign(%v) = true", h)
		}
		kept := h.Clone()
		keep.Strip(otelprop.HeaderCarrier(kept))
		if len(kept) != len(h) {
			t.Errorf("KeepForeignRoutingKeys: Strip(%v) = %v", h, kept)
		}
		propagation.Default().Strip(otelprop.HeaderCarrier(h))
		if propagation.Default().Foreign(otelprop.HeaderCarrier(h)) {
			t.Errorf("after Strip, Foreign(%v) = true", h)
		}
	}
	if h := (http.Header{"Baggage": {"a=1"}}); propagation.Default().Foreign(otelprop.HeaderCarrier(h)) {
		t.Error("Foreign on foreign-free baggage")
	}
	sd, _ := propagation.NewCodec(propagation.WithSignadot())
	if sd.Foreign(otelprop.HeaderCarrier{"Baggage": {"sd-routing-key=pr-1"}}) {
		t.Error("WithSignadot: sd-routing-key is ours, not foreign")
	}
}

// getter is a carrier that is not an otelprop.HeaderCarrier, so the codec
// looks each name up through Get rather than reading the map.
type getter struct{ h http.Header }

func (g getter) Get(k string) string { return g.h.Get(k) }
func (g getter) Set(k, v string)     { g.h.Set(k, v) }
func (g getter) Keys() []string {
	var ks []string
	for k := range g.h {
		ks = append(ks, k)
	}
	return ks
}

// TestForeignSmallHeader: Foreign reads an http.Header of up to eight
// keys in one pass; it must answer as the lookups do, for every name it
// looks for, in a small header and a large one, and not count a name
// present without a value.
func TestForeignSmallHeader(t *testing.T) {
	keep, err := propagation.NewCodec(propagation.KeepForeignRoutingKeys())
	if err != nil {
		t.Fatal(err)
	}
	sd, err := propagation.NewCodec(propagation.WithSignadot(), propagation.WithHeader("X-Sandbox"))
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"Sandbox_id", "X_sandbox", propagation.SignadotJaegerHeader, propagation.SignadotDatadogHeader,
		strings.ReplaceAll(propagation.SignadotJaegerHeader, "-", "_"), strings.ReplaceAll(propagation.SignadotDatadogHeader, "-", "_"),
		"Sandbox-Id", "Sandbox.id", "Sd-Routing-Key", "Okteto-Divert", "Sandbox_ic", "Sandbox_idx", "Traceparent", "Baggage"}
	for _, c := range []*propagation.Codec{propagation.Default(), keep, sd} {
		for _, k := range c.KeyHeaders() {
			names = append(names, k, strings.ReplaceAll(k, "-", "_"))
		}
	}
	common := []string{"Traceparent", "Accept", "User-Agent", "Accept-Encoding", "Content-Type", "Authorization", "X-Request-Id", "Cookie", "Accept-Language", "Origin"}
	for _, c := range []*propagation.Codec{propagation.Default(), keep, sd} {
		for _, name := range names {
			for _, n := range []int{0, 3, 7, len(common)} {
				for _, v := range [][]string{{"pr-1"}, {}, {"a=1,sd-routing-key=pr-1"}} {
					h := http.Header{}
					for _, k := range common[:n] {
						h[k] = []string{"x"}
					}
					h[http.CanonicalHeaderKey(name)] = v
					want := c.Foreign(getter{h})
					if got := c.Foreign(otelprop.HeaderCarrier(h)); got != want {
						t.Errorf("codec %v: Foreign(%v) = %v on an http.Header, %v through Get", c.Fields(), h, got, want)
					}
				}
			}
		}
	}
	if !propagation.Default().Foreign(otelprop.HeaderCarrier{"Sandbox_id": {"pr-1"}}) {
		t.Error("Foreign misses Sandbox_id")
	}
}

// TestPropagatorCleansOTelBaggage: when our markers cannot be read, the
// Propagator composed after OpenTelemetry's Baggage propagator leaves no
// member of ours in the context's baggage, so nothing forwards it.
func TestPropagatorCleansOTelBaggage(t *testing.T) {
	prop := otelprop.NewCompositeTextMapPropagator(otelprop.Baggage{}, propagation.NewPropagator(nil))
	for _, h := range []http.Header{
		{"Sandbox-Id": {"pr-1"}, "Baggage": {"sandbox.id=pr-2,tenant=acme"}},
		{"Baggage": {"sandbox.id=pr-1,sandbox.id=pr-2,tenant=acme"}},
		{"Baggage": {"sandbox%2Eid=pr-2,tenant=acme"}},
		{"Sandbox-Id": {""}, "Baggage": {"sandbox.id=pr-2,tenant=acme"}},
	} {
		ctx := prop.Extract(context.Background(), otelprop.HeaderCarrier(h))
		if s, ok := propagation.FromContext(ctx); ok {
			t.Errorf("%v: sandbox %+v in context", h, s)
		}
		bag := otelbaggage.FromContext(ctx)
		if bag.Member("tenant").Value() != "acme" {
			t.Errorf("%v: foreign member lost: %v", h, bag)
		}
		out := http.Header{}
		prop.Inject(ctx, otelprop.HeaderCarrier(out))
		if ours := ourMembers(out.Get("Baggage")); len(ours) > 0 || out.Get("Sandbox-Id") != "" {
			t.Errorf("%v: forwarded %v", h, out)
		}
	}
}

// TestVerifierLifetimeAndSpelling: a ticket expiring beyond the maximum
// lifetime is invalid, and so is any spelling but the canonical one.
func TestVerifierLifetimeAndSpelling(t *testing.T) {
	key := propagation.Key{ID: "k1", Secret: []byte("0123456789abcdef0123456789abcdef")}
	signer, _ := propagation.NewSigner(key)
	v, _ := propagation.NewVerifier(key)
	now := time.Unix(1_800_000_000, 0)
	sb := propagation.Sandbox{ID: "pr-1", Actor: "alice"}

	day, _ := signer.SignUntil(sb, now.Add(24*time.Hour))
	if err := v.VerifyAt(sb, day, now); err != nil {
		t.Fatalf("24h ticket: %v", err)
	}
	long, _ := signer.SignUntil(sb, now.Add(100*365*24*time.Hour))
	if err := v.VerifyAt(sb, long, now); !errors.Is(err, propagation.ErrTicketInvalid) {
		t.Fatalf("100-year ticket: %v", err)
	}
	week, err := v.WithMaxLifetime(7 * 24 * time.Hour)
	if err != nil || week.MaxLifetime() != 7*24*time.Hour || v.MaxLifetime() != propagation.DefaultMaxTicketLifetime {
		t.Fatalf("WithMaxLifetime: %v", err)
	}
	twoDays, _ := signer.SignUntil(sb, now.Add(48*time.Hour))
	if err := week.VerifyAt(sb, twoDays, now); err != nil {
		t.Fatalf("48h ticket under a week's maximum: %v", err)
	}
	if err := v.VerifyAt(sb, twoDays, now); !errors.Is(err, propagation.ErrTicketInvalid) {
		t.Fatalf("48h ticket under the default maximum: %v", err)
	}
	if _, err := v.WithMaxLifetime(0); err == nil {
		t.Fatal("WithMaxLifetime(0) accepted")
	}

	// v1.k1.<exp>.<sig>
	parts := strings.Split(day, ".")
	exp, sig := parts[2], parts[3]
	last := sig[len(sig)-1]
	// The last character of a 32-byte signature carries 2 padding bits:
	// flipping them decodes to the same bytes in a lenient decoder.
	alt := strings.IndexByte(b64, last) ^ 1
	for name, tk := range map[string]string{
		"plus sign":     "v1.k1.+" + exp + "." + sig,
		"leading zero":  "v1.k1.0" + exp + "." + sig,
		"padding bits":  "v1.k1." + exp + "." + sig[:len(sig)-1] + string(b64[alt]),
		"padded base64": "v1.k1." + exp + "." + sig + "=",
	} {
		if err := v.VerifyAt(sb, tk, now); !errors.Is(err, propagation.ErrTicketInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

const b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// TestNoMarkerPathAllocs: baggage without our members costs no
// allocation, also when a '%' in a foreign value sends it through the
// full scan (a '%' may hide a percent-encoded key of ours).
func TestNoMarkerPathAllocs(t *testing.T) {
	c := propagation.Default()
	for _, bag := range []string{
		"userid=alice,tenant=acme",
		"userid=alice%40example.com,tenant=acme,region=eu-west-1",
		"k=v;p=%41,a=1",
	} {
		h := otelprop.HeaderCarrier{"Baggage": {bag}}
		if n := testing.AllocsPerRun(100, func() {
			if m, err := c.Read(h); m.Found || err != nil {
				t.Fatalf("Read(%q) = %+v, %v", bag, m, err)
			}
		}); n != 0 {
			t.Errorf("Read(%q): %v allocations; want 0", bag, n)
		}
	}
}

// TestMentionsFindsKeyText: the cheap test finds our key's text wherever it
// is, whatever surrounds it, and for codecs whose keys share no prefix.
func TestMentionsFindsKeyText(t *testing.T) {
	short, err := propagation.NewCodec(propagation.WithBaggageKeys("sid", "sact", "sorig"), propagation.WithTicketKey("tk"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		c   *propagation.Codec
		bag string
	}{
		{propagation.Default(), "sandbox.id=pr-1"},
		{propagation.Default(), "a.b=1.2.3,x=sandbox.,\u00a0sandbox.id=pr-1"},
		{propagation.Default(), "a=...,b=.sandbox,sandbox.id=pr-1"},
		{short, "a=1,\u00a0sid=pr-1"},
		{short, "a=1,tk=v1"},
	} {
		if m, _ := tc.c.Read(otelprop.HeaderCarrier{"Baggage": {tc.bag}}); !m.Found {
			t.Errorf("Read(%q) found no markers", tc.bag)
		}
	}
}
