package propagation_test

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"unicode"

	otelbaggage "go.opentelemetry.io/otel/baggage"
	otelprop "go.opentelemetry.io/otel/propagation"

	"github.com/sandboxkit/sandboxkit/propagation"
)

var sentinels = []error{
	propagation.ErrInvalidID, propagation.ErrInvalidActor, propagation.ErrInvalidOrigin,
	propagation.ErrConflict, propagation.ErrMalformed, propagation.ErrBaggageLimit,
}

// FuzzExtract feeds arbitrary dedicated-header and baggage values to the
// strict extractor. Properties: it never panics; an error wraps one of the
// sentinels and leaves no sandbox; a success yields a valid sandbox that
// survives Inject → Extract unchanged, with every foreign member kept.
func FuzzExtract(f *testing.F) {
	f.Add("", "")
	f.Add("pr-42", "")
	f.Add("", "sandbox.id=pr-42,sandbox.actor=alice%20b,userid=x;p")
	f.Add("pr-42", "sandbox.id=pr-43")
	f.Add("", "sandbox.id=%zz")
	f.Add("", ",,=,sandbox.origin=o,sandbox.id=a")
	f.Add("a", "k=v;sandbox.id=b")
	f.Fuzz(func(t *testing.T, hdr, bag string) {
		h := http.Header{}
		if hdr != "" {
			h.Set("Sandbox-Id", hdr)
		}
		if bag != "" {
			h.Set("Baggage", bag)
		}
		c := propagation.Default()
		ctx, err := c.Extract(context.Background(), otelprop.HeaderCarrier(h))
		s, ok := propagation.FromContext(ctx)
		if err != nil {
			if ok {
				t.Fatalf("error %v but sandbox %+v in context", err, s)
			}
			known := false
			for _, e := range sentinels {
				known = known || errors.Is(err, e)
			}
			if !known {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			return
		}
		if !ok {
			return
		}
		if verr := s.Validate(); verr != nil {
			t.Fatalf("extracted invalid sandbox %+v: %v", s, verr)
		}
		out := http.Header{}
		c.Inject(ctx, otelprop.HeaderCarrier(out))
		ctx2, err := c.Extract(context.Background(), otelprop.HeaderCarrier(out))
		if err != nil {
			t.Fatalf("re-extract of %v: %v", out, err)
		}
		if s2, _ := propagation.FromContext(ctx2); s2 != s {
			t.Fatalf("round trip changed %+v into %+v", s, s2)
		}
		// Merging into the original baggage keeps the sandbox readable.
		merged := h.Clone()
		c.Inject(ctx, otelprop.HeaderCarrier(merged))
		m, err := c.Read(otelprop.HeaderCarrier(merged))
		if err != nil || m.Sandbox != s {
			t.Fatalf("inject into original headers %v: got %+v, %v", merged, m.Sandbox, err)
		}
	})
}

// FuzzSandboxRoundTrip checks that every valid sandbox survives the codec.
func FuzzSandboxRoundTrip(f *testing.F) {
	f.Add("pr-42", "alice", "PR 42")
	f.Add("a", "Zoë, \"the\" boss; ok\\", "%41%")
	f.Fuzz(func(t *testing.T, id, actor, origin string) {
		s := propagation.Sandbox{ID: id, Actor: actor, Origin: origin}
		if s.Validate() != nil {
			return
		}
		for _, c := range []*propagation.Codec{propagation.Default()} {
			mc := otelprop.MapCarrier{}
			c.InjectSandbox(s, mc)
			m, err := c.Read(mc)
			if err != nil || m.Sandbox != s {
				t.Fatalf("%+v → %v → %+v, %v", s, mc, m.Sandbox, err)
			}
		}
	})
}

// lookalikeSeeds are baggage values that some parser reads as carrying our
// keys under another spelling: the cases of issue 13 and their cousins.
var lookalikeSeeds = []string{
	"\u00a0sandbox.id=pr-1",
	"sandbox.id\u00a0=pr-1",
	"\u2003sandbox.id=pr-1,sandbox.id=pr-2",
	"sandbox.id=pr-1,\u00a0sandbox.id=pr-2",
	"\vsandbox.id=pr-1",
	"\fsandbox.id=pr-1",
	"\r\nsandbox.id=pr-1",
	"\ufeffsandbox.id=pr-1",
	"\u0085sandbox.id=pr-1",
	"sandbox%2Eid=pr-1",
	"sandbox%252eid=pr-1",
	"+sandbox.id+=pr-1",
	"%20sandbox.id=pr-1",
	"sandbox.id=pr-1;bad prop",
	"sandbox.id=pr-1\u00a0",
	"sandbox.id= pr-1\v",
	"sandbox.id=pr-1,sandbox.id=pr-2",
	"userid=alice,sandbox.actor=a%zz",
	"sandbox.ticket\u3000=v1.k.1.s",
	"sandbox.id;x=pr-1",
}

// ourKeys are the default codec's baggage keys.
var ourKeys = propagation.Default().Keys()

// lenientKey reads a baggage key as the most lenient chain of hops does
// (OpenTelemetry JS and Python percent-decode keys, Python reads '+' as a
// space, every one trims white space), written here independently of the
// codec.
func lenientKey(k string) string {
	trim := func(s string) string {
		return strings.TrimFunc(s, func(r rune) bool { return unicode.IsSpace(r) || r == '\ufeff' })
	}
	k = trim(k)
	for range 16 {
		d, err := url.QueryUnescape(k)
		if err != nil {
			d = strings.ReplaceAll(k, "+", " ")
		}
		d = trim(d)
		if d == k {
			break
		}
		k = d
	}
	return k
}

// ourMembers returns the members of bag whose key any parser reads as one
// of ours, as OpenTelemetry Go parses bag.
func ourMembers(bag string) map[string]string {
	b, _ := otelbaggage.Parse(bag)
	out := map[string]string{}
	for _, m := range b.Members() {
		k := lenientKey(m.Key())
		if slices.Contains(ourKeys, k) {
			out[m.Key()] = m.Value()
		}
	}
	return out
}

// FuzzOTelDifferential runs our codec and OpenTelemetry Go's baggage parser
// on the same bytes. Properties: when OpenTelemetry reads a member of ours,
// the codec returns that value or an error, never "no markers"; after
// Strip, neither OpenTelemetry nor a lenient reading of its keys finds any
// key of ours; after Inject into the same header, OpenTelemetry reads
// exactly our values.
func FuzzOTelDifferential(f *testing.F) {
	for _, s := range lookalikeSeeds {
		f.Add("", s)
		f.Add("pr-1", s)
	}
	for _, s := range otherParserSeeds {
		f.Add("", s)
	}
	f.Add(" ", "")
	f.Add("", "userid=alice,tenant=acme")
	f.Add("", "a=1;sandbox.id=pr-9")
	f.Fuzz(func(t *testing.T, hdr, bag string) {
		c := propagation.Default()
		h := http.Header{"Baggage": {bag}}
		if hdr != "" {
			h["Sandbox-Id"] = []string{hdr}
		}
		m, err := c.Read(otelprop.HeaderCarrier(h))
		if c.Quiet(h) && (m.Found || err != nil || c.Foreign(otelprop.HeaderCarrier(h))) {
			t.Fatalf("Quiet reports nothing to act on in %q; Read finds %+v, %v, Foreign %v", h, m, err, c.Foreign(otelprop.HeaderCarrier(h)))
		}
		if ob, _ := otelbaggage.Parse(bag); ob.Len() > 0 {
			for _, mem := range ob.Members() {
				k := lenientKey(mem.Key())
				if !slices.Contains(ourKeys, k) {
					continue
				}
				if !m.Found {
					t.Fatalf("OpenTelemetry reads %q=%q in %q; the codec finds no markers", mem.Key(), mem.Value(), bag)
				}
				if err != nil {
					continue
				}
				var got string
				switch k {
				case propagation.DefaultIDKey:
					got = m.Sandbox.ID
				case propagation.DefaultActorKey:
					got = m.Sandbox.Actor
				case propagation.DefaultOriginKey:
					got = m.Sandbox.Origin
				case propagation.DefaultTicketKey:
					got = m.Ticket
				}
				if mem.Key() != k || got != mem.Value() {
					t.Fatalf("OpenTelemetry reads %q=%q in %q; the codec admits %q", mem.Key(), mem.Value(), bag, got)
				}
			}
		}

		// Conversely, what the codec admits from baggage OpenTelemetry
		// reads too: a member only we read would be dropped by the next
		// OpenTelemetry-only hop, and the sandbox's request served as
		// production after it.
		if err == nil && m.Found && hdr == "" {
			ob, _ := otelbaggage.Parse(bag)
			for k, v := range map[string]string{
				propagation.DefaultIDKey: m.Sandbox.ID, propagation.DefaultActorKey: m.Sandbox.Actor,
				propagation.DefaultOriginKey: m.Sandbox.Origin, propagation.DefaultTicketKey: m.Ticket,
			} {
				if got := ob.Member(k).Value(); got != v {
					t.Fatalf("the codec reads %s=%q in %q; OpenTelemetry reads %q", k, v, bag, got)
				}
			}
		}

		// Other SDKs (Ruby, Python) read keys OpenTelemetry Go rejects.
		for _, member := range strings.Split(bag, ",") {
			if k := anySDKKey(member); isOurKey(k) && !m.Found {
				t.Fatalf("OpenTelemetry Ruby or Python reads %q in %q; the codec finds no markers", k, bag)
			}
		}

		stripped := h.Clone()
		c.Strip(otelprop.HeaderCarrier(stripped))
		if stripped.Get("Sandbox-Id") != "" {
			t.Fatalf("Strip left the dedicated header")
		}
		for _, line := range stripped.Values("Baggage") {
			if ours := ourMembers(line); len(ours) > 0 {
				t.Fatalf("after Strip of %q, OpenTelemetry still reads %v in %q", bag, ours, line)
			}
			for _, member := range strings.Split(line, ",") {
				if k := anySDKKey(member); isOurKey(k) {
					t.Fatalf("after Strip of %q, OpenTelemetry Ruby or Python still reads %q in %q", bag, k, line)
				}
			}
		}
		if m2, err := c.Read(otelprop.HeaderCarrier(stripped)); m2.Found || err != nil {
			t.Fatalf("after Strip of %q the codec still finds markers: %+v, %v", bag, m2, err)
		}

		if len(bag) > 7000 {
			return // the sandbox itself must fit in the W3C limit
		}
		s := propagation.Sandbox{ID: "pr-42", Actor: "alice"}
		injected := http.Header{"Baggage": {bag}}
		c.InjectSandbox(s, otelprop.HeaderCarrier(injected))
		ours := ourMembers(injected.Get("Baggage"))
		want := map[string]string{propagation.DefaultIDKey: s.ID, propagation.DefaultActorKey: s.Actor}
		if !maps.Equal(ours, want) {
			t.Fatalf("after Inject into %q, OpenTelemetry reads %v, want %v", bag, ours, want)
		}
	})
}
